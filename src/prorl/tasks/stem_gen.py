"""``stem-gen``: procedural physics, chemistry and unit-conversion multiple-choice questions.

Each question has four options (A-D): the correct value and three distractors built from the
mistakes students actually make (inverted formula, forgotten factor 1/2, wrong power of ten).
Item i of a split is rebuilt from (seed, split, i); splits are disjoint by the problem's
canonical key (family and numbers), as in ``math-gen``. Scored by the ``stem_mc`` verifier.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from prorl.tasks.base import SPLITS, register_task
from prorl.tasks.math_gen import boxed, split_of_key
from prorl.types import Example, Score
from prorl.verify.stem import score_mc

# The example box holds no option letter: with ``\\boxed{A}`` the prompt, copied back, scored 1
# on every problem whose answer is A.
INSTRUCTION = (
    "Answer with the letter of the correct option in \\boxed{}, like this: \\boxed{letter}."
)
LETTERS = "ABCD"
# (question, unit, correct value, distractor values)
Draft = tuple[str, str, float, list[float]]
Family = Callable[[random.Random], tuple[str, Draft]]

# Molar masses (g/mol) from standard atomic weights rounded to 0.5 (H 1, C 12, N 14, O 16,
# Na 23, Cl 35.5).
MOLECULES = {
    "water (H2O)": 18.0,
    "carbon dioxide (CO2)": 44.0,
    "methane (CH4)": 16.0,
    "ammonia (NH3)": 17.0,
    "oxygen gas (O2)": 32.0,
    "sodium chloride (NaCl)": 58.5,
}
CONVERSIONS = (  # (from unit, to unit, factor)
    ("kilometres", "metres", 1000),
    ("metres", "centimetres", 100),
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
    ("kilograms", "grams", 1000),
    ("litres", "millilitres", 1000),
)


def _speed(rng: random.Random) -> tuple[str, Draft]:
    v, t = rng.randint(3, 30) * 5, rng.randint(2, 6)
    q = f"A train travels {v * t} km in {t} hours at constant speed. What is its speed?"
    return f"speed:{v}:{t}", (q, "km/h", v, [v * t * t, v * t, t / (v * t)])


def _force(rng: random.Random) -> tuple[str, Draft]:
    m, a = rng.randint(2, 40), rng.randint(2, 12)
    q = f"A net force accelerates a cart of mass {m} kg at {a} m/s^2. What is the net force?"
    return f"force:{m}:{a}", (q, "N", m * a, [m / a, m + a, m * a * 10])


def _ohm(rng: random.Random) -> tuple[str, Draft]:
    r, i = rng.choice((2, 4, 5, 8, 10, 20, 50)), rng.randint(1, 12)
    q = f"A {i * r} V battery drives current through a {r} ohm resistor. What is the current?"
    return f"ohm:{r}:{i}", (q, "A", i, [i * r * r, r / (i * r), i * 10])


def _kinetic(rng: random.Random) -> tuple[str, Draft]:
    m, v = rng.randint(1, 20) * 2, rng.randint(2, 15)
    q = f"What is the kinetic energy of an object of mass {m} kg moving at {v} m/s?"
    return f"kinetic:{m}:{v}", (q, "J", m * v * v / 2, [m * v * v, m * v / 2, m * v])


def _density(rng: random.Random) -> tuple[str, Draft]:
    rho, vol = rng.choice((0.5, 0.8, 1.0, 2.5, 2.7, 7.9, 11.3)), rng.randint(2, 50)
    mass = round(rho * vol, 1)
    q = f"A block has a mass of {mass:g} g and a volume of {vol} cm^3. What is its density?"
    return f"density:{rho}:{vol}", (q, "g/cm^3", rho, [vol / mass, mass * vol, rho * 10])


def _moles(rng: random.Random) -> tuple[str, Draft]:
    name = rng.choice(sorted(MOLECULES))
    molar, n = MOLECULES[name], rng.choice((0.5, 1, 2, 3, 4, 5, 10))
    q = (
        f"How many moles are in {molar * n:g} g of {name}? "
        "(Atomic masses: H 1, C 12, N 14, O 16, Na 23, Cl 35.5.)"
    )
    return f"moles:{name}:{n}", (q, "mol", n, [molar * n * molar, n * 2, n / 2])


def _convert(rng: random.Random) -> tuple[str, Draft]:
    src, dst, factor = rng.choice(CONVERSIONS)
    x = rng.randint(2, 90)
    q = f"How many {dst} are in {x} {src}?"
    return f"convert:{src}:{x}", (
        q,
        dst,
        x * factor,
        [x / factor, x * factor * 10, x * factor / 10],
    )


def _kelvin(rng: random.Random) -> tuple[str, Draft]:
    c = rng.randint(-40, 120)
    q = f"A liquid is at {c} degrees Celsius. What is its temperature in kelvin?"
    return f"kelvin:{c}", (q, "K", c + 273.15, [c - 273.15, c * 1.8 + 32, c + 100])


FAMILIES: tuple[Family, ...] = (
    _speed,
    _force,
    _ohm,
    _kinetic,
    _density,
    _moles,
    _convert,
    _kelvin,
)


def fmt(value: float) -> str:
    """Integers in full, others to five significant figures: 12.0 -> "12", 298.15 -> "298.15",
    1/150 -> "0.0066667"."""
    if float(value).is_integer() and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.5g}"


def _options(rng: random.Random, correct: float, distractors: list[float]) -> tuple[list[str], int]:
    """Four distinct formatted options with the correct one at a random position."""
    right = fmt(correct)
    wrong: list[str] = []
    fallbacks = [correct * 2, correct / 2, correct + 1, correct * 3, correct - 1]
    for value in distractors + fallbacks:
        text = fmt(value)
        if text not in wrong and text != right and len(wrong) < 3:
            wrong.append(text)
    position = rng.randrange(4)
    return wrong[:position] + [right] + wrong[position:], position


class StemGenTask:
    name = "stem-gen"
    domain = "stem"

    def __init__(
        self,
        *,
        seed: int = 0,
        val_size: int = 200,
        test_size: int = 200,
        instruction: str = INSTRUCTION,
    ) -> None:
        if val_size < 0 or test_size < 0:
            raise ValueError("stem-gen val_size and test_size must be >= 0")
        self.seed = seed
        self.instruction = instruction
        self._sizes: dict[str, int | None] = {"train": None, "val": val_size, "test": test_size}

    def size(self, split: str = "train") -> int | None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self._sizes[split]

    def example(self, index: int, split: str = "train") -> Example:
        n = self.size(split)
        if index < 0 or (n is not None and index >= n):
            raise IndexError(f"stem-gen {split} has {n} items; index {index} is out of range")
        rng = random.Random(f"stem-gen:{self.seed}:{split}:{index}")
        while True:  # rejection sampling into this split's key buckets
            key, (question, unit, correct, distractors) = rng.choice(FAMILIES)(rng)
            if split_of_key(key) == split:
                break
        options, position = _options(rng, correct, distractors)
        lines = [f"{LETTERS[i]}) {opt} {unit}" for i, opt in enumerate(options)]
        content = f"{question}\n\n" + "\n".join(lines) + f"\n\n{self.instruction}"
        return Example(
            uid=f"stem-gen:{split}:{self.seed}:{index}",
            task=self.name,
            prompt=({"role": "user", "content": content},),
            answer=LETTERS[position],
            meta={"split": split, "key": key, "options": tuple(options), "unit": unit},
        )

    def score(self, response: str, example: Example) -> Score:
        return score_mc(response, example.answer)

    def format_answer(self, content: str) -> str:
        return boxed(content)

    def reference_response(self, example: Example) -> str:
        return boxed(example.answer)


@register_task(
    "stem-gen",
    domain="stem",
    description="procedural physics/chemistry/unit-conversion multiple choice (A-D)",
    verifier="stem_mc",
)
def make_stem_gen(**settings: object) -> StemGenTask:
    return StemGenTask(**settings)  # type: ignore[arg-type]
