"""Where the learner computes: the CPU, or this rank's GPU (``model.device``).

Every rank of a learner group must choose the same kind of device (NCCL for GPUs, gloo for
CPUs, and one group cannot mix them), so the choice depends only on the config and the rank,
never on what one process happens to see:

- one process or ``torchrun``: ``auto`` is the GPU numbered ``LOCAL_RANK`` when CUDA is
  visible, else the CPU (every rank of one node sees the same GPUs);
- ``scale.backend=ray``: ``auto`` means GPUs exactly when ``scale.gpus_per_worker`` > 0.
  Ray gives each learner actor its GPUs as ``cuda:0`` (``CUDA_VISIBLE_DEVICES``); rank 0 is
  the driver, which Ray does not place, so it must see a GPU of its own.

A process that is asked for a GPU and sees none stops with a ``ConfigError`` before
anything is written. ``bf16`` autocast follows the device: CPU autocast only where the CPU
has bf16 hardware, CUDA autocast on a GPU.
"""

from __future__ import annotations

import os

import torch

from prorl.config import ConfigError, check_device


def resolve_device(
    setting: str,
    *,
    backend: str = "local",
    gpus_per_worker: float = 0.0,
    world: int = 1,
    local_rank: int = 0,
    cuda_count: int = 0,
    key: str = "model.device",
) -> torch.device:
    """The learner device of one rank for ``model.device`` = ``setting`` (``auto``, ``cpu``,
    ``cuda`` or ``cuda:N``), given what this process sees (``cuda_count`` GPUs). ``key``
    names the setting in errors."""
    check_device(setting, key)
    if setting == "cpu":
        return torch.device("cpu")
    if setting == "auto":
        wants_gpu = gpus_per_worker > 0 if backend == "ray" else cuda_count > 0
        if not wants_gpu:
            return torch.device("cpu")
        setting = "cuda"
    if cuda_count == 0:
        why = (
            f"scale.gpus_per_worker={gpus_per_worker:g} puts the learner ranks on GPUs"
            if backend == "ray" and gpus_per_worker > 0
            else f"{key}={setting}"
        )
        raise ConfigError(
            f"{key}: {why}, but this process sees no CUDA GPU "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
            f"run it where a GPU is visible (docs/scaling.md) or set {key}=cpu"
        )
    index = local_rank
    if setting != "cuda":
        if world > 1:
            raise ConfigError(
                f"{key}={setting} would put every learner rank on one GPU; use "
                f"{key}=cuda (each rank takes the GPU numbered LOCAL_RANK)"
            )
        index = int(setting.split(":", 1)[1])
    if index >= cuda_count:
        raise ConfigError(
            f"{key}: this rank needs GPU {index} but sees {cuda_count} "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
            "start at most one learner rank per visible GPU"
        )
    return torch.device("cuda", index)


def visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def learner_device(cfg: object, world: int) -> torch.device:
    """``resolve_device`` for this process: ``cfg.model.device`` and ``cfg.scale``, the
    ``LOCAL_RANK`` torchrun sets (0 for a Ray actor, which sees only its own GPUs)."""
    model, scale = cfg.model, cfg.scale  # type: ignore[attr-defined]
    return resolve_device(
        model.device,
        backend=scale.backend,
        gpus_per_worker=scale.gpus_per_worker,
        world=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        cuda_count=visible_gpus(),
    )
