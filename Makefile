# Set-up on a fresh machine:  make demo   (install, fetch the default model, generate)
#                             make test   (the test suite CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?= smollm2-135m-instruct
PROMPT ?= Explain speculative decoding in two sentences.
QWEN_TARGET := qwen2.5-coder-1.5b-instruct
QWEN_DRAFT := qwen2.5-coder-0.5b-instruct

# Install as a user would (wheel from the sdist, fresh venv):  make test-wheel
.PHONY: install demo pull test test-wheel test-all pull-qwen bench bench-qwen chat serve doctor clean

$(BIN)/mlxspec: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/mlxspec

pull: install
	$(BIN)/mlxspec models pull $(MODEL)

demo: pull
	$(BIN)/mlxspec generate -m $(MODEL) --stats "$(PROMPT)"

test: pull
	$(BIN)/python -m pytest

test-wheel: install
	DEV_PY=$(CURDIR)/$(BIN)/python bash .ci/wheel-check

pull-qwen: install
	$(BIN)/mlxspec models pull $(QWEN_DRAFT)
	$(BIN)/mlxspec models pull $(QWEN_TARGET)

test-all: pull pull-qwen
	$(BIN)/python -m pytest -m ""

bench: pull
	$(BIN)/mlxspec bench -m $(MODEL)

bench-qwen: pull-qwen
	$(BIN)/mlxspec bench -m $(QWEN_TARGET) --draft $(QWEN_DRAFT)

chat: pull
	$(BIN)/mlxspec chat -m $(MODEL)

# OpenAI-compatible server on http://127.0.0.1:8080/v1 (Ctrl-C stops):  make serve [MODEL=...]
serve: pull
	$(BIN)/mlxspec serve -m $(MODEL)

doctor: install
	$(BIN)/mlxspec doctor

clean:
	rm -rf $(VENV) .pytest_cache
