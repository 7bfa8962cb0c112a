"""Studies: multi-part experiments (evaluate, train, evaluate checkpoints, ablate, report)
run by ``prorl reproduce`` and published under ``results/``."""
