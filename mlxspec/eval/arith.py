"""Arithmetic word problems generated from a seed, with their answers, and the answer's
extraction from a reply ("Answer: N", else the last number in it)."""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

INSTRUCTION = "Solve it briefly, then end with a line 'Answer: <number>'."
_NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Goran", "Hana", "Ivo", "Jun")
_THINGS = ("apples", "books", "coins", "stamps", "pencils", "marbles", "shells", "cards")


@dataclass(frozen=True)
class Problem:
    id: str
    prompt: str
    answer: int


def _one(rng: random.Random, i: int) -> Problem:
    who, other = rng.sample(_NAMES, 2)
    thing = rng.choice(_THINGS)
    kind = i % 5
    a, b, c = rng.randint(3, 40), rng.randint(2, 25), rng.randint(2, 9)
    if kind == 0:
        text, ans = f"{who} has {a} {thing}, buys {b} more and then gives {c} to {other}. How many {thing} does {who} have now?", a + b - c
    elif kind == 1:
        text, ans = f"{who} packs {thing} into {c} boxes with {b} {thing} in each box and has {a} {thing} left over. How many {thing} are there in all?", c * b + a
    elif kind == 2:
        n = c * b
        text, ans = f"{who} shares {n} {thing} equally among {c} friends. How many {thing} does each friend get?", b
    elif kind == 3:
        text, ans = f"{who} has {a} {thing}. {other} has {b} more than {who}. How many {thing} do they have together?", 2 * a + b
    else:
        text, ans = f"{who} buys {c} bags of {thing} at {b} dollars each and pays with a {c * b + a} dollar note. How much change does {who} get?", a
    return Problem(f"arith-{i}", f"{text} {INSTRUCTION}", ans)


def problems(n: int = 50, seed: int = 0) -> list[Problem]:
    rng = random.Random(seed)
    return [_one(rng, i) for i in range(n)]


_ANSWER = re.compile(r"answer\s*(?:is)?\s*[:=]?\s*\**\s*\$?\s*(-?\d[\d,]*)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*")


def extract(reply: str):
    """The reply's answer as an int, or None."""
    found = _ANSWER.findall(reply) or _NUMBER.findall(reply)
    if not found:
        return None
    try:
        return int(found[-1].replace(",", ""))
    except ValueError:
        return None


def correct(problem: Problem, reply: str) -> bool:
    return extract(reply) == problem.answer
