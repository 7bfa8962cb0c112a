"""Training stages: the schedule as pure functions, bad stage keys, and a real two-stage run
on the tiny model whose settings change at the boundary (with a reset), killed with SIGKILL
inside stage 2 and resumed exactly."""

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from prorl import checkpoint as ckpt
from prorl import stages as st
from prorl.config import ConfigError, load_config
from prorl.metrics import read_jsonl
from prorl.mixture import MixtureEntry, TaskMixture
from prorl.runtime import run_training
from prorl.state import make_optimizer
from prorl.tasks import get_task
from prorl.train import _set_lr
from test_checkpoint import TOY, _final, _rows, kill_after_checkpoint

THREE = (
    "stages=[{name: a, steps: 2}, {name: b, until_step: 5, optim: {lr: 1e-3}}, {rollout: {n: 2}}]"
)


def test_config_for_step_follows_the_schedule():
    cfg = load_config("debug", ["steps=7", THREE])
    assert [(s.name, s.start, s.end) for s in st.stage_spans(cfg)] == [
        ("a", 0, 2),
        ("b", 2, 5),
        ("stage2", 5, 7),
    ]
    got = [st.config_for_step(cfg, step) for step in range(8)]
    assert [i for i, _ in got] == [0, 0, 1, 1, 1, 2, 2, 2]  # past the end: the last stage
    assert [c.optim.lr for _, c in got] == [1e-4, 1e-4, 1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4]
    assert [c.rollout.n for _, c in got] == [4] * 5 + [2] * 3
    assert all(c.stages == cfg.stages and c.model == cfg.model for _, c in got)
    assert [st.starts_stage(cfg, s) for s in range(7)] == [
        None,
        None,
        st.stage_spans(cfg)[1],
        None,
        None,
        st.stage_spans(cfg)[2],
        None,
    ]
    # no stages: one stage, the config itself
    plain = load_config("debug")
    assert st.config_for_step(plain, 2) == (0, plain) and st.starts_stage(plain, 0) is None


def test_steps_is_the_sum_of_stage_lengths():
    cfg = load_config(None, ["stages=[{steps: 3}, {steps: 4, rollout: {max_new_tokens: 8}}]"])
    assert cfg.steps == 7 and st.stage_spans(cfg)[1].start == 3
    open_last = load_config(None, ["steps=10", "stages=[{steps: 3}, {rollout: {n: 4}}]"])
    assert st.stage_spans(open_last)[-1].end == 10
    with pytest.raises(ConfigError, match="steps: 5, but the stages end at step 7"):
        load_config(None, ["steps=5", "stages=[{steps: 3}, {steps: 4}]"])
    with pytest.raises(ConfigError, match=r"stages\[0\]: give steps .* or until_step"):
        load_config(None, ["stages=[{}, {steps: 4}]"])
    with pytest.raises(ConfigError, match=r"stages\[1\].until_step: must be after step 3"):
        load_config(None, ["stages=[{steps: 3}, {until_step: 3}]"])


def _staged_preset(tmp_path, stage):
    preset = tmp_path / "staged.yaml"
    preset.write_text(
        "model: {name: tiny}\nverify: {workers: 0}\n"
        f"stages:\n  - {{steps: 1}}\n  - {{steps: 1}}\n  - {{steps: 1, {stage[1:]}\n"
    )
    return preset


@pytest.mark.parametrize(
    ("stage", "needle"),
    [
        ("{rollout: {nn: 4}}", "stages[2].rollout.nn: a stage cannot change this; stages can"),
        ("{rollout: {n: 1}}", "stages[2].rollout.n: GRPO needs at least 2 samples per prompt"),
        ("{rollout: {n: many}}", "stages[2].rollout.n: expected an integer, got 'many'"),
        ("{model: {name: x}}", "stages[2].model: unknown key"),
        ("{optim: {warmup_steps: 3}}", "stages[2].optim.warmup_steps: a stage cannot change"),
        ("{shaping: {overlong: cut}}", "stages[2].shaping.overlong: choose one of"),
    ],
)
def test_bad_stage_names_its_key(tmp_path, stage, needle):
    with pytest.raises(ConfigError) as info:
        load_config(str(_staged_preset(tmp_path, stage)))
    assert needle in str(info.value)


def test_bad_stage_fails_at_startup_with_exit_2(tmp_path):
    run = tmp_path / "run"
    preset = _staged_preset(tmp_path, "{rollout: {nn: 4}}")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "prorl.cli",
            "train",
            "--preset",
            str(preset),
            "--run-dir",
            str(run),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("prorl: error: stages[2].rollout.nn: a stage cannot change")
    assert not run.exists()
    # an unknown task in a later stage fails before the model loads or the run dir exists
    preset = _staged_preset(tmp_path, "{data: {tasks: [no-such-task]}}")
    with pytest.raises(ConfigError, match="unknown task 'no-such-task'"):
        run_training(load_config(str(preset), [f"run_dir={run}"]), live=False)
    assert not run.exists()


