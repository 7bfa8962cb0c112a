"""Deterministic train/val/test assignment of rows from one file, by content hash.

A row's split depends only on (seed, its normalised question text), never on its position,
so appending rows to a file or reordering it never moves an existing problem across the
train/held-out boundary, and identical prompts always land in the same split.
"""

from __future__ import annotations

import hashlib

SPLIT_ORDER = ("test", "val", "train")  # held-out wins when a prompt appears twice


def prompt_key(question: str) -> str:
    """Whitespace-normalised text: two prompts differing only in spacing are the same."""
    return " ".join(question.split())


def digest(question: str) -> str:
    return hashlib.sha256(prompt_key(question).encode()).hexdigest()


def split_of(question: str, *, seed: int, val_fraction: float, test_fraction: float) -> str:
    """'test' for a ``test_fraction`` share of prompts, 'val' for ``val_fraction``, else
    'train'; the share is of distinct prompts, in expectation."""
    h = hashlib.sha256(f"{seed}\0{prompt_key(question)}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2.0**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 (got {val_fraction} + {test_fraction}); "
            "nothing would be left to train on"
        )
