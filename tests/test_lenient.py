"""Lenient extraction: the last number of a response against a numeric reference."""

import pytest

from prorl.verify.lenient import as_number, lenient_correct


@pytest.mark.parametrize(
    ("response", "reference", "expected"),
    [
        ("3 + 4 = 7.", "7", True),
        ("The answer is 7 apples, not 8", "7", False),  # the last number decides
        ("<answer>1,024</answer>", "1024", True),
        ("x = 7/2", "7/2", True),
        ("x = 3.50", "7/2", True),
        ("-3 is it", "-3", True),
        ("I think </think> so 9", "9", True),
        ("5 </think> no idea", "5", False),  # only after the reasoning block
        ("", "5", False),
        ("anything 5", "yes", None),  # not a numeric reference: undefined
    ],
)
def test_lenient_correct(response, reference, expected):
    assert lenient_correct(response, reference) is expected


def test_as_number():
    assert as_number(" 12 ") == 12 and as_number("3/4") * 4 == 3 and as_number("x") is None
    assert as_number("1/0") is None
