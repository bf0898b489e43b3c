"""Small Python functions with unit tests. A reply passes when its code (the first
fenced block, else the whole reply) defines the function and the tests pass in a fresh
isolated interpreter (`python -I`, in a temp dir) within a timeout, and the child
reaches the line after them."""
from __future__ import annotations

import re
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

TIMEOUT_S = 10.0
INSTRUCTION = "Reply with only the function in one ```python code block, no explanation and no tests."


@dataclass(frozen=True)
class Task:
    id: str
    prompt: str
    tests: str  # asserts run after the reply's code


# (signature, what it does, asserts)
_TASKS = [
    ("add(a, b)", "returns the sum of a and b", "assert add(2, 3) == 5\nassert add(-1, 1) == 0"),
    ("is_even(n)", "returns True when the integer n is even", "assert is_even(4)\nassert not is_even(7)\nassert is_even(0)"),
    ("reverse_string(s)", "returns the string s reversed", "assert reverse_string('abc') == 'cba'\nassert reverse_string('') == ''"),
    ("factorial(n)", "returns n! for an integer n >= 0", "assert factorial(0) == 1\nassert factorial(5) == 120"),
    ("fibonacci(n)", "returns the n-th Fibonacci number with fibonacci(0) == 0 and fibonacci(1) == 1",
     "assert fibonacci(0) == 0\nassert fibonacci(1) == 1\nassert fibonacci(10) == 55"),
    ("is_palindrome(s)", "returns True when the string s reads the same backwards",
     "assert is_palindrome('level')\nassert not is_palindrome('hello')\nassert is_palindrome('')"),
    ("count_vowels(s)", "returns how many of the characters of s are vowels (a, e, i, o, u, either case)",
     "assert count_vowels('Hello World') == 3\nassert count_vowels('xyz') == 0\nassert count_vowels('AEIOU') == 5"),
    ("max_of_list(xs)", "returns the largest number in the non-empty list xs without using max()",
     "assert max_of_list([3, 9, 2]) == 9\nassert max_of_list([-5, -2]) == -2"),
    ("sum_of_squares(n)", "returns 1*1 + 2*2 + ... + n*n", "assert sum_of_squares(3) == 14\nassert sum_of_squares(1) == 1\nassert sum_of_squares(0) == 0"),
    ("flatten(xss)", "returns one list with the elements of the lists in the list xss, in order",
     "assert flatten([[1, 2], [3], []]) == [1, 2, 3]\nassert flatten([]) == []"),
    ("unique(xs)", "returns the elements of xs without duplicates, keeping the first occurrence's order",
     "assert unique([3, 1, 3, 2, 1]) == [3, 1, 2]\nassert unique([]) == []"),
    ("word_count(s)", "returns the number of words in s separated by whitespace",
     "assert word_count('the quick  brown fox') == 4\nassert word_count('') == 0"),
    ("celsius_to_fahrenheit(c)", "converts a temperature in Celsius to Fahrenheit",
     "assert celsius_to_fahrenheit(0) == 32\nassert celsius_to_fahrenheit(100) == 212"),
    ("gcd(a, b)", "returns the greatest common divisor of two positive integers",
     "assert gcd(12, 18) == 6\nassert gcd(7, 13) == 1"),
    ("is_prime(n)", "returns True when the integer n is a prime number",
     "assert is_prime(2)\nassert is_prime(13)\nassert not is_prime(1)\nassert not is_prime(15)"),
    ("capitalize_words(s)", "returns s with the first letter of each space-separated word upper-cased",
     "assert capitalize_words('hello big world') == 'Hello Big World'"),
    ("second_largest(xs)", "returns the second largest distinct number in the list xs",
     "assert second_largest([1, 5, 3, 5]) == 3\nassert second_largest([2, 1]) == 1"),
    ("chunk(xs, n)", "splits the list xs into consecutive lists of length n (the last may be shorter)",
     "assert chunk([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]\nassert chunk([], 3) == []"),
    ("run_length(s)", "returns the run-length encoding of s as a list of (character, count) tuples",
     "assert run_length('aaabcc') == [('a', 3), ('b', 1), ('c', 2)]\nassert run_length('') == []"),
    ("binary_to_int(s)", "converts a string of 0s and 1s to the integer it denotes in base 2",
     "assert binary_to_int('101') == 5\nassert binary_to_int('0') == 0\nassert binary_to_int('1111') == 15"),
]


def tasks(n: int = len(_TASKS)) -> list[Task]:
    out = []
    for i, (sig, what, tests) in enumerate(_TASKS[:n]):
        out.append(Task(f"code-{sig.split('(')[0]}", f"Write a Python function `{sig}` that {what}. {INSTRUCTION}",
                        tests))
    return out


_FENCE = re.compile(r"```(?:python|py)?[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract(reply: str) -> str:
    m = _FENCE.search(reply)
    return m.group(1) if m else reply


def passes(task: Task, reply: str, timeout_s: float = TIMEOUT_S) -> bool:
    """Run the reply's code and the task's asserts in a child interpreter."""
    token = secrets.token_hex(8)  # printed only after the asserts: an early exit(0) fails
    source = extract(reply) + "\n\n" + task.tests + f"\nprint({token!r})\n"
    with tempfile.TemporaryDirectory(prefix="mlxspec-eval-") as d:
        path = Path(d) / "check.py"
        path.write_text(source, encoding="utf-8")
        try:
            r = subprocess.run([sys.executable, "-I", str(path)], cwd=d, capture_output=True,
                               timeout=timeout_s, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return False
    return r.returncode == 0 and token in r.stdout.decode("utf-8", "replace")
