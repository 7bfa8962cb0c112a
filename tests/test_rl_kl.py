"""KL estimators: hand values, zero when equal, the [-10, 10] clamp, gradients, unbiasedness."""

from __future__ import annotations

import math

import pytest
import torch

from prorl.rl import KL_ESTIMATORS, kl_penalty


def kl_of(x: list[float], kind: str) -> list[float]:
    """Estimator values for log ratios ``x`` (policy logprobs - ref logprobs)."""
    ref = torch.full((1, len(x)), -2.0, dtype=torch.float64)
    return kl_penalty(ref + torch.tensor([x], dtype=torch.float64), ref, kind)[0].tolist()


def test_hand_values() -> None:
    # x = 1:  k1 = 1, k2 = .5 * 1 = .5, k3 = e^-1 - 1 + 1 = 0.367879
    # x = -2: k1 = -2, k2 = .5 * 4 = 2, k3 = e^2 - 1 - 2 = 4.389056
    assert kl_of([1.0, -2.0], "k1") == pytest.approx([1.0, -2.0])
    assert kl_of([1.0, -2.0], "k2") == pytest.approx([0.5, 2.0])
    assert kl_of([1.0, -2.0], "k3") == pytest.approx([math.exp(-1), math.exp(2) - 3])


def test_k3_is_ref_over_pi_form() -> None:
    # k3 = ref/pi - log(ref/pi) - 1 with pi = 0.2, ref = 0.5: 2.5 - ln 2.5 - 1 = 0.583709
    out = kl_penalty(torch.tensor([[math.log(0.2)]]), torch.tensor([[math.log(0.5)]]), "k3")
    assert out.item() == pytest.approx(2.5 - math.log(2.5) - 1, rel=1e-5)


@pytest.mark.parametrize("kind", sorted(KL_ESTIMATORS))
def test_zero_when_equal(kind: str) -> None:
    lp = torch.randn(3, 7)
    assert torch.equal(kl_penalty(lp, lp.clone(), kind), torch.zeros(3, 7))


def test_clamp_at_ten() -> None:
    # x = 15 and 10 both read as 10; x = -15 as -10. k3(10) = e^-10 + 9; k3(-10) = e^10 - 11
    assert kl_of([15.0, 10.0, -15.0], "k1") == pytest.approx([10.0, 10.0, -10.0])
    assert kl_of([15.0, -15.0], "k2") == pytest.approx([50.0, 50.0])
    assert kl_of([15.0, -15.0], "k3") == pytest.approx([math.exp(-10) + 9, math.exp(10) - 11])
    # without the clamp k3(-30) would be e^30 ~ 1e13
    assert kl_of([-30.0], "k3")[0] < 2.3e4


def test_gradients() -> None:
    # d k1/dx = 1; d k2/dx = x; d k3/dx = 1 - e^-x; beyond the clamp all are 0
    x = torch.tensor([[0.5, -1.0, 12.0]], dtype=torch.float64)
    expected = {
        "k1": [1.0, 1.0, 0.0],
        "k2": [0.5, -1.0, 0.0],
        "k3": [1 - math.exp(-0.5), 1 - math.exp(1.0), 0.0],
    }
    for kind, want in expected.items():
        lp = x.clone().requires_grad_(True)
        kl_penalty(lp, torch.zeros_like(x), kind).sum().backward()
        assert lp.grad is not None
        assert lp.grad[0].tolist() == pytest.approx(want), kind


def test_ref_is_detached_and_nan_padding_keeps_grad_finite() -> None:
    lp = torch.zeros(1, 2, requires_grad=True)
    ref = torch.tensor([[0.3, float("nan")]], requires_grad=True)
    kl = kl_penalty(lp, ref, "k3")
    mask = torch.tensor([[True, False]])
    torch.where(mask, kl, 0.0).sum().backward()
    assert ref.grad is None
    assert lp.grad is not None and torch.isfinite(lp.grad).all()
    assert lp.grad[0, 1] == 0.0


def test_k1_and_k3_are_unbiased_for_reverse_kl() -> None:
    # Monte Carlo over samples from pi: mean k1 and mean k3 -> KL(pi || ref) exactly computed
    gen = torch.Generator().manual_seed(0)
    pi = torch.tensor([0.5, 0.2, 0.2, 0.1], dtype=torch.float64)
    ref = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    exact = float((pi * (pi / ref).log()).sum())  # 0.1390
    ids = torch.multinomial(pi, 200_000, replacement=True, generator=gen)
    lp, rp = pi.log()[ids].unsqueeze(0), ref.log()[ids].unsqueeze(0)
    assert kl_penalty(lp, rp, "k1").mean().item() == pytest.approx(exact, abs=5e-3)
    assert kl_penalty(lp, rp, "k3").mean().item() == pytest.approx(exact, abs=5e-3)
    assert (kl_penalty(lp, rp, "k3") >= 0).all()


def test_errors() -> None:
    with pytest.raises(ValueError, match="unknown KL estimator 'k4'; known: k1, k2, k3"):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), "k4")
    with pytest.raises(ValueError, match="differ"):
        kl_penalty(torch.zeros(1, 2), torch.zeros(1, 3), "k1")