def test_schedule_answers_the_config_in_force_and_the_actions_due():
    cfg = load_config(
        "debug",
        [
            "steps=7",
            "reset.reset_optimizer=false",
            THREE.replace(
                "{rollout: {n: 2}}",
                "{rollout: {n: 2}, reset_optimizer: true, data: {tasks: [toy-even:3]}}",
            ),
        ],
    )
    schedule = st.Schedule(cfg)
    stages = [schedule.stage(step) for step in range(8)]
    assert [s.index for s in stages] == [0, 0, 1, 1, 1, 2, 2, 2]
    assert [s.cfg.optim.lr for s in stages] == [1e-4, 1e-4, 1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4]
    assert [s.cfg.rollout.n for s in stages] == [4] * 5 + [2] * 3
    assert stages[0].weights == {"toy-even": 1.0, "rg/leg_counting": 1.0}
    assert stages[5].weights == {"toy-even": 3.0}  # the new mix the third stage draws
    assert [s.label for s in (stages[0], stages[2], stages[5])] == ["a 1/3", "b 2/3", "stage2 3/3"]
    # a reset starts stages 1 and 2; only stage 2 re-initialises AdamW
    assert [schedule.begins(step) for step in (0, 1, 3, 4, 6)] == [None] * 5
    assert schedule.begins(2) is stages[2] and not stages[2].reset_optimizer
    assert schedule.begins(5) is stages[5] and stages[5].reset_optimizer
    assert schedule.staged
    plain = st.Schedule(load_config("debug"))
    assert not plain.staged and plain.stage(2).cfg is plain.cfg and plain.stage(2).label == ""
    assert plain.begins(0) is None and plain.begins(2) is None


def test_stage_rules():
    with pytest.raises(ConfigError, match=r"stages\[1\].algo.kl_coef: needs algo.kl_coef > 0"):
        load_config(
            None, ["algo.kl_coef=0", "stages=[{steps: 1}, {steps: 1, algo: {kl_coef: 0.1}}]"]
        )
    cfg = load_config(
        None,
        [
            "reset.reset_optimizer=false",
            "stages=[{steps: 1}, {steps: 1, reset_optimizer: true, data: {tasks: [toy-even:2]}},"
            " {steps: 1, data: {tasks: [math-gen, {name: toy-even, weight: 3}]}}]",
        ],
    )
    assert [st.reset_optimizer_at(cfg, i) for i in range(3)] == [False, True, False]
    assert [t.name for t in st.all_tasks(cfg)] == ["rg/leg_counting", "toy-even", "math-gen"]
    assert st.describe(cfg, 2) == {"data.tasks": ["math-gen:1", "toy-even:3"]}
    clash = load_config(
        None,
        [
            "stages=[{steps: 1, data: {tasks: [{name: rg/leg_counting, settings: {seed: 1}}]}},"
            " {steps: 1}]",
        ],
    )
    with pytest.raises(ConfigError, match=r"stages\[1\].data.tasks: 'rg/leg_counting' has other"):
        st.all_tasks(clash)


def test_mixture_follows_a_new_mix_and_keeps_cursors():
    entries = [MixtureEntry(n, 1.0, get_task(n)) for n in ("toy-even", "math-gen")]
    mix = TaskMixture(entries, seed=0)
    first = mix.draw(6, step=0)
    mix.set_weights({"math-gen": 1.0})
    second = mix.draw(6, step=1)
    assert all(ex.task == "math-gen" for ex in second)
    n_math = sum(ex.task == "math-gen" for ex in first)
    assert mix.cursor == {"toy-even": 6 - n_math, "math-gen": n_math + 6}
    assert second[0].uid not in {ex.uid for ex in first}  # continues, does not restart
    with pytest.raises(ValueError, match="not in the mixture"):
        mix.set_weights({"rg/leg_counting": 1.0})


def test_set_lr_keeps_moments_and_warmup():
    model = torch.nn.Linear(2, 1)
    cfg = load_config(None, ["optim.lr=1e-2", "optim.warmup_steps=4"])
    opt, sched = make_optimizer(cfg, model)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    sched.step()  # warm-up factor 2/4
    moments = opt.state[model.weight]["exp_avg"].clone()
    state = SimpleNamespace(optimizer=opt, scheduler=sched)
    _set_lr(state, 1e-3)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5e-3)
    assert sched.get_last_lr()[0] == pytest.approx(0.5e-3)
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.75e-3)
    assert torch.equal(opt.state[model.weight]["exp_avg"], moments)


# Stage a: toy-even, 4 new tokens, lr 3e-3. Stage b: half the mix from math-gen, 6 new
# tokens, lr 1e-3 and the cosine length penalty on/off every step. ``reset.every=3`` in TOY
# falls on the boundary: one reset there, not two.
TWO = (
    "stages=[{name: a, steps: 3, optim: {lr: 3e-3}},"
    " {name: b, steps: 3, data: {tasks: [toy-even, math-gen]}, rollout: {max_new_tokens: 6},"
    " optim: {lr: 1e-3}, shaping: {length_penalty: 0.5, length_penalty_on_steps: 1,"
    " length_penalty_off_steps: 1}}]"
)


