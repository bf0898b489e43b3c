"""Fixed prompt sets for `mlxspec bench`: each prompt is a chat (list of messages)."""

DEFAULT = {
    "code": [{"role": "user", "content": "Write a Python function that returns the n-th Fibonacci "
              "number iteratively, with a docstring and a short usage example."}],
    "prose": [{"role": "user", "content": "Write the opening paragraph of a short story about a "
               "lighthouse keeper who finds a message in a bottle."}],
    "qa": [{"role": "user", "content": "What causes the seasons on Earth? Answer in a short paragraph."}],
}

_CODE_TURN = [
    {"role": "user", "content": "Write a Python function that parses a CSV line into fields, "
     "handling quoted commas."},
    {"role": "assistant", "content": "```python\nimport csv\n\ndef parse_line(line: str) -> list[str]:\n"
     "    \"\"\"Split one CSV line into fields, honouring quotes.\"\"\"\n"
     "    return next(csv.reader([line]))\n```\n"
     "`csv.reader` handles quoted commas and escaped quotes for you."},
]

# A code exchange, then a switch to legal prose in the same conversation: a static
# vocabulary tuned on one topic loses acceptance on the other.
TOPIC_SWITCH = {
    "code->legal": _CODE_TURN + [
        {"role": "user", "content": "Now, unrelated: explain in plain English what an indemnification "
         "clause in a software licence agreement means for the licensee."}],
    "code->prose": _CODE_TURN + [
        {"role": "user", "content": "Thanks. Now write a short, warm letter to my grandmother "
         "thanking her for the knitted scarf."}],
}

# Code edits, as a coding assistant gets them: the reply rewrites code given in the prompt,
# so copies from the context (lookup) pay, and a draft model's steps often do not.
def _edit(task: str, code: str) -> list[dict]:
    return [{"role": "user", "content": f"{task} Reply with the whole function in one code block.\n\n```python\n{code}```"}]


CODE_EDIT = {
    "add-types": _edit("Add type hints to this function.",
                       "def merge_counts(a, b):\n    out = dict(a)\n    for key, value in b.items():\n"
                       "        out[key] = out.get(key, 0) + value\n    return out\n"),
    "docstring": _edit("Add a docstring to this function.",
                       "def moving_average(values, window):\n    if window <= 0:\n        raise ValueError('window must be positive')\n"
                       "    total = sum(values[:window])\n    result = [total / window]\n"
                       "    for i in range(window, len(values)):\n        total += values[i] - values[i - window]\n"
                       "        result.append(total / window)\n    return result\n"),
    "rename": _edit("Rename the variable `tmp` to `buffer` everywhere.",
                    "def read_chunks(stream, size):\n    tmp = b''\n    while True:\n        data = stream.read(size)\n"
                    "        if not data:\n            break\n        tmp += data\n        while len(tmp) >= size:\n"
                    "            yield tmp[:size]\n            tmp = tmp[size:]\n    if tmp:\n        yield tmp\n"),
    "fix-bug": _edit("Fix the off-by-one bug.",
                     "def last_n_lines(path, n):\n    with open(path) as f:\n        lines = f.readlines()\n"
                     "    return lines[len(lines) - n - 1:]\n"),
    "logging": _edit("Replace the print calls with the logging module.",
                     "def sync(source, target):\n    print('syncing', source, 'to', target)\n    copied = 0\n"
                     "    for name in source.list():\n        if name not in target.list():\n"
                     "            target.put(name, source.get(name))\n            copied += 1\n"
                     "    print('copied', copied, 'files')\n    return copied\n"),
    "early-return": _edit("Rewrite this function with early returns instead of nested ifs.",
                          "def shipping_cost(order):\n    if order is not None:\n        if order.items:\n"
                          "            if order.total > 100:\n                return 0\n            else:\n"
                          "                return 5 + len(order.items)\n        else:\n            return 0\n"
                          "    else:\n        raise ValueError('no order')\n"),
    "comprehension": _edit("Rewrite the loop as a list comprehension.",
                           "def squares_of_evens(numbers):\n    result = []\n    for n in numbers:\n"
                           "        if n % 2 == 0:\n            result.append(n * n)\n    return result\n"),
    "pathlib": _edit("Use pathlib instead of os.path.",
                     "import os\n\ndef config_files(root):\n    found = []\n    for name in os.listdir(root):\n"
                     "        full = os.path.join(root, name)\n        if os.path.isfile(full) and name.endswith('.toml'):\n"
                     "            found.append(full)\n    return sorted(found)\n"),
}

