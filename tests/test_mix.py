"""Training on a mix of all five domains runs end to end (tiny model, real verifiers)."""

from prorl.config import load_config
from prorl.metrics import read_jsonl
from prorl.runtime import run_training

DOMAINS = ("math-gen", "code-basic", "stem-gen", "rg/leg_counting", "ifeval-gen")


def test_mix_all_preset_trains_on_five_domains(tmp_path):
    cfg = load_config(
        "mix-all",
        [
            f"run_dir={tmp_path / 'run'}",
            "model.name=tiny",
            "model.bf16=false",
            "steps=1",
            "tensorboard=false",
            "data.val_problems=1",
            "eval.n=1",
            "rollout.prompts_per_step=12",
            "seed=1",  # its 12 seeded draws cover all five tasks (seed 0 happens to hit 3)
            "rollout.n=2",
            "rollout.max_new_tokens=8",
            "rollout.max_rounds=1",
        ],
    )
    assert {t.name for t in cfg.data.tasks} == set(DOMAINS)
    run_training(cfg, live=False)
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    trained = rows[-1]
    seen = {k.removeprefix("train/reward/") for k in trained if k.startswith("train/reward/")}
    assert seen == set(DOMAINS), seen
    assert trained["verify/infra_errors"] == 0
    validated = {
        k.split("/pass@1")[0].removeprefix("eval/")
        for k in rows[0]
        if "/pass@1" in k and k != "eval/pass@1"
    }
    assert validated == set(DOMAINS)  # every domain's verifier ran on held-out items
