"""Parallel per-file work with a progress line: decoding and inspecting a whole corpus.

`run_chunks` maps a module-level function over chunks of items in worker processes (for large
jobs: resampling holds the GIL) or threads, keeping a bounded number of chunks in flight so that
results are consumed as they arrive. `Progress` logs `done/total, rate, ETA` with absl logging at
intervals (a progress bar without a tqdm dependency).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool

from absl import logging

from wavejax import errors

# Jobs with at least this many items run in worker processes; smaller ones in threads, which
# start instantly (a spawned worker first imports numpy, scipy and the caller's main module).
PROCESS_MIN_ITEMS = 2000
CHUNK_SIZE = 16


class Progress:
  """Counts finished items and logs `what: done/total (pct), rate, ETA` every `interval_s`.

  Usage::

    progress = Progress(len(paths), "Decoding ravdess")
    for path in paths:
      ...
      progress.update()
    progress.finish()
  """

  def __init__(self, total: int, what: str, interval_s: float = 10.0, unit: str = "files"):
    self.total, self.what, self.interval_s, self.unit = total, what, interval_s, unit
    self.done = 0
    self._lock = threading.Lock()
    self._start = time.perf_counter()
    self._last_log = self._start

  def update(self, count: int = 1) -> None:
    with self._lock:
      self.done += count
      now = time.perf_counter()
      if now - self._last_log >= self.interval_s and self.done < self.total:
        self._last_log = now
        logging.info("%s", self.line(now))

  def finish(self) -> None:
    logging.info("%s", self.line(time.perf_counter()))

  def line(self, now: float) -> str:
    elapsed = max(now - self._start, 1e-9)
    rate = self.done / elapsed
    percent = 100.0 * self.done / self.total if self.total else 100.0
    remaining = (self.total - self.done) / rate if rate > 0 else float("inf")
    return (f"{self.what}: {self.done}/{self.total} {self.unit} ({percent:.0f}%), "
            f"{rate:.1f} {self.unit}/s, elapsed {_clock(elapsed)}, ETA {_clock(remaining)}")


def resolve_workers(num_workers: int | None) -> int:
  """`num_workers`, or every core this process may use (at most 32) when None or 0."""
  if num_workers:
    if num_workers < 0:
      raise errors.ConfigError(f"config.data.num_workers={num_workers} must be >= 0")
    return int(num_workers)
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:
    cores = os.cpu_count() or 1
  return max(1, min(32, cores))


def run_chunks(function: Callable, items: Sequence, args: tuple, *, what: str,
               num_workers: int | None = None, store: Callable[[list], None]) -> None:
  """Calls `store(function(chunk, *args))` for consecutive chunks of `items`, in parallel.

  `function` must be a module-level function returning one result per item of its chunk (so it
  can run in a spawned process) and should not raise for a bad item. Results are stored in
  completion order. If worker processes cannot run (e.g. the main module cannot be re-imported),
  the job is redone in threads.
  """
  chunks = [items[i:i + CHUNK_SIZE] for i in range(0, len(items), CHUNK_SIZE)]
  workers = resolve_workers(num_workers)
  progress = Progress(len(items), what)

  def counted(results):
    store(results)
    progress.update(len(results))

  use_processes = workers > 1 and len(items) >= PROCESS_MIN_ITEMS
  try:
    _run(function, chunks, args, workers, counted, use_processes)
  except BrokenProcessPool as e:
    logging.warning("%s: worker processes failed (%s); redoing the work in threads", what, e)
    progress = Progress(len(items), what)
    _run(function, chunks, args, workers, counted, False)
  progress.finish()


def _run(function, chunks, args, workers, store, use_processes) -> None:
  """Runs `function` over `chunks` with at most 2 x workers chunks in flight."""
  if workers == 1:
    for chunk in chunks:
      store(function(chunk, *args))
    return
  if use_processes:
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"))
  else:
    pool = concurrent.futures.ThreadPoolExecutor(workers)
  with pool:
    queue = iter(chunks)
    pending = set()

    def submit_next():
      chunk = next(queue, None)
      if chunk is not None:
        pending.add(pool.submit(function, chunk, *args))

    for _ in range(2 * workers):
      submit_next()
    while pending:
      done, pending = concurrent.futures.wait(
          pending, return_when=concurrent.futures.FIRST_COMPLETED)
      for future in done:
        store(future.result())
        submit_next()


def _clock(seconds: float) -> str:
  if seconds == float("inf"):
    return "?"
  seconds = int(round(seconds))
  return f"{seconds // 60}m{seconds % 60:02d}s"