SETS = {"default": DEFAULT, "topic-switch": TOPIC_SWITCH, "code-edit": CODE_EDIT}


# -- the user's own prompts (`mlxspec bench --prompts FILE|DIR`) ---------------------------
_ROLES = ("system", "user", "assistant")
_JSONL = (".jsonl", ".ndjson")


def _chat(obj, where: str) -> list[dict]:
    """A JSON value -> a checked chat: {"messages": [...]} or a bare list of messages."""
    from mlxspec.errors import InvalidParameterError

    msgs = obj.get("messages") if isinstance(obj, dict) else obj
    if not isinstance(msgs, list) or not msgs:
        raise InvalidParameterError(f"{where}: expected {{\"messages\": [...]}} or a non-empty list of messages")
    for i, m in enumerate(msgs):
        if not (isinstance(m, dict) and m.get("role") in _ROLES and isinstance(m.get("content"), str)):
            raise InvalidParameterError(f"{where}: message {i + 1} needs a role ({', '.join(_ROLES)}) "
                                        "and a string content")
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def _read(path, where: str) -> str:
    from mlxspec.errors import InvalidParameterError

    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidParameterError(f"{where}: not UTF-8 text") from None
    except OSError as exc:
        raise InvalidParameterError(f"{where}: cannot read ({exc.strerror or exc})") from None


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text.strip()}]


def _from_jsonl(path) -> dict:
    import json

    from mlxspec.errors import InvalidParameterError

    out = {}
    for n, line in enumerate(_read(path, path.name).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name} line {n}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise InvalidParameterError(f"{where}: not JSON ({str(exc).split(':')[0]})") from None
        label = obj.get("name") if isinstance(obj, dict) else None
        label = str(label) if label else f"{path.stem}-{len(out) + 1}"
        if label in out:
            raise InvalidParameterError(f"{where}: the name {label!r} is used twice")
        out[label] = _chat(obj, where)
    return out


def _from_text(path) -> dict:
    """One prompt per block of lines; blank lines separate the blocks."""
    import re

    blocks = [b for b in re.split(r"\n[ \t]*\n", _read(path, path.name).replace("\r\n", "\n")) if b.strip()]
    return {f"{path.stem}-{i + 1}": _user(b) for i, b in enumerate(blocks)}


def _from_dir(folder) -> dict:
    """One prompt per file, labelled by its name: text, or a chat in a .json file."""
    import json

    from mlxspec.errors import InvalidParameterError

    out = {}
    for f in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        text = _read(f, f.name)
        if f.suffix == ".json":
            try:
                obj = json.loads(text)
            except ValueError as exc:
                raise InvalidParameterError(f"{f.name}: not JSON ({str(exc).split(':')[0]})") from None
            msgs = _chat(obj, f.name)
        elif text.strip():
            msgs = _user(text)
        else:
            raise InvalidParameterError(f"{f.name}: the prompt file is empty")
        out[f.stem if f.stem not in out else f.name] = msgs
    return out


def load_prompts(spec: str) -> dict:
    """A set name (SETS), a folder (one prompt per file), a JSONL file of chats, or a
    text file of blank-line-separated prompts -> {label: messages}."""
    from pathlib import Path

    from mlxspec.errors import InvalidParameterError

    if spec in SETS:
        return SETS[spec]
    path = Path(spec).expanduser()
    if path.is_dir():
        prompts = _from_dir(path)
    elif path.is_file():
        prompts = _from_jsonl(path) if path.suffix.lower() in _JSONL else _from_text(path)
    else:
        raise InvalidParameterError(f"--prompts {spec!r}: no such file or folder, and not a prompt set "
                                    f"({', '.join(SETS)})")
    if not prompts:
        raise InvalidParameterError(f"--prompts {spec}: no prompts found")
    return prompts
