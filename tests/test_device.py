"""Learner placement (prorl.device): which device each rank computes on, and the group's
backend. The GPU paths themselves run only in ``-m gpu`` (tests/test_gpu.py)."""

from __future__ import annotations

import pytest
import torch

from prorl.config import ConfigError, load_config
from prorl.device import learner_device, resolve_device
from prorl.policy import pack
from prorl.scale.learner import group_backend

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("setting", "kw", "expected"),
    [
        # one process / torchrun: auto follows what this node has
        ("auto", {"cuda_count": 0}, CPU),
        ("auto", {"cuda_count": 2}, torch.device("cuda", 0)),
        ("auto", {"cuda_count": 4, "local_rank": 3, "world": 4}, torch.device("cuda", 3)),
        ("cpu", {"cuda_count": 8}, CPU),
        ("cuda", {"cuda_count": 2, "local_rank": 1, "world": 2}, torch.device("cuda", 1)),
        ("cuda:1", {"cuda_count": 2}, torch.device("cuda", 1)),
        # Ray: the config decides, so the driver and the actors agree on gloo or NCCL
        ("auto", {"backend": "ray", "gpus_per_worker": 0, "cuda_count": 8}, CPU),
        (
            "auto",
            {"backend": "ray", "gpus_per_worker": 1, "cuda_count": 1},
            torch.device("cuda", 0),
        ),
        ("cpu", {"backend": "ray", "gpus_per_worker": 1, "cuda_count": 1}, CPU),
    ],
)
def test_resolve_device(setting: str, kw: dict, expected: torch.device) -> None:
    assert resolve_device(setting, **kw) == expected


@pytest.mark.parametrize(
    ("setting", "kw", "needle"),
    [
        ("cuda", {"cuda_count": 0}, "model.device=cuda, but this process sees no CUDA GPU"),
        (
            "auto",
            {"backend": "ray", "gpus_per_worker": 1, "cuda_count": 0},
            "scale.gpus_per_worker=1 puts the learner ranks on GPUs",
        ),
        ("cuda", {"cuda_count": 2, "local_rank": 2, "world": 4}, "needs GPU 2 but sees 2"),
        ("cuda:3", {"cuda_count": 2}, "needs GPU 3 but sees 2"),
        ("cuda:0", {"cuda_count": 2, "world": 2}, "would put every learner rank on one GPU"),
    ],
)
def test_resolve_device_refusals_say_what_to_do(setting: str, kw: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match="model.device") as err:
        resolve_device(setting, **kw)
    assert needle in str(err.value)


def test_learner_device_on_this_machine_reads_local_rank(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    cfg = load_config(None, ["model.name=tiny"])
    assert learner_device(cfg, world=2) == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert learner_device(cfg, world=2) == CPU


def test_model_device_setting_is_validated() -> None:
    for ok in ("auto", "cpu", "cuda", "cuda:3"):
        assert load_config(None, [f"model.device={ok}"]).model.device == ok
    for bad in ("gpu", "cuda:-1", "cuda:x", "tpu:0"):
        with pytest.raises(ConfigError, match="model.device: choose auto, cpu, cuda or cuda:N"):
            load_config(None, [f"model.device={bad}"])


def test_group_backend_follows_the_device() -> None:
    assert group_backend(torch.device("cuda", 0)) == "nccl"
    assert group_backend(CPU) == "gloo"
    assert group_backend(None) == "gloo"


def test_packed_batch_moves_whole() -> None:
    batch = pack([[1, 2, 3], [4]], [[5, 6], [7]], pad_id=0)
    assert batch.to(CPU) is batch  # already there: no copy
    moved = batch.to(torch.device("meta"))
    for name in ("input_ids", "attention_mask", "position_ids", "response_ids", "response_mask"):
        t, m = getattr(batch, name), getattr(moved, name)
        assert m.device.type == "meta" and m.shape == t.shape and m.dtype == t.dtype
    assert moved.prompt_width == batch.prompt_width == 3
