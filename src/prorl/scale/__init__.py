"""Scaling out: which Sampler, verifier executor and learner a run uses (docs/scaling.md).

- ``prorl.scale.base``: the ``Learner`` protocol the update and the checkpoint see, and the
  errors that stop a scaled-out run;
- ``prorl.scale.launch``: ``Scale``, this process's place (one process, a ``torchrun`` rank,
  or a Ray run's rank) and the objects it swaps in;
- ``prorl.scale.learner``: the learner process group (torch.distributed) and DDP;
- ``prorl.scale.fsdp``: FSDP2 over the same process group;
- ``prorl.scale.collective``: the sampler and scorer seen alike by every rank;
- ``prorl.scale.workers``: the Ray actor pools for rollouts and verification.
"""

from prorl.scale.base import Learner, LearnerFailed, WorkerStartError
from prorl.scale.launch import Scale, check_launch

__all__ = ["Learner", "LearnerFailed", "Scale", "WorkerStartError", "check_launch"]
