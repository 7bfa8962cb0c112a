"""Advantage estimators for critic-free RL: one scalar per response, shared by its tokens.

Layout contract (all estimators): ``rewards`` is a flat tensor of ``G * N`` finite rewards,
group-contiguous: rows ``[i*group_size:(i+1)*group_size]`` are the samples of prompt ``i``.
The result has the same shape and dtype and carries no gradient (rewards are data).

Two choices the papers leave open, made here once for every estimator:

* **std is Bessel-corrected** (``unbiased=True``, divide by ``n - 1``), as in veRL (which ProRL
  trained with) and TRL. A group of size 1 has no spread, so it counts as all-equal.
* **all-equal groups give exactly 0**, not ``0 / eps`` round-off noise: ``r - mean`` is not
  always exactly 0 in floating point (``mean([0.1] * 3) != 0.1``), and dividing that residue by
  ``std + eps`` with ``std ~ 1e-17`` would leak a tiny, sign-random signal into the update.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

AdvantageFn = Callable[[Tensor, int], Tensor]


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    """View flat rewards ``[G*N]`` as ``[G, N]`` after validating the layout."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [G*N], got shape {tuple(rewards.shape)}")
    if rewards.numel() % group_size != 0:
        raise ValueError(
            f"rewards has {rewards.numel()} entries, not a multiple of group_size={group_size}"
        )
    if not torch.is_floating_point(rewards):
        rewards = rewards.float()
    return rewards.detach().view(-1, group_size)  # [G, N]


def _constant_groups(grouped: Tensor) -> Tensor:
    """Which groups have all rewards equal (exactly), as a ``[G, 1]`` bool mask."""
    spread = grouped.amax(dim=1) - grouped.amin(dim=1)  # [G]
    return (spread == 0).unsqueeze(1)  # [G, 1]


def _std(x: Tensor, dim: int | None = None) -> Tensor:
    """Bessel-corrected std that is 0 (not NaN) when there is a single element."""
    n = x.numel() if dim is None else x.shape[dim]
    if n < 2:
        return torch.zeros_like(x.sum() if dim is None else x.sum(dim=dim))
    return x.std() if dim is None else x.std(dim=dim)


def _centered(rewards: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """Group-mean-subtracted rewards ``[G, N]`` (all-equal groups exactly 0) and that mask."""
    grouped = _grouped(rewards, group_size)  # [G, N]
    const = _constant_groups(grouped)  # [G, 1]
    centered = grouped - grouped.mean(dim=1, keepdim=True)  # [G, N]
    centered = torch.where(const, torch.zeros_like(centered), centered)  # [G, N]
    return centered, const


def grpo_advantages(rewards: Tensor, group_size: int, eps: float = 1e-6) -> Tensor:
    """GRPO: ``A_i = (r_i - mean(group)) / (std(group) + eps)``, std Bessel-corrected.

    Example: rewards ``[1, 0, 0, 0]`` -> mean 0.25, std 0.5 -> ``[1.5, -0.5, -0.5, -0.5]``.
    """
    centered, const = _centered(rewards, group_size)  # [G, N], [G, 1]
    std = _std(_grouped(rewards, group_size), dim=1).unsqueeze(1)  # [G, 1]
    adv = centered / (std + eps)  # [G, N]
    adv = torch.where(const, torch.zeros_like(adv), adv)  # [G, N]
    return adv.reshape(-1)  # [G*N]


def drgrpo_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """Dr.GRPO: ``A_i = r_i - mean(group)``; no std division (it biases toward easy/hard groups)."""
    centered, _ = _centered(rewards, group_size)  # [G, N]
    return centered.reshape(-1)  # [G*N]


def reinforce_pp_baseline_advantages(rewards: Tensor, group_size: int, eps: float = 1e-6) -> Tensor:
    """REINFORCE++-baseline (ProRL v2): group mean off, then whiten across the whole batch.

    ``c_i = r_i - mean(group(i))``; ``A_i = (c_i - mean_batch(c)) / (std_batch(c) + eps)``.
    The batch statistics are over responses (one value per response, not token-weighted as in
    veRL's ``masked_whiten``) and include the zeros of all-equal groups, whose advantage is then
    forced back to exactly 0. A batch where every group is all-equal gives all zeros.
    """
    centered, const = _centered(rewards, group_size)  # [G, N], [G, 1]
    flat = centered.reshape(-1)  # [G*N]
    adv = (flat - flat.mean()) / (_std(flat) + eps)  # [G*N]
    const_rows = const.expand_as(centered).reshape(-1)  # [G*N]
    return torch.where(const_rows, torch.zeros_like(adv), adv)  # [G*N]


def rloo_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """RLOO (Kool et al. 2019; Ahmadian et al. 2024): ``A_i = r_i - mean_{j != i} r_j``.

    Each sample's baseline is the mean of the *other* samples of its group, so it does not
    depend on ``r_i`` itself (unbiased, unlike ``r_i - mean(group)``). Equivalently
    ``N / (N - 1) * (r_i - mean(group))``: Dr.GRPO scaled up by ``N / (N - 1)``.
    Example: ``[1, 0, 0, 0]`` -> ``[1 - 0, 0 - 1/3, 0 - 1/3, 0 - 1/3]``. A group of one has no
    other sample to compare with and gives 0.
    """
    grouped = _grouped(rewards, group_size)  # [G, N]
    if group_size < 2:
        return torch.zeros_like(grouped).reshape(-1)  # [G*N]
    const = _constant_groups(grouped)  # [G, 1]
    # the leave-one-out mean straight from its definition: (group sum - r_i) / (N - 1)
    others = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)  # [G, N]
    adv = grouped - others  # [G, N]
    adv = torch.where(const, torch.zeros_like(adv), adv)  # [G, N]
    return adv.reshape(-1)  # [G*N]


ADVANTAGES: dict[str, AdvantageFn] = {
    "grpo": grpo_advantages,
    "reinforce++-baseline": reinforce_pp_baseline_advantages,
    "drgrpo": drgrpo_advantages,
    "rloo": rloo_advantages,
}


def compute_advantages(name: str, rewards: Tensor, group_size: int) -> Tensor:
    """Look up the estimator ``name`` in :data:`ADVANTAGES` and apply it with default eps."""
    try:
        fn = ADVANTAGES[name]
    except KeyError:
        known = ", ".join(sorted(ADVANTAGES))
        raise ValueError(f"unknown advantage estimator {name!r}; known: {known}") from None
    return fn(rewards, group_size)
