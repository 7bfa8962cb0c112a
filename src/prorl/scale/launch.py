"""``Scale``: this process's place in a run, and the sampler, verifier executor and learner
it uses there (docs/scaling.md).

``Scale.start(cfg)`` then ``scale.join(train_rank)`` decide and set it up:
- one plain process (the default): nothing changes;
- a rank of a ``torchrun`` launch (``WORLD_SIZE`` > 1 in the environment): a gloo/NCCL
  learner process group, each rank sampling its share of the prompts with its own HF
  sampler;
- ``scale.backend=ray``: rollout and verifier workers are Ray actor pools driven by rank 0,
  and ``scale.learner_procs - 1`` further learner ranks run as Ray actors.

The RL step never knows which: it calls ``state.sampler``, ``state.scorer`` and, in the
update, ``state.learner``. Ray and torch.distributed are imported only when used.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from prorl.config import ConfigError
from prorl.device import learner_device
from prorl.sampling.base import Sampler
from prorl.scale.base import Learner, LearnerFailed

if TYPE_CHECKING:
    from prorl.scale.workers import ActorPool

RankMain = Callable[[Any], object]  # what a learner rank > 0 runs: main(cfg)


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def rank_scratch(rank: int, parent: Path | None = None) -> Path:
    """A new empty directory for learner rank ``rank`` > 0 to write into, first removing
    those that ranks killed earlier on this host left behind: Ray kills the learner actors
    of a stopped run and torchrun those of a failed one, and neither runs their cleanup.
    The name carries pid and host, so a directory is removed only when its owner is known
    to be dead (same host, pid gone); a live run's, or another machine's, is never touched."""
    parent = Path(parent or tempfile.gettempdir())
    host = _host_tag()
    for old in parent.glob(f"prorl-rank*@{host}-*"):
        m = re.fullmatch(rf"prorl-rank\d+-(\d+)@{host}-.+", old.name)
        if m and old.is_dir() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(old, ignore_errors=True)
    prefix = f"prorl-rank{rank}-{os.getpid()}@{host}-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def check_launch(cfg: Any) -> None:
    """Refuse, with one ConfigError, a launch this process cannot run: called first thing
    in ``run_training`` (before anything is loaded or written) and again by ``Scale.start``."""
    from prorl.scale.learner import env_world

    rank, world = env_world()
    s = cfg.scale
    if world > 1 and s.backend == "ray" and rank == 0 and "PRORL_RAY_LEARNER" not in os.environ:
        raise ConfigError(
            "scale.backend=ray starts its own learner ranks: launch it "
            "without torchrun (scale.learner_procs sets their number)"
        )
    if world > 1 and s.backend == "local" and s.learner_strategy == "fsdp2":
        raise ConfigError(
            "scale.learner_strategy=fsdp2: under torchrun every rank samples "
            "with its own policy, which FSDP2 shards; use scale.backend=ray "
            "scale.learner_procs=N without torchrun (rollout actors hold "
            "whole copies), or scale.learner_strategy=ddp"
        )
    if world > 1 and cfg.rollout.max_staleness > 0:
        raise ConfigError(
            f"rollout.max_staleness={cfg.rollout.max_staleness} under torchrun "
            f"(WORLD_SIZE={world}): asynchronous rollouts need one learner process; "
            "use max_staleness=0 with several learner processes"
        )
    if world > 1 and s.backend == "local" and cfg.rollout.sampler == "vllm":
        raise ConfigError(
            f"rollout.sampler=vllm under torchrun (WORLD_SIZE={world}): each rank would start "
            "its own in-process vLLM engine inside the learner process group, which is not "
            "supported; use scale.backend=ray scale.learner_procs=N without torchrun (vLLM "
            "runs in the rollout actors), or rollout.sampler=hf under torchrun"
        )


class Scale:
    """This process's place in a run (``start``, ``join``, ``close``) and the objects that
    differ with it: the sampler, the verifier executor, the scorer and the learner."""

    def __init__(self, cfg: Any, rank: int = 0, world: int = 1) -> None:
        self.cfg = cfg
        self.rank, self.world = rank, world
        self.followers: list[Any] = []  # Ray learner actors (rank 0 of a Ray process group)
        self.runs: list[Any] = []  # their run() refs
        self.follower_where: list[Any] = []  # their where() refs
        self.owns_ray = False
        self.closers: list[Callable[[], None]] = []
        # rank 0 of a Ray run: the rollout and verifier actors, in the order they started
        self.actor_pools: dict[str, ActorPool] = {}
        self._scratch: Path | None = None
        self.device = torch.device("cpu")  # where this rank's learner computes
        self._init_method = "env://"
        # torch.distributed initialised here (not by e.g. vLLM)
        self._owns_process_group = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def ray(self) -> bool:
        return bool(self.cfg.scale.backend == "ray")

    # -- start and stop

    @classmethod
    def start(cls, cfg: Any) -> Scale:
        """This process's place: its rank, its learner device and (rank 0 of a Ray run) the
        Ray cluster. ``join`` then brings the learner ranks together."""
        from prorl.scale.learner import env_world

        check_launch(cfg)
        rank, world = env_world()
        s = cfg.scale
        scale = cls(cfg, rank, world)
        procs = s.learner_procs if s.backend == "ray" else world
        scale.device = learner_device(cfg, procs)  # refuses a missing GPU: nothing started yet
        if s.backend == "ray" and rank == 0:
            scale._start_ray()
        return scale

    def join(self, rank_main: RankMain) -> None:
        """Rank 0 of a Ray run with ``scale.learner_procs`` > 1 starts the other learner
        ranks as Ray actors, each running ``rank_main(cfg)`` (the same training loop, in
        its own process); then every rank of K > 1 joins the learner process group."""
        if self.ray and self.is_main and self.cfg.scale.learner_procs > 1:
            self._start_followers(rank_main)
        if self.world > 1:
            from prorl.scale.learner import init_process_group

            self._owns_process_group = init_process_group(
                self.rank, self.world, self._init_method, self.device, self.cfg.scale.timeout_s
            )

    def _start_ray(self) -> None:
        import ray

        s = self.cfg.scale
        if ray.is_initialized():
            return
        if s.address is None:  # a private local cluster on loopback, sized to the job
            # Ray's memory monitor kills workers when the *machine* passes 95% memory, on
            # a shared box also because of other users' processes: the kernel decides.
            os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
            need = (s.rollout_workers + s.verifier_workers + s.learner_procs) * s.cpus_per_worker
            ray.init(
                num_cpus=max(os.cpu_count() or 1, int(need + 0.999)),
                include_dashboard=False,
                log_to_driver=True,
                _node_ip_address="127.0.0.1",
            )
        else:
            ray.init(address=s.address, log_to_driver=True)
        self.owns_ray = True

    def _start_followers(self, rank_main: RankMain) -> None:
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        s = self.cfg.scale
        self.world = s.learner_procs
        host = ray.util.get_node_ip_address()
        with socket.socket() as sock:  # a free port for the process group's rendezvous
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        self._init_method = f"tcp://{host}:{port}"
        bundle = {
            "CPU": s.cpus_per_worker,
            **({"GPU": s.gpus_per_worker} if s.gpus_per_worker else {}),
        }
        pg = placement_group([bundle] * (self.world - 1), strategy=s.placement)
        ray.get(pg.ready())
        self.closers.append(lambda: remove_placement_group(pg))
        actor: Any = ray.remote(LearnerRank)
        for r in range(1, self.world):
            strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=r - 1)
            env = {
                "RANK": str(r),
                "WORLD_SIZE": str(self.world),
                "PRORL_RAY_LEARNER": "1",
                "MASTER_ADDR": host,
                "MASTER_PORT": str(port),
            }
            a = actor.options(
                num_cpus=s.cpus_per_worker,
                num_gpus=s.gpus_per_worker,
                scheduling_strategy=strategy,
            ).remote(env)
            self.followers.append(a)
            self.follower_where.append(a.where.remote())  # answered before run() starts
            self.runs.append(a.run.remote(rank_main, self.cfg))

    def finish(self) -> None:
        """Wait for the Ray learner ranks to end their loops (their errors surface here)."""
        if self.runs:
            import ray

            ray.get(self.runs)
            self.runs = []

    def close(self) -> None:
        from prorl.scale.learner import close_process_group

        if self._owns_process_group:  # an in-process vLLM engine's own group is its to destroy
            close_process_group()
        if self.followers:
            import ray

            for a in self.followers:
                ray.kill(a)
            self.followers = []
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                close()
        if self.owns_ray:
            import ray

            ray.shutdown()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    @contextlib.contextmanager
    def learner_failures(self, writer: Any, state: Any) -> Iterator[None]:
        """A collective that fails (a rank died: gloo/NCCL raise RuntimeError) stops the run
        with an event and the checkpoint to resume from, instead of a bare traceback."""
        if self.world == 1:
            yield
            return
        try:
            yield
        except RuntimeError as e:
            from prorl.checkpoint import resume_point

            if isinstance(e, LearnerFailed):
                raise
            # the run directory is rank 0's (ranks > 0 may not see it): rank 0 names it
            last = resume_point(Path(self.cfg.run_dir)) if self.is_main else None
            first = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            writer.event(
                state.step + 1,
                "learner_failed",
                error=first,
                checkpoint=str(last) if last else None,
            )
            where = f"checkpoint {last}" if last else "no checkpoint yet"
            if not self.is_main:
                where = "rank 0 names the checkpoint"
            raise LearnerFailed(
                f"learner group failed during step {state.step + 1} ({first}); {where}: "
                f"continue with prorl train --resume {self.cfg.run_dir}"
            ) from e

    def placement(self) -> dict[str, Any] | None:
        """Rank 0 of a Ray run: where every actor and learner rank runs (node id, pid, GPU
        ids), for the ``placement`` event; None otherwise."""
        if not (self.ray and self.is_main):
            return None
        import ray

        from prorl.scale.workers import where

        out: dict[str, Any] = {kind: pool.where() for kind, pool in self.actor_pools.items()}
        me = {**where(), "device": str(self.device)}
        out["learner"] = [me, *ray.get(self.follower_where)]
        out["nodes"] = len({w["node"] for ws in out.values() for w in ws})
        return out

    def on_worker_event(self, report: Callable[..., Any]) -> None:
        """Ray actors replaced mid-step are reported as ``report(kind, **fields)``."""
        for pool in self.actor_pools.values():
            pool.on_event = report

    # -- the swapped objects

    def run_dir(self, run_dir: Path) -> Path:
        """Where this rank writes: the run directory on rank 0, an empty scratch directory
        on the others. Ranks > 0 never read the run directory: rank 0 reads checkpoints
        and broadcasts them (prorl.state), so it may be local to rank 0's node."""
        if self.is_main:
            return run_dir
        if self._scratch is None:
            self._scratch = rank_scratch(self.rank)
        return self._scratch

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on rank 0 (e.g. reading the run directory), its value on every rank; a
        failure raises on every rank (prorl.scale.learner.on_rank0; one process: ``fn()``)."""
        from prorl.scale.learner import on_rank0

        return on_rank0(fn, share=True)

    def sampler(self, local: Callable[[], Sampler], policy: Any) -> Sampler:
        inner: Sampler | None
        if self.ray:
            from prorl.scale.workers import RaySampler

            rollout = RaySampler(self.cfg, policy) if self.is_main else None
            if rollout is not None:
                self.closers.append(rollout.close)
                self.actor_pools["rollout"] = rollout.actor_pool
            inner = rollout
        else:
            inner = local()
            if hasattr(inner, "close"):  # an in-process vLLM engine ends with the run
                self.closers.append(inner.close)
        if self.world > 1:
            from prorl.scale.collective import CollectiveSampler

            return CollectiveSampler(inner, split=not self.ray)
        assert inner is not None  # one process is rank 0
        return inner

    def verifier_pool(self) -> contextlib.AbstractContextManager[Any]:
        cfg = self.cfg
        if not self.is_main:  # rank 0 scores for everyone
            return contextlib.nullcontext(None)
        if self.ray:
            from prorl.scale.workers import RayVerifierPool

            s = cfg.scale
            pool = RayVerifierPool(
                s.verifier_workers, cfg.verify.timeout_s, s.cpus_per_worker, s.placement
            )
            self.actor_pools["verifier"] = pool.actor_pool
            return pool
        from prorl.scoring import VerifierPool

        return VerifierPool(cfg.verify.workers, cfg.verify.timeout_s)

    def scorer(self, scorer: Any) -> Any:
        if self.world == 1:
            return scorer
        from prorl.scale.collective import CollectiveScorer

        return CollectiveScorer(scorer)

    @property
    def fsdp(self) -> bool:
        return self.world > 1 and self.cfg.scale.learner_strategy == "fsdp2"

    def shard(self, policy: Any, ref: Any | None) -> None:
        """FSDP2: shard the policy and the reference in place, before the optimizer sees
        the parameters (prorl.scale.fsdp). DDP and one process: nothing."""
        if self.fsdp:
            from prorl.scale.fsdp import shard_model

            shard_model(policy)
            if ref is not None:
                shard_model(ref, frozen=True)

    def learner(self, policy: Any) -> Learner | None:
        if self.world == 1:
            return None
        if self.fsdp:
            from prorl.scale.fsdp import FullyShardedLearner

            return FullyShardedLearner(policy)
        from prorl.scale.learner import DataParallel

        return DataParallel(policy)


class LearnerRank:
    """A learner rank > 0 as a Ray actor: the same training loop, in its own process."""

    def __init__(self, env: dict[str, str]) -> None:
        os.environ.update(env)  # its rank and rendezvous, before run() unpickles its main

    def where(self) -> dict[str, Any]:
        from prorl.scale.workers import where

        return where()

    def run(self, main: RankMain, cfg: Any) -> int:
        main(cfg)
        return int(os.environ["RANK"])
