"""scripts/gpu-check.sh (docs/gpu.md) where there is no GPU, and the logic of its Python
parts (scripts/gpu_check.py) run on the CPU at a toy size."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu-check.sh"


def _dry_run(tmp_path, path):
    """The script with ``path`` as PATH; CUDA_VISIBLE_DEVICES="" hides any GPU, so that
    this stays a dry run on a GPU machine too."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable, "PATH": path}
    out = tmp_path / "results"
    done = subprocess.run(
        ["bash", str(SCRIPT), str(out)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("gpu-check: no CUDA GPU here")
    assert not out.exists()  # no results folder: nothing ran


def test_without_nvidia_smi_prints_one_line_and_exits_0(tmp_path):
    _dry_run(tmp_path, "/usr/bin:/bin")  # the system's tools; no nvidia-smi on a CPU machine


def test_with_nvidia_smi_but_no_cuda_device_prints_one_line(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    smi = fake / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho fake\n")
    smi.chmod(0o755)
    _dry_run(tmp_path, f"{fake}:/usr/bin:/bin")


@pytest.mark.slow
def test_resume_and_throughput_parts_on_the_cpu(tmp_path, monkeypatch):
    """The parts' own logic, on the CPU: a SIGKILLed and resumed run equals the straight one
    (the tiny model, fp32), and the throughput part reports a fraction of a measured peak."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    monkeypatch.chdir(ROOT)  # the parts run `scripts/gpu_check.py prorl ...` from the root
    import gpu_check

    assert gpu_check.resume(tmp_path, device="cpu")
    got = json.loads((tmp_path / "resume.json").read_text())
    assert got["killed_mid_run"] and got["metrics_equal"] and got["params_equal"]
    assert got["metric_steps"][0] == list(range(7))

    shape = dict(
        gpu_check.QWEN2_05B,
        vocab_size=2000,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    toy = {"prompts": 2, "n": 2, "prompt_len": 16, "resp_len": 32, "peak_n": 256}
    assert gpu_check.throughput(tmp_path, device="cpu", shape=shape, **toy)
    tp = json.loads((tmp_path / "throughput.json").read_text())
    assert tp["tokens_per_update"] == 4 * 48 and tp["tokens_per_s"] > 0
    assert 0 < tp["fraction_of_peak"] < tp["fraction_of_peak_with_attention"]
