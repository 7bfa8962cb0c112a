"""Without vllm installed, rollout.sampler=vllm is one clear error naming the extra (exit 2,
no run directory left behind). Runs in the default suite: vllm is hidden from the import
system here, so the check holds whether or not the extra is installed."""

import sys

from prorl.cli import main


def test_vllm_sampler_without_vllm_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    run = tmp_path / "run"
    code = main(["train", "--preset", "debug", "--run-dir", str(run), "rollout.sampler=vllm"])
    assert code == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("prorl: error:")]
    assert len(lines) == 1, err
    assert "rollout.sampler" in lines[0] and "prorl[vllm]" in lines[0]
    assert not run.exists()  # nothing half-made left behind