def test_two_stages_switch_at_boundary_and_resume_inside_stage_two(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    base = [*TOY, "checkpoint.milestones_every=0", TWO]
    run_training(load_config(None, [*base, f"run_dir={straight}"]), live=False)

    rows = {r["step"]: r for r in read_jsonl(straight / "metrics.jsonl")}
    assert sorted(rows) == list(range(7))
    assert [rows[s]["stage"] for s in range(7)] == [0, 0, 0, 0, 1, 1, 1]
    assert [rows[s]["optim/lr"] for s in range(1, 7)] == pytest.approx([3e-3] * 3 + [1e-3] * 3)
    assert all(rows[s]["response/length_max"] <= 4 for s in (1, 2, 3))
    assert all(rows[s]["response/length_max"] <= 6 for s in (4, 5, 6))
    assert max(rows[s]["response/length_max"] for s in (4, 5, 6)) > 4
    # the boundary: a reset after step 3, so step 4 starts with reference == policy
    assert rows[3]["reset"] == 1.0 and rows[3]["policy/kl"] > 0
    assert rows[4]["policy/kl"] == 0.0 and "reset" not in rows[4]
    events = [e for e in read_jsonl(straight / "events.jsonl") if e["event"] in ("reset", "stage")]
    assert [(e["event"], e["step"], e["stage"], e["stage_name"]) for e in events] == [
        ("stage", 0, 0, "a"),
        ("reset", 3, 1, "b"),
    ]
    assert events[1]["reason"] == "stage" and events[1]["reset_optimizer"] is True
    assert events[1]["settings"]["rollout.max_new_tokens"] == 6
    # the mix follows the stage: math-gen only from step 4
    uids = {r["step"]: r["uids"] for r in read_jsonl(straight / "samples.jsonl")}
    assert all(u.startswith("toy-even:") for s in (1, 2, 3) for u in uids[s])
    assert any(u.startswith("math-gen:") for s in (4, 5, 6) for u in uids[s])
    # shaping in stage b only, on at its steps 0 and 2 (run steps 4 and 6)
    assert [rows[s]["shaping/length_penalty_on"] for s in range(1, 7)] == [0, 0, 0, 1, 0, 1]
    for s in range(1, 7):
        shift = rows[s]["train/reward_shaped"] - rows[s]["train/reward"]
        assert shift == pytest.approx(rows[s]["shaping/length_penalty_mean"], abs=1e-6)
    assert rows[4]["shaping/length_penalty_mean"] < 0 and rows[5]["train/reward/math-gen"] >= 0

    # kill -9 inside stage b (after the checkpoint of step 4), resume, compare
    kill_after_checkpoint(killed, base, 4, 6)
    res = subprocess.run(
        [sys.executable, "-m", "prorl.cli", "train", "--resume", str(killed)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]

    d1, p1, t1 = _final(straight)
    d2, p2, t2 = _final(killed)
    assert d1.name == d2.name == ckpt.step_name(6)
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    s1, s2 = t1["optimizer"]["state"], t2["optimizer"]["state"]
    for i in s1:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(s1[i][key], s2[i][key]), (i, key)
    assert t1["optimizer"]["param_groups"][0]["lr"] == t2["optimizer"]["param_groups"][0]["lr"]
    assert _rows(straight / "metrics.jsonl") == _rows(killed / "metrics.jsonl")
    assert read_jsonl(straight / "samples.jsonl") == read_jsonl(killed / "samples.jsonl")
    ev1, ev2 = (
        [e for e in _rows(r / "events.jsonl") if e["event"] not in ("checkpoint", "resume")]
        for r in (straight, killed)
    )
    assert ev1 == ev2
    # the checkpoint holds the run's config (with its stages), not stage b's
    saved = ckpt.load_trainer(d2)
    assert saved["step"] == 6
    assert "stages" in (d2 / "config.yaml").read_text()


def test_prorl_v1_stages_preset_has_the_paper_shape():
    cfg = load_config("prorl-v1-stages")
    per_stage = [st.config_for_step(cfg, s.start)[1] for s in st.stage_spans(cfg)]
    assert cfg.steps == sum(s.steps for s in cfg.stages)
    assert [c.rollout.n for c in per_stage] == [16, 16, 32, 16, 16]
    assert [c.rollout.max_new_tokens for c in per_stage] == [8192] * 4 + [16384]
    assert [c.shaping.overlong for c in per_stage] == ["none", "none", "penalty", "none", "none"]
    assert ["ifeval-gen" in {t.name for t in c.data.tasks} for c in per_stage] == [
        False,
        True,
        True,
        True,
        True,
    ]
    assert st.stage_spans(cfg)[-1].end - st.stage_spans(cfg)[-1].start == 200


def test_display_names_the_stage(capsys):
    from prorl.display import Display

    plain = Display(4, 0, live=False)
    plain.set_stage("long 2/2")
    plain.step(0, {"train/reward": 0.5})
    assert "step 1/4 [long 2/2]  reward 0.500" in capsys.readouterr().out
    live = Display(4, 0, live=True)
    live.set_stage("[b]old 1/2")  # a name that looks like markup is shown as it is
    live.step(0, {"train/reward": 0.5})
    live.close()
    assert "train [[b]old 1/2]" in capsys.readouterr().out
