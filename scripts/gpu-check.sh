#!/usr/bin/env bash
# The GPU checks prorl has not been able to run on its CPU-only machines, as one script for
# a bare CUDA machine with Python 3.12, PyTorch and transformers but no network
# (docs/gpu.md). Usage: bash scripts/gpu-check.sh [RESULTS_DIR]   (default gpu-check-results)
#
# It installs only the wheels it is given (PRORL_WHEELS, default .wheels/: prorl's
# dependencies a PyTorch image lacks, fetched beforehand with the `pip download` command in
# docs/gpu.md), runs prorl from this source tree (PYTHONPATH, nothing installed), and writes
# every result under RESULTS_DIR. Each part has its own time limit; all together stay under
# 8 minutes. Without a GPU it prints one line and exits 0, running nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! command -v nvidia-smi >/dev/null 2>&1 \
  || ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' >/dev/null 2>&1; then
  echo "gpu-check: no CUDA GPU here (nvidia-smi missing or torch.cuda.is_available() false); nothing run"
  exit 0
fi

OUT=${1:-gpu-check-results}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
LOG="$OUT/gpu-check.log"
SUMMARY="$OUT/summary.txt"
: >"$LOG"
: >"$SUMMARY"
start=$SECONDS
failed=0

# Tee'd into one log: a caller that can take back only a few files gets everything.
part() {  # part NAME SECONDS COMMAND...: run COMMAND under a time limit, record its outcome
  local name=$1 limit=$2 t=$SECONDS rc
  shift 2
  echo "== $name (limit ${limit}s)" | tee -a "$LOG"
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || failed=1
  echo "$name: exit $rc, $((SECONDS - t)) s" | tee -a "$SUMMARY"
}

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  git rev-parse HEAD 2>/dev/null || echo "not a git checkout"
  nvidia-smi
  "$PY" -c 'import sys, torch, transformers
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "transformers", transformers.__version__, "gpu", torch.cuda.get_device_name())'
} >"$OUT/env.txt" 2>&1

# The carried wheels go to a private folder ahead of the image's packages (--no-deps: the
# folder must hold every dependency the image lacks; --no-index: nothing is fetched).
WHEELS=${PRORL_WHEELS:-.wheels}
SITE=${TMPDIR:-/tmp}/prorl-gpu-check-site
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  part install-wheels 40 "$PY" -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
else
  echo "install-wheels: no wheels in $WHEELS; using the image's packages only" | tee -a "$SUMMARY"
fi
export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

# (i) the tests marked gpu (tests/test_gpu.py): the update on cuda, log-probs against the CPU
part pytest-gpu 130 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py
# (ii) the tiny model on CUDA (HF sampler, bf16 autocast, fp32 masters): SIGKILL, resume
part resume 130 "$PY" scripts/gpu_check.py resume "$OUT"
# (iii) learner throughput on a random Qwen2-0.5B-shaped model against the bf16 peak
part throughput 80 "$PY" scripts/gpu_check.py throughput "$OUT"
# (iv) the log-prob pass's memory, full logits against the chunked LM head, bf16 autocast
part logprob-memory 80 "$PY" bench/bench_logprob_memory.py --device cuda --bf16 \
  --tokens 8192 32768 --max-gb 100 --out "$OUT/logprob_memory.json"

rm -rf "$OUT/resume-runs"  # the runs' checkpoints: resume.json holds what they showed
echo "total: $((SECONDS - start)) s; $([ $failed -eq 0 ] && echo 'all parts passed' || echo 'SOME PARTS FAILED')" \
  | tee -a "$SUMMARY"
exit $failed
