"""Ray actors for rollouts and verification, and the driver-side objects that use them.

``RaySampler`` is a ``Sampler``: K rollout actors, each owning an ordinary sampler (HF or
vLLM, built by ``prorl.sampling.factory.make_sampler`` from the same config), get
interleaved shares of the prompts; results come back in prompt order. Samples are seeded per
prompt, so the split changes nothing. ``RayVerifierPool`` is a ``VerifierExecutor``: K
actors, each owning a one-process ``VerifierPool`` (hard per-item deadlines stay where they
were). Both hold their actors in an ``ActorPool``.

Faults: an actor that dies while holding work (``RayActorError``) is replaced in its
placement-group bundle, given the current weights, and its share is redone; the step goes
on. Each replacement is reported through ``on_event`` (``events.jsonl``). A share that kills
``MAX_REPLACEMENTS`` actors in a row raises: that is a bug, not bad luck.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import ray
from ray.exceptions import RayActorError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from prorl.scale.base import WorkerStartError
from prorl.types import Example, Sample, SamplingParams, Score

MAX_REPLACEMENTS = 3
EventFn = Callable[..., Any]


def where() -> dict[str, Any]:
    """Where this process runs: Ray node id, pid and the GPU ids Ray gave it."""
    return {
        "node": ray.get_runtime_context().get_node_id(),
        "pid": os.getpid(),
        "gpus": [str(g) for g in ray.get_gpu_ids()],
    }


class RolloutWorker:
    """One rollout actor: its own copy of the policy and a sampler over it."""

    def __init__(self, cfg: Any, threads: int) -> None:
        import torch

        from prorl.models import load_policy
        from prorl.sampling.factory import make_sampler

        torch.set_num_threads(max(1, threads))
        policy, tokenizer = load_policy(cfg.model.name, cfg.model.dtype)
        if cfg.scale.gpus_per_worker > 0:
            policy = policy.to("cuda")
        policy.eval()
        self.policy = policy
        self.sampler = make_sampler(cfg, policy, tokenizer)

    def where(self) -> dict[str, Any]:
        return where()

    def load(self, state_dict: dict[str, Any]) -> int:
        self.policy.load_state_dict(state_dict)
        self.sampler.update_weights(self.policy)
        return os.getpid()

    def generate(
        self, prompts: list[list[int]], n: int, params: SamplingParams, seeds: list[int]
    ) -> list[list[Sample]]:
        return self.sampler.generate(prompts, n, params, seeds)  # type: ignore[no-any-return]


class VerifierWorker:
    """One verifier actor: a local pool of one process with the usual per-item deadline."""

    def __init__(self, timeout_s: float) -> None:
        from prorl.scoring import VerifierPool

        self.pool = VerifierPool(1, timeout_s)

    def score_batch(self, items: list[Any]) -> list[Score]:
        return self.pool.score_batch(items)

    def where(self) -> dict[str, Any]:
        return where()


class ActorPool:
    """K Ray actors of one class in one placement group, replaced in place when they die."""

    def __init__(
        self,
        cls: type,
        args: tuple[Any, ...],
        k: int,
        cpus: float,
        gpus: float,
        strategy: str,
        kind: str,
    ) -> None:
        bundle = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
        self.pg = placement_group([bundle] * k, strategy=strategy)
        ray.get(self.pg.ready())
        self.remote: Any = ray.remote(cls)
        self.args, self.cpus, self.gpus, self.kind = args, cpus, gpus, kind
        self.actors = [self._spawn(i) for i in range(k)]
        self.on_event: EventFn | None = None
        self.replacements = 0
        self.where()  # every actor constructed, or the first one's error

    def _spawn(self, i: int) -> Any:
        strategy = PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i)
        opts = {"num_cpus": self.cpus, "num_gpus": self.gpus, "scheduling_strategy": strategy}
        return self.remote.options(**opts).remote(*self.args)

    def replace(self, i: int, error: BaseException) -> Any:
        """A fresh actor in bundle ``i`` (the dead one's resources are free again)."""
        self.replacements += 1
        self.actors[i] = self._spawn(i)
        if self.on_event is not None:
            self.on_event(
                "worker_replaced", worker=self.kind, index=i, error=str(error).splitlines()[0]
            )
        return self.actors[i]

    def run(
        self,
        shares: list[Any],
        call: Callable[[Any, Any], Any],
        prepare: Callable[[Any], None] | None = None,
    ) -> list[Any]:
        """``call(actor_i, share_i)`` for every non-empty share at once; a share whose actor
        dies is redone on its replacement (after ``prepare(new_actor)``)."""
        refs = {i: call(self.actors[i], s) for i, s in enumerate(shares) if s is not None}
        out: list[Any] = [None] * len(shares)
        tries = dict.fromkeys(refs, 0)
        while refs:
            ready, _ = ray.wait(list(refs.values()), num_returns=1)
            i = next(j for j, r in refs.items() if r == ready[0])
            try:
                out[i] = ray.get(ready[0])
                del refs[i]
            except RayActorError as e:
                if e.actor_init_failed:  # its replacement would fail the same way
                    raise start_error(self.kind, i, e) from e
                tries[i] += 1
                if tries[i] > MAX_REPLACEMENTS:
                    raise RuntimeError(f"{self.kind} share {i} killed {tries[i]} workers") from e
                actor = self.replace(i, e)
                if prepare is not None:
                    prepare(actor)
                refs[i] = call(actor, shares[i])
        return out

    def where(self) -> list[dict[str, Any]]:
        """Each actor's node, pid and GPUs (for the run's ``placement`` event); waits for
        every actor's constructor, and raises ``WorkerStartError`` if one failed."""
        out = []
        for i, a in enumerate(self.actors):
            try:
                out.append(ray.get(a.where.remote()))
            except RayActorError as e:
                if not e.actor_init_failed:
                    raise
                raise start_error(self.kind, i, e) from e
        return out

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)
        remove_placement_group(self.pg)


