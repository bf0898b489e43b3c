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

SETS = {"default": DEFAULT, "topic-switch": TOPIC_SWITCH}
