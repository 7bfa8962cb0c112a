"""``code-basic``: a small, shipped set of Python programming problems, scored in the sandbox.

40 problems written for prorl, in the three test formats the code verifier knows:
stdin/stdout, call-based (``fn_name``) and assertion-based (``test_list``). Every fifth
problem is held out: ``val`` (and ``test``, the same items) has 8 problems, ``train`` 32;
``train`` indices wrap around, so epochs are just larger indices. Each problem carries a
reference solution (``meta["reference"]``) that the test suite runs through the sandbox.
"""

from __future__ import annotations

import json
from typing import Any

from prorl.tasks.base import register_task
from prorl.types import Example, Score
from prorl.verify.code import score_code

S, C, A = "stdio", "call", "assert"
# (slug, kind, statement, function name or "", tests, reference solution)
Problem = tuple[str, str, str, str, Any, str]
# fmt: off
PROBLEMS: tuple[Problem, ...] = (
    ("sum-two", S, "Read two integers on one line and print their sum.", "",
     [("2 3", "5"), ("-4 10", "6"), ("0 0", "0")], "a,b=map(int,input().split())\nprint(a+b)"),
    ("reverse", S, "Read a line and print it reversed.", "",
     [("hello", "olleh"), ("ab c", "c ba")], "print(input()[::-1])"),
    ("max-list", S, "The first line holds n, the second n integers. Print the largest.", "",
     [("3\n1 9 4", "9"), ("1\n-7", "-7"), ("4\n-1 -2 -3 -4", "-1")],
     "input()\nprint(max(map(int,input().split())))"),
    ("count-vowels", S, "Print how many vowels (aeiou, any case) a line contains.", "",
     [("Hello World", "3"), ("xyz", "0"), ("AEIOU", "5")],
     "print(sum(c in 'aeiou' for c in input().lower()))"),
    ("fizzbuzz", S, "Read n and print FizzBuzz for 1..n, one item per line.", "",
     [("5", "1\n2\nFizz\n4\nBuzz"), ("15", "\n".join(
         "FizzBuzz" if i % 15 == 0 else "Fizz" if i % 3 == 0 else "Buzz" if i % 5 == 0 else str(i)
         for i in range(1, 16)))],
     "for i in range(1,int(input())+1):\n print('FizzBuzz' if i%15==0 else 'Fizz' if i%3==0 "
     "else 'Buzz' if i%5==0 else i)"),
    ("factorial", S, "Read n (0 <= n <= 50) and print n!.", "",
     [("0", "1"), ("5", "120"), ("25", "15511210043330985984000000")],
     "import math\nprint(math.factorial(int(input())))"),
    ("palindrome", S, "Print YES if the line is a palindrome, else NO.", "",
     [("racecar", "YES"), ("ab", "NO"), ("a", "YES")], "s=input()\nprint('YES' if s==s[::-1] else 'NO')"),
    ("word-count", S, "Print the number of words (separated by spaces) on a line.", "",
     [("a b  c", "3"), ("one", "1")], "print(len(input().split()))"),
    ("sort-nums", S, "Read integers on one line and print them sorted ascending, space-separated.",
     "", [("3 1 2", "1 2 3"), ("5 -1 5", "-1 5 5")], "print(*sorted(map(int,input().split())))"),
    ("gcd", S, "Read two positive integers and print their greatest common divisor.", "",
     [("12 18", "6"), ("7 13", "1"), ("100 10", "10")],
     "import math\na,b=map(int,input().split())\nprint(math.gcd(a,b))"),
    ("primes-upto", S, "Read n and print the number of primes <= n.", "",
     [("10", "4"), ("1", "0"), ("100", "25")],
     "n=int(input())\nprint(sum(all(k%d for d in range(2,int(k**.5)+1)) for k in range(2,n+1)))"),
    ("mean", S, "Read integers on one line and print their mean with 2 decimals.", "",
     [("1 2", "1.50"), ("3 3 3", "3.00")], "a=list(map(int,input().split()))\nprint(f'{sum(a)/len(a):.2f}')"),
    ("binary", S, "Read a non-negative integer and print it in binary without prefix.", "",
     [("5", "101"), ("0", "0"), ("255", "11111111")], "print(bin(int(input()))[2:])"),
    ("char-freq", S, "Print the most frequent letter of a lowercase word (ties: smallest).", "",
     [("banana", "a"), ("abcabc", "a"), ("zzy", "z")],
     "s=input()\nprint(min(set(s),key=lambda c:(-s.count(c),c)))"),
    ("add", C, "Return the sum of two integers a and b.", "add",
     [([1, 2], 3), ([-5, 5], 0), ([10**12, 1], 10**12 + 1)], "def add(a, b):\n    return a + b"),
    ("is-even", C, "Return True if n is even, else False.", "is_even",
     [([2], True), ([7], False), ([0], True)], "def is_even(n):\n    return n % 2 == 0"),
    ("fib", C, "Return the n-th Fibonacci number (fib(0)=0, fib(1)=1).", "fib",
     [([0], 0), ([1], 1), ([10], 55), ([90], 2880067194370816120)],
     "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a"),
    ("flatten", C, "Flatten a list of lists of integers into one list.", "flatten",
     [([[[1, 2], [3]]], [1, 2, 3]), ([[]], []), ([[[], [4]]], [4])],
     "def flatten(xs):\n    return [y for x in xs for y in x]"),
    ("uniq", C, "Return the list without duplicates, keeping first occurrences in order.", "uniq",
     [([[1, 2, 1, 3, 2]], [1, 2, 3]), ([[]], []), ([["a", "a"]], ["a"])],
     "def uniq(xs):\n    return list(dict.fromkeys(xs))"),
    ("two-sum", C, "Return indices [i, j] (i < j) of the two numbers in nums adding to target.",
     "two_sum", [([[2, 7, 11, 15], 9], [0, 1]), ([[3, 2, 4], 6], [1, 2])],
     "def two_sum(nums, target):\n    seen = {}\n    for j, x in enumerate(nums):\n"
     "        if target - x in seen:\n            return [seen[target - x], j]\n        seen[x] = j"),
    ("anagram", C, "Return True if strings a and b are anagrams of each other.", "is_anagram",
     [(["listen", "silent"], True), (["ab", "abc"], False), (["", ""], True)],
     "def is_anagram(a, b):\n    return sorted(a) == sorted(b)"),
    ("digit-sum", C, "Return the sum of the decimal digits of a non-negative integer n.",
     "digit_sum", [([0], 0), ([1234], 10), ([999999], 54)],
     "def digit_sum(n):\n    return sum(map(int, str(n)))"),
    ("word-lengths", C, "Return a dict mapping each word of sentence s to its length.",
     "word_lengths", [(["a bb ccc"], {"a": 1, "bb": 2, "ccc": 3}), ([""], {})],
     "def word_lengths(s):\n    return {w: len(w) for w in s.split()}"),
    ("hypot", C, "Return the length of the hypotenuse for legs a and b, as a float.", "hypot",
     [([3, 4], 5.0), ([1, 1], 2**0.5)], "import math\ndef hypot(a, b):\n    return math.hypot(a, b)"),
    ("rotate", C, "Rotate list xs right by k positions and return it.", "rotate",
     [([[1, 2, 3, 4], 1], [4, 1, 2, 3]), ([[1, 2], 4], [1, 2]), ([[], 3], [])],
     "def rotate(xs, k):\n    if not xs:\n        return []\n    k %= len(xs)\n    return xs[-k:] + xs[:-k]"),
    ("caesar", C, "Shift each lowercase letter of s forward by k in the alphabet (wrapping).",
     "caesar", [(["abc", 1], "bcd"), (["xyz", 3], "abc"), (["a b", 0], "a b")],
     "def caesar(s, k):\n    return ''.join(chr((ord(c)-97+k)%26+97) if c.islower() else c for c in s)"),
    ("square", A, "Write square(x) returning x squared.", "square",
     ["assert square(3) == 9", "assert square(-2) == 4", "assert square(0) == 0"],
     "def square(x):\n    return x * x"),
    ("vowel-strip", A, "Write strip_vowels(s) removing all vowels (aeiouAEIOU) from s.",
     "strip_vowels", ["assert strip_vowels('hello') == 'hll'", "assert strip_vowels('AEIx') == 'x'"],
     "def strip_vowels(s):\n    return ''.join(c for c in s if c not in 'aeiouAEIOU')"),
    ("min-max", A, "Write min_max(xs) returning the tuple (min, max) of a non-empty list.",
     "min_max", ["assert min_max([3, 1, 2]) == (1, 3)", "assert min_max([5]) == (5, 5)"],
     "def min_max(xs):\n    return (min(xs), max(xs))"),
    ("count-char", A, "Write count_char(s, c) counting occurrences of character c in s.",
     "count_char", ["assert count_char('banana', 'a') == 3", "assert count_char('', 'x') == 0"],
     "def count_char(s, c):\n    return s.count(c)"),
    ("is-prime", A, "Write is_prime(n) returning True exactly for prime n.", "is_prime",
     ["assert is_prime(2)", "assert not is_prime(1)", "assert is_prime(97)",
      "assert not is_prime(91)", "assert [n for n in range(20) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19]"],
     "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))"),
    ("title", A, "Write title_case(s) capitalising the first letter of each space-separated word.",
     "title_case", ["assert title_case('hello world') == 'Hello World'", "assert title_case('a') == 'A'"],
     "def title_case(s):\n    return ' '.join(w[:1].upper() + w[1:] for w in s.split(' '))"),
    ("running-sum", A, "Write running_sum(xs) returning the list of prefix sums.", "running_sum",
     ["assert running_sum([1, 2, 3]) == [1, 3, 6]", "assert running_sum([]) == []"],
     "def running_sum(xs):\n    out, t = [], 0\n    for x in xs:\n        t += x\n        out.append(t)\n    return out"),
    ("safe-div", A, "Write safe_div(a, b) returning a / b, or raising ValueError when b == 0.",
     "safe_div", ["assert safe_div(6, 3) == 2", "try:\n    safe_div(1, 0)\n    assert False\n"
                  "except ValueError:\n    pass"],
     "def safe_div(a, b):\n    if b == 0:\n        raise ValueError('division by zero')\n    return a / b"),
    ("dedupe-sorted", A, "Write sorted_unique(xs) returning the sorted list of distinct items.",
     "sorted_unique", ["assert sorted_unique([3, 1, 3, 2]) == [1, 2, 3]", "assert sorted_unique([]) == []"],
     "def sorted_unique(xs):\n    return sorted(set(xs))"),
    ("pairs", A, "Write pairs(n) returning all (i, j) with 0 <= i < j < n as a list of tuples.",
     "pairs", ["assert pairs(3) == [(0, 1), (0, 2), (1, 2)]", "assert pairs(1) == []"],
     "def pairs(n):\n    return [(i, j) for i in range(n) for j in range(i + 1, n)]"),
    ("char-set", A, "Write letters(s) returning the set of distinct characters of s.", "letters",
     ["assert letters('abca') == {'a', 'b', 'c'}", "assert letters('') == set()"],
     "def letters(s):\n    return set(s)"),
    ("random-add", A, "Write add3(a, b, c) returning a + b + c.", "add3",
     ["import random\nfor _ in range(20):\n    a, b, c = (random.randint(-99, 99) for _ in range(3))\n"
      "    assert add3(a, b, c) == a + b + c"],
     "def add3(a, b, c):\n    return a + b + c"),
    ("nth-word", A, "Write nth_word(s, n) returning the n-th (0-based) word of s, or '' if absent.",
     "nth_word", ["assert nth_word('a b c', 1) == 'b'", "assert nth_word('a', 3) == ''"],
     "def nth_word(s, n):\n    w = s.split()\n    return w[n] if n < len(w) else ''"),
    ("matrix-t", A, "Write transpose(m) returning the transpose of a rectangular list of lists.",
     "transpose", ["assert transpose([[1, 2], [3, 4]]) == [[1, 3], [2, 4]]",
                   "assert transpose([[1, 2, 3]]) == [[1], [2], [3]]"],
     "def transpose(m):\n    return [list(r) for r in zip(*m)]"),
)
# fmt: on
FENCE_HINT = "Answer with a complete Python 3 solution in a single ```python fenced code block."


