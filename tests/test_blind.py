from fractions import Fraction as F

import pytest

from prorl.evaluate.blind import blind_pass_at_k, blind_success_probs


def test_blind_floor_hand_computed() -> None:
    # pool of all 6 answers: 1 x3, 2 x1, 3 x1, None x1; each problem sees the other 4
    answers = [[F(1), F(2)], [F(1), F(1)], [F(3), None]]
    refs = [F(1), F(3), F(2)]
    assert blind_success_probs(answers, refs) == [0.5, 0.25, 0.25]
    assert blind_pass_at_k(answers, refs, 1) == pytest.approx(1 / 3)
    # k = 2: 1 - 0.5^2 = 0.75, 1 - 0.75^2 = 0.4375 twice
    assert blind_pass_at_k(answers, refs, 2) == pytest.approx((0.75 + 0.4375 + 0.4375) / 3)


def test_blind_floor_ignores_a_problems_own_answers() -> None:
    # each problem answers itself right, and no other problem shares its reference
    answers = [[F(1)] * 4, [F(2)] * 4]
    assert blind_pass_at_k(answers, [F(1), F(2)], 128) == 0.0


def test_blind_floor_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="answer lists"):
        blind_success_probs([[F(1)]], [F(1), F(2)])
    with pytest.raises(ValueError, match="k must be"):
        blind_pass_at_k([[F(1)]], [F(1)], 0)
