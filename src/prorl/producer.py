"""Asynchronous rollouts with a fixed lag (``rollout.max_staleness``).

A background thread draws step ``t``'s rollouts from the policy of step ``t - lag`` (the
weights at the start of that step) while the trainer updates on earlier steps, so generation
and the update overlap. The lag is fixed, not "at most": which policy draws which step is a
function of the step alone, so a run is deterministic and its staleness bound holds by
construction (the first ``lag`` steps are drawn from the initial policy, with less lag).

The trainer corrects for the lag through the sampler's log-probs: truncated importance
sampling weighs each token by ``pi_old / pi_sampler`` (``algo.truncated_is``), or the ratio
itself starts from the sampler's log-probs (``algo.old_logprobs: sampler``).

Jobs run in the order they were queued (weights, then the steps they draw), one at a time,
so the task mixture's cursor advances exactly as in the synchronous loop.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prorl.collect import StepRollouts
from prorl.mixture import TaskMixture

Collect = Callable[[int, int], StepRollouts]  # (step, version) -> that step's rollouts
LoadWeights = Callable[[dict[str, Any]], None]  # a policy snapshot -> into the sampler


THREAD_NAME = "prorl-rollouts"


class ProducerFailed(RuntimeError):
    """The rollout thread raised; the trainer stops with its error."""


class RolloutProducer:
    """Draws steps ahead of the trainer, ``lag`` policy versions behind it.

    ``start(step, weights)``, then per step ``take(step)`` -> update ->
    ``publish(step + 1, weights)``. ``drain()`` waits for the queued steps (a checkpoint
    stores them); ``redraw()`` draws the queued steps again from the newest policy (after a
    reset, with ``rollout.on_reset: redraw``); ``exclusive()`` holds the thread between jobs
    (validation on a sampler the thread shares). ``end``: no step at or past it is drawn."""

    def __init__(
        self, collect: Collect, load_weights: LoadWeights, lag: int, mixture: TaskMixture, end: int
    ) -> None:
        if lag < 1:
            raise ValueError(f"the lag must be >= 1, got {lag}")
        self.collect, self.load_weights = collect, load_weights
        self.lag, self.mixture, self.end = lag, mixture, end
        self.version = -1  # the newest policy published
        self.next_step = 0  # the next step to queue
        self.redrawn_groups = 0  # prompt groups drawn again after resets (cumulative)
        self._jobs: queue.Queue[tuple[str, int, Any] | None] = queue.Queue()
        self._done: dict[int, StepRollouts] = {}
        self._pending = 0  # jobs queued and not finished
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._busy = threading.Lock()  # held while a job runs
        self._weights: dict[str, Any] | None = None  # the snapshot the sampler holds
        self._closing = False  # close(): the queued jobs are skipped
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)

    # --- the trainer's side

    def start(self, step: int, weights: dict[str, Any], restored: Sequence[StepRollouts]) -> None:
        """Begin at ``step`` with the policy of that step; ``restored``: finished steps a
        checkpoint carried (``step``, ``step + 1``, ...), used as they are."""
        for r in restored:
            self._done[r.step] = r
        self.next_step = step + len(restored)
        self._thread.start()
        self.publish(step, weights)

    def publish(self, version: int, weights: dict[str, Any] | None) -> None:
        """The policy at the start of step ``version`` (``weights``; None: unchanged since
        the last one). It draws every step up to ``version + lag`` not yet queued."""
        self.version = version
        if weights is not None:
            self._put(("weights", version, weights))
        while self.next_step <= version + self.lag and self.next_step < self.end:
            self._put(("collect", self.next_step, version))
            self.next_step += 1

    def take(self, step: int) -> StepRollouts:
        """Step ``step``'s rollouts, waiting for them if they are still being drawn."""
        with self._cond:
            self._cond.wait_for(lambda: step in self._done or self._error is not None)
            if step not in self._done:
                self._raise()
            return self._done.pop(step)

    def drain(self) -> list[StepRollouts]:
        """Wait until every queued step is drawn; the finished steps, in order (kept)."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending == 0 or self._error is not None)
            self._raise()
            return [self._done[s] for s in sorted(self._done)]

    def redraw(self) -> int:
        """Draw again, from the newest policy, every finished or queued step that an older
        policy drew (and the steps after it, whose prompts followed it in the mixture): the
        mixture rewinds, so they get the same prompts as before. Returns the number of
        prompt groups drawn again (also added to ``redrawn_groups``)."""
        stale = [r for r in self.drain() if r.version < self.version]
        if not stale:
            return 0
        first = stale[0]
        dropped = [self._done.pop(s) for s in sorted(self._done) if s >= first.step]
        self.mixture.load_state_dict({"cursor": first.cursor_before})  # the thread is idle
        self.next_step = first.step
        self.publish(self.version, None)
        count = sum(len(r.sampled) for r in dropped)
        self.redrawn_groups += count
        return count

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the thread between two jobs; the sampler gets its snapshot back after."""
        with self._busy:
            yield
            if self._weights is not None:
                self.load_weights(self._weights)

    def close(self, wait: bool = True) -> None:
        """Stop after the job running now (queued ones are dropped: the run is ending);
        ``wait``: until that job ends (else the daemon thread ends with the process)."""
        self._closing = True
        if self._thread.is_alive():
            self._jobs.put(None)
            if wait:
                self._thread.join()

    # --- the thread

    def _put(self, job: tuple[str, int, Any]) -> None:
        with self._cond:
            self._pending += 1
        self._jobs.put(job)

    def _raise(self) -> None:
        if self._error is not None:
            raise ProducerFailed(f"drawing rollouts failed: {self._error!r}") from self._error

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._closing:
                continue
            kind, n, payload = job
            try:
                with self._busy:
                    if kind == "weights":
                        self.load_weights(payload)
                        self._weights = payload
                    else:
                        done = self.collect(n, payload)
                with self._cond:
                    if kind == "collect":
                        self._done[n] = done
                    self._pending -= 1
                    self._cond.notify_all()
            except BaseException as e:  # handed to the trainer, which stops with it
                with self._cond:
                    self._error = e
                    self._cond.notify_all()
                return