def fenced(code: str) -> str:
    """``code`` as a final answer: a fenced ```python block."""
    return f"```python\n{code}\n```"


def _tests(kind: str, fn: str, cases: Any) -> dict[str, Any]:
    if kind == S:
        return {"inputs": [i + "\n" for i, _ in cases], "outputs": [o + "\n" for _, o in cases]}
    if kind == C:
        return {"fn_name": fn, "inputs": [i for i, _ in cases], "outputs": [o for _, o in cases]}
    return {"test_list": list(cases)}


def _prompt(kind: str, statement: str, fn: str, cases: Any) -> str:
    if kind == S:
        example_in, example_out = cases[0]
        io = (
            f"Read from standard input and write to standard output.\n\nExample input:\n"
            f"{example_in}\n\nExample output:\n{example_out}"
        )
        return f"{statement}\n{io}\n\n{FENCE_HINT}"
    if kind == C:
        args, out = cases[0]
        call = f"{fn}({', '.join(map(repr, args))})"
        return f"{statement}\nDefine a function `{fn}`. Example: `{call}` returns `{out!r}`.\n\n{FENCE_HINT}"
    return f"{statement}\nIt is checked with assertions such as:\n{cases[0]}\n\n{FENCE_HINT}"


class CodeBasicTask:
    name = "code-basic"
    domain = "code"

    def __init__(self, timeout_s: float = 5.0) -> None:
        if not timeout_s > 0:
            raise ValueError(f"code-basic: timeout_s must be > 0, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        held = [i for i in range(len(PROBLEMS)) if i % 5 == 0]
        self._items = {
            "train": [i for i in range(len(PROBLEMS)) if i % 5],
            "val": held,
            "test": held,
        }

    def size(self, split: str = "train") -> int | None:
        return len(self._ids(split))

    def _ids(self, split: str) -> list[int]:
        if split not in self._items:
            raise ValueError(f"unknown split {split!r}; use train, val or test")
        return self._items[split]

    def example(self, index: int, split: str = "train") -> Example:
        ids = self._ids(split)
        if index < 0 or (split != "train" and index >= len(ids)):
            raise IndexError(f"code-basic {split} has {len(ids)} items")
        slug, kind, statement, fn, cases, reference = PROBLEMS[ids[index % len(ids)]]
        tests = _tests(kind, fn, cases)
        return Example(
            uid=f"code-basic:{split}:{index}",
            task=self.name,
            prompt=({"role": "user", "content": _prompt(kind, statement, fn, cases)},),
            answer=json.dumps(tests),
            meta={
                "tests": tests,
                "slug": slug,
                "format": kind,
                "reference": reference,
                "timeout_s": self.timeout_s,
            },
        )

    def score(self, response: str, example: Example) -> Score:
        return score_code(response, example.meta.get("tests") or example.answer, self.timeout_s)

    def format_answer(self, content: str) -> str:
        return fenced(content)

    def reference_response(self, example: Example) -> str | None:
        reference = example.meta.get("reference")
        return fenced(str(reference)) if reference else None


@register_task(
    "code-basic",
    domain="code",
    description="40 small Python problems (stdin/stdout, call-based, assertions), sandboxed",
    verifier="code",
)
def make_code_basic(**settings: Any) -> CodeBasicTask:
    return CodeBasicTask(**settings)