def start_error(kind: str, index: int, error: RayActorError) -> Exception:
    """A one-line ``WorkerStartError`` carrying the constructor's own exception line."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return WorkerStartError(
        f"{kind} worker {index} could not start: {lines[-1] if lines else error}"
    )


class RaySampler:
    """A ``Sampler`` over K Ray rollout actors (see the module docstring)."""

    def __init__(self, cfg: Any, policy: Any) -> None:
        s = cfg.scale
        self.actor_pool = ActorPool(
            RolloutWorker,
            (cfg, int(s.cpus_per_worker)),
            s.rollout_workers,
            s.cpus_per_worker,
            s.gpus_per_worker,
            s.placement,
            "rollout",
        )
        self.weights: Any = None
        self.update_weights(policy)

    @property
    def workers(self) -> list[Any]:
        return self.actor_pool.actors

    def update_weights(self, model: Any) -> None:
        self.load_state_dict(model.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """One copy of the state dict in the object store, loaded by every worker."""
        t = time.monotonic()
        self.weights = ray.put({k: v.detach().cpu() for k, v in state.items()})
        self.actor_pool.run(
            [0] * len(self.workers), lambda a, _: a.load.remote(self.weights), self._prepare
        )
        self.weights_s = time.monotonic() - t

    def _prepare(self, actor: Any) -> None:
        actor.load.remote(self.weights)  # runs before the redone share: actor calls are ordered

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seed: int | Sequence[int],
    ) -> list[list[Sample]]:
        from prorl.sampling.base import per_prompt_seeds

        seeds = per_prompt_seeds(seed, len(prompts))
        k = len(self.workers)
        owned = [list(range(r, len(prompts), k)) for r in range(k)]
        shares = [
            ([list(prompts[i]) for i in ids], [seeds[i] for i in ids]) if ids else None
            for ids in owned
        ]
        results = self.actor_pool.run(
            shares, lambda a, sh: a.generate.remote(sh[0], n, params, sh[1]), self._prepare
        )
        out: list[list[Sample]] = [[] for _ in prompts]
        for ids, got in zip(owned, results, strict=True):
            for i, group in zip(ids, got or [], strict=True):
                out[i] = group
        return out

    def close(self) -> None:
        self.actor_pool.close()


class RayVerifierPool:
    """A ``VerifierExecutor`` over K Ray verifier actors: contiguous shares of each batch."""

    def __init__(self, workers: int, timeout_s: float, cpus: float, strategy: str) -> None:
        self.actor_pool = ActorPool(
            VerifierWorker, (timeout_s,), workers, cpus, 0, strategy, "verifier"
        )

    def score_batch(self, items: Sequence[Any]) -> list[Score]:
        k = len(self.actor_pool.actors)
        bounds = [len(items) * r // k for r in range(k + 1)]
        shares = [list(items[bounds[r] : bounds[r + 1]]) or None for r in range(k)]
        results = self.actor_pool.run(shares, lambda a, sh: a.score_batch.remote(sh))
        return [s for part in results for s in (part or [])]

    def score(
        self, target: Any, responses: Sequence[str], examples: Sequence[Example]
    ) -> list[Score]:
        return self.score_batch([(target, r, e) for r, e in zip(responses, examples, strict=True)])

    def close(self) -> None:
        self.actor_pool.close()

    def __enter__(self) -> RayVerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
