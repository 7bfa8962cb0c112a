#!/usr/bin/env bash
# Behaviour check for refactors: run a fixed set of short training runs and write each run's
# metrics.jsonl (timings and throughput removed; they differ run to run) to OUT/<name>.jsonl.
# Run it before a change and after, then `diff -r BEFORE AFTER`: any difference is a change
# of behaviour. Variants cover the default step, mini-batches with frozen pi_old, KL,
# truncated IS, resets, stages and shaping on the tiny model; SMOLLM2=1 adds a 2-step
# cpu-smollm2 run (minutes).
#   bash scripts/same_metrics.sh /tmp/before
set -euo pipefail
out=${1:?usage: same_metrics.sh OUT_DIR}
py=${PRORL_PY:-.venv/bin/python}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stages="$work/stages.yaml"
cat > "$stages" <<'YAML'
seed: 1
model: {name: tiny, bf16: false}
tensorboard: false
data:
  tasks: [{name: toy-even, weight: 1}, {name: rg/leg_counting, weight: 1}]
  val_problems: 2
rollout: {prompts_per_step: 2, n: 4, max_new_tokens: 16, max_rounds: 2}
algo: {micro_batch_size: 4, mini_batches: 2, kl_coef: 0.01}
optim: {lr: 1.0e-4, warmup_steps: 2}
eval: {every: 2, n: 2}
verify: {workers: 1}
stages:
  - {name: a, steps: 2}
  - {name: b, steps: 2, rollout: {n: 6}, optim: {lr: 5.0e-5}, shaping: {overlong: penalty}}
  - {name: c, steps: 1, data: {tasks: [{name: toy-even, weight: 1}]}, reset_optimizer: false}
YAML
run() {  # name, then prorl train arguments
  local name=$1
  shift
  "$py" -m prorl.cli train --run-dir "$work/$name" "$@" > "$work/$name.log" 2>&1 \
    || { cat "$work/$name.log"; exit 1; }
  "$py" - "$work/$name/metrics.jsonl" > "$out/$name.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    row = json.loads(line)
    print(json.dumps({k: v for k, v in row.items()
                      if not k.startswith(("time/", "perf/")) and k != "time"}, sort_keys=True))
PY
  echo "$name: $(wc -l < "$out/$name.jsonl") rows"
}
run debug --preset debug
run minibatch-kl-tis --preset debug steps=4 algo.mini_batches=2 algo.kl_coef=0.01 \
  algo.truncated_is=true algo.micro_batch_size=4 reset.every=2 rollout.n=6
run gspo-rloo --preset debug algo.policy_loss=gspo algo.advantage=rloo algo.mini_batches=2
run stages --preset "$stages"
if [[ "${SMOLLM2:-0}" == 1 ]]; then
  run cpu-smollm2 --preset cpu-smollm2 steps=2 eval.every=0
fi
