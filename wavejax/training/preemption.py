"""Stopping a training run cleanly on SIGTERM or SIGINT (preemptible Colab, TPU and cloud VMs).

`StopSignals` is a context manager around a training run. While it is active, SIGTERM and SIGINT
only record the signal; the training loop asks `requested(...)` between steps and, when it is True,
saves a checkpoint and raises `errors.Preempted`. A second signal restores the previous handlers and
delivers itself again, so a second Ctrl-C stops at once (without a checkpoint).

Handlers are installed only in the main thread (Python allows no other) and removed on exit. With
several JAX processes the processes must stop at the same step, so the local handlers are not used:
JAX's preemption sync service (started by `jax.distributed.initialize`, SIGTERM only) agrees on the
step (`jax.experimental.multihost_utils.reached_preemption_sync_point`).
"""

from __future__ import annotations

import itertools
import signal
import threading

import jax
from absl import logging
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)

# Every process calls `requested` once per training step, so this count is the same step id on all
# of them, and it keeps growing across folds, as the preemption sync protocol needs.
_SYNC_STEPS = itertools.count()


class StopSignals:
  """Records SIGTERM / SIGINT while active; `requested()` says whether training should stop."""

  def __init__(self, enabled: bool = True):
    self.enabled = enabled
    self.signum: int | None = None
    self.multiprocess = False
    self._previous: dict = {}

  def __enter__(self) -> StopSignals:
    if not self.enabled:
      return self
    if jax.process_count() > 1:
      self.multiprocess = True
      return self
    if threading.current_thread() is not threading.main_thread():
      logging.info("not in the main thread: SIGTERM/SIGINT are not turned into checkpoints")
      return self
    for signum in SIGNALS:
      previous = signal.getsignal(signum)
      if previous is None:  # installed outside Python: it could not be put back
        continue
      self._previous[signum] = previous
      signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    self._restore()

  def requested(self) -> bool:
    """True when training should save and stop before its next step. Call it once per step."""
    if self.multiprocess:
      if multihost_utils.reached_preemption_sync_point(next(_SYNC_STEPS)):
        self.signum = signal.SIGTERM
    return self.signum is not None

  @property
  def signal_name(self) -> str:
    return signal.Signals(self.signum).name if self.signum is not None else "no signal"

  def _handle(self, signum, frame) -> None:
    del frame
    if self.signum is None:
      self.signum = signum
      return
    self._restore()
    signal.raise_signal(signum)

  def _restore(self) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}
