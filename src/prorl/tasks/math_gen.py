"""``math-gen``: procedural arithmetic and algebra word problems with exact answers.

Item i of a split is rebuilt from (seed, split, i). Splits are disjoint by construction: every
problem has a canonical key (its family and numbers, not its wording), and the key's hash
decides which split it may appear in (about 90% train, 5% val, 5% test), so a held-out
problem never reappears in training under another name or template.

Levels: 1 one-step addition/subtraction below 20 (SmolLM2-135M solves some), 2 times
tables, sharing and two-step stories, 3 linear equations and order of operations, 4
fractions and percentages, 5 linear systems, quadratics and equations with fractional
solutions. Answers are integers or fractions in lowest terms; scored by the math verifier.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from fractions import Fraction

from prorl.tasks.base import SPLITS, register_task
from prorl.types import Example, Score
from prorl.verify.math import score_math

# No example inside the box: with ``\\boxed{42}`` the prompt, copied back, scored 1 on every
# problem whose answer is 42, and any filled-in example box ("\\boxed{your answer}") would
# still be an answer in the task's format, so an echo would count as formatted.
INSTRUCTION = "Put your final answer in \\boxed{}."
NAMES = ("Ava", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jon", "Mia")
ITEMS = ("apple", "marble", "book", "sticker", "coin", "pencil", "cookie", "shell", "card")

Problem = tuple[str, str, Fraction]  # (canonical key, question, answer)
Generator = Callable[[random.Random], Problem]


def _who(rng: random.Random) -> tuple[str, str]:
    return rng.choice(NAMES), rng.choice(ITEMS)


def _add(rng: random.Random) -> Problem:
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    name, item = _who(rng)
    q = f"{name} has {a} {item}s and gets {b} more. How many {item}s does {name} have now?"
    return f"add:{a}:{b}", q, Fraction(a + b)


def _sub(rng: random.Random) -> Problem:
    a = rng.randint(5, 30)
    b = rng.randint(1, a - 1)
    name, item = _who(rng)
    q = f"{name} had {a} {item}s and gave away {b}. How many {item}s does {name} have left?"
    return f"sub:{a}:{b}", q, Fraction(a - b)


def _plain(rng: random.Random) -> Problem:
    a, b = rng.randint(1, 30), rng.randint(1, 30)
    return f"plain:{a}:{b}", f"What is {a} + {b}?", Fraction(a + b)


def _times(rng: random.Random) -> Problem:
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    name, item = _who(rng)
    q = f"{name} buys {a} packs of {item}s with {b} {item}s in each pack. How many {item}s is that?"
    return f"times:{a}:{b}", q, Fraction(a * b)


def _share(rng: random.Random) -> Problem:
    each, friends = rng.randint(2, 12), rng.randint(2, 9)
    name, item = _who(rng)
    q = (
        f"{name} shares {each * friends} {item}s equally among {friends} friends. "
        f"How many {item}s does each friend get?"
    )
    return f"share:{each}:{friends}", q, Fraction(each)


def _two_step(rng: random.Random) -> Problem:
    a, b = rng.randint(10, 50), rng.randint(5, 30)
    c = rng.randint(1, a + b - 1)
    name, item = _who(rng)
    q = f"{name} has {a} {item}s, buys {b} more, then gives {c} away. How many are left?"
    return f"two_step:{a}:{b}:{c}", q, Fraction(a + b - c)


def _linear(rng: random.Random) -> Problem:
    a, x, b = rng.randint(2, 9), rng.randint(-10, 15), rng.randint(-20, 20)
    c = a * x + b
    sign = "+" if b >= 0 else "-"
    return f"linear:{a}:{b}:{c}", f"Solve for x: {a}x {sign} {abs(b)} = {c}.", Fraction(x)


def _order_ops(rng: random.Random) -> Problem:
    a, b, c, d = (rng.randint(1, 12) for _ in range(4))
    q = f"Compute {a} + {b} * {c} - {d}."
    return f"order_ops:{a}:{b}:{c}:{d}", q, Fraction(a + b * c - d)


def _fraction_sum(rng: random.Random) -> Problem:
    b, d = rng.randint(2, 9), rng.randint(2, 9)
    a, c = rng.randint(1, b - 1), rng.randint(1, d - 1)
    q = f"What is {a}/{b} + {c}/{d}? Give the answer as a fraction in lowest terms."
    return f"fraction_sum:{a}:{b}:{c}:{d}", q, Fraction(a, b) + Fraction(c, d)


def _percent(rng: random.Random) -> Problem:
    p, n = rng.choice((5, 10, 15, 20, 25, 30, 40, 50, 75)), rng.randint(2, 40) * 4
    name = rng.choice(NAMES)
    q = f"A jacket costs {n} dollars. {name} gets a {p}% discount. How many dollars is the discount?"
    return f"percent:{p}:{n}", q, Fraction(p * n, 100)


def _pizza(rng: random.Random) -> Problem:
    b, d = rng.randint(2, 6), rng.randint(2, 6)
    a, c = rng.randint(1, b - 1), rng.randint(1, d - 1)
    name = rng.choice(NAMES)
    q = (
        f"{name} eats {a}/{b} of a pizza, then {c}/{d} of what is left. "
        "What fraction of the whole pizza is left?"
    )
    return f"pizza:{a}:{b}:{c}:{d}", q, (1 - Fraction(a, b)) * (1 - Fraction(c, d))


def _system(rng: random.Random) -> Problem:
    x, y = rng.randint(-9, 12), rng.randint(-9, 12)
    a, b = rng.randint(1, 5), rng.randint(1, 5)
    q = f"If x + y = {x + y} and {a}x - {b}y = {a * x - b * y}, what is x?"
    return f"system:{x}:{y}:{a}:{b}", q, Fraction(x)


def _quadratic(rng: random.Random) -> Problem:
    r1, r2 = rng.randint(-9, 9), rng.randint(-9, 9)
    s, p = r1 + r2, r1 * r2
    q = (
        f"The equation x^2 {'-' if s >= 0 else '+'} {abs(s)}x {'+' if p >= 0 else '-'} {abs(p)} = 0 "
        "has real solutions. What is the largest solution?"
    )
    return f"quadratic:{s}:{p}", q, Fraction(max(r1, r2))


def _rational_linear(rng: random.Random) -> Problem:
    a, b, c = rng.randint(2, 9), rng.randint(1, 9), rng.randint(1, 20)
    while True:
        x = Fraction(c - b, a)
        if x.denominator > 1:
            break
        c += 1
    q = f"Solve for x: {a}x + {b} = {c}. Give an exact answer."
    return f"rational_linear:{a}:{b}:{c}", q, x


LEVELS: dict[int, Sequence[Generator]] = {
    1: (_add, _sub, _plain),
    2: (_times, _share, _two_step),
    3: (_linear, _order_ops, _two_step),
    4: (_fraction_sum, _percent, _pizza),
    5: (_system, _quadratic, _rational_linear),
}
# Split buckets of the key hash, out of 1000.
_BUCKETS = {"val": range(0, 50), "test": range(50, 100), "train": range(100, 1000)}


def split_of_key(key: str) -> str:
    """The only split a problem with this canonical key may appear in."""
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 1000
    return next(split for split, r in _BUCKETS.items() if bucket in r)


def boxed(content: str) -> str:
    """``content`` as a final answer: ``\\boxed{content}``."""
    return "\\boxed{" + content + "}"


def format_answer(value: Fraction) -> str:
    return (
        str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    )


class MathGenTask:
    name = "math-gen"
    domain = "math"

    def __init__(
        self,
        *,
        seed: int = 0,
        level: int | Sequence[int] = 1,
        val_size: int = 200,
        test_size: int = 200,
        instruction: str = INSTRUCTION,
    ) -> None:
        levels = [level] if isinstance(level, int) else list(level)
        bad = [lv for lv in levels if lv not in LEVELS]
        if not levels or bad:
            raise ValueError(f"math-gen level must be among {sorted(LEVELS)}, got {level!r}")
        if val_size < 0 or test_size < 0:
            raise ValueError("math-gen val_size and test_size must be >= 0")
        self.seed = seed
        self.levels = levels
        self.instruction = instruction
        self._sizes: dict[str, int | None] = {"train": None, "val": val_size, "test": test_size}

    def size(self, split: str = "train") -> int | None:
        self._check_split(split)
        return self._sizes[split]

    def example(self, index: int, split: str = "train") -> Example:
        self._check_split(split)
        n = self._sizes[split]
        if index < 0 or (n is not None and index >= n):
            raise IndexError(f"math-gen {split} has {n} items; index {index} is out of range")
        # random.Random seeded with a str is stable across runs (sha512 of the string).
        rng = random.Random(f"math-gen:{self.seed}:{split}:{index}")
        level = rng.choice(self.levels)
        while True:  # rejection sampling into this split's key buckets (~20 draws for val)
            generator = rng.choice(LEVELS[level])
            key, question, answer = generator(rng)
            if split_of_key(key) == split:
                break
        return Example(
            uid=f"math-gen:{split}:{self.seed}:{index}",
            task=self.name,
            prompt=({"role": "user", "content": f"{question}\n{self.instruction}"},),
            answer=format_answer(answer),
            meta={"split": split, "level": level, "key": key},
        )

    def score(self, response: str, example: Example) -> Score:
        return score_math(response, example.answer)

    def format_answer(self, content: str) -> str:
        return boxed(content)

    def reference_response(self, example: Example) -> str:
        return boxed(example.answer)

    @staticmethod
    def _check_split(split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


@register_task(
    "math-gen",
    domain="math",
    description="procedural arithmetic/algebra word problems, level 1-5, exact answers",
    verifier="math",
)
def make_math_gen(**settings: object) -> MathGenTask:
    return MathGenTask(**settings)  # type: ignore[arg-type]
