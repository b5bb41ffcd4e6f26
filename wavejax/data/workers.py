"""Parallel per-file work with a progress line: decoding and inspecting a whole corpus.

`run_chunks` maps a module-level function over chunks of items on every core, keeping a bounded
number of chunks in flight so that results are consumed as they arrive. Large jobs run in worker
processes (`python -m wavejax.data.workers`, fed pickled chunks through a pipe): resampling holds
the GIL, and unlike `multiprocessing`'s spawn start these workers never re-import the caller's
main script. Small jobs, or any chunk whose worker process fails, run in threads. `Progress` logs
`done/total, rate, ETA` with absl logging at intervals (a progress bar without tqdm).
"""

from __future__ import annotations

import concurrent.futures
import importlib
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

from absl import logging

from wavejax import errors

# Jobs with at least this many items run in worker processes; smaller ones in threads, which
# start instantly (a worker process first imports numpy, scipy and soundfile).
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

  `function` must be a module-level function (worker processes import it by name) returning one
  result per item of its chunk, and should not raise for a bad item. `store` runs in the calling
  thread, in completion order.
  """
  chunks = [items[i:i + CHUNK_SIZE] for i in range(0, len(items), CHUNK_SIZE)]
  workers = resolve_workers(num_workers)
  progress = Progress(len(items), what)
  if workers == 1 or len(chunks) <= 1:
    for chunk in chunks:
      store(function(chunk, *args))
      progress.update(len(chunk))
  else:
    use_processes = len(items) >= PROCESS_MIN_ITEMS
    with _Executor(workers, use_processes) as executor:
      _run_bounded(executor, function, chunks, args, workers, store, progress)
  progress.finish()


def _run_bounded(executor, function, chunks, args, workers, store, progress) -> None:
  """Submits chunks with at most 2 x workers in flight; stores each result as it completes."""
  queue = iter(chunks)
  pending = set()

  def submit_next():
    chunk = next(queue, None)
    if chunk is not None:
      pending.add(executor.submit(function, chunk, args))

  for _ in range(2 * workers):
    submit_next()
  while pending:
    done, pending = concurrent.futures.wait(pending,
                                            return_when=concurrent.futures.FIRST_COMPLETED)
    for future in done:
      results = future.result()
      store(results)
      progress.update(len(results))
      submit_next()


class _Executor:
  """A thread pool whose threads each drive one worker process (or compute in-thread)."""

  def __init__(self, workers: int, use_processes: bool):
    self.pool = concurrent.futures.ThreadPoolExecutor(workers)
    self.use_processes = use_processes
    self.local = threading.local()
    self.processes: list[_WorkerProcess] = []
    self.lock = threading.Lock()
    self.failed = False

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.pool.shutdown(wait=True, cancel_futures=True)
    for process in self.processes:
      process.close()

  def submit(self, function, chunk, args):
    return self.pool.submit(self._call, function, chunk, args)

  def _call(self, function, chunk, args):
    if self.use_processes and not self.failed:
      try:
        return self._process().call(function, chunk, args)
      except (OSError, EOFError, pickle.PickleError, subprocess.SubprocessError) as e:
        with self.lock:
          if not self.failed:
            logging.warning("A worker process failed (%s: %s); continuing in threads",
                            type(e).__name__, e)
          self.failed = True
    return function(chunk, *args)

  def _process(self) -> _WorkerProcess:
    process = getattr(self.local, "process", None)
    if process is None:
      process = self.local.process = _WorkerProcess()
      with self.lock:
        self.processes.append(process)
    return process


class _WorkerProcess:
  """`python -m wavejax.data.workers`: runs `(module, function, chunk, args)` tasks from a pipe."""

  def __init__(self):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    self.process = subprocess.Popen([sys.executable, "-m", "wavejax.data.workers"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

  def call(self, function, chunk, args):
    task = (function.__module__, function.__qualname__, list(chunk), tuple(args))
    pickle.dump(task, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
    self.process.stdin.flush()
    status, value = pickle.load(self.process.stdout)
    if status != "ok":
      raise subprocess.SubprocessError(value)
    return value

  def close(self) -> None:
    try:
      pickle.dump(None, self.process.stdin)
      self.process.stdin.close()
      self.process.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
      self.process.kill()
      self.process.wait()


def worker_main() -> None:
  """The loop of a worker process: read a task from stdin, write `("ok", results)` to stdout.

  The process' own stdout is redirected to stderr first, so that nothing printed by a library
  can corrupt the result stream.
  """
  results_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
  os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
  tasks_in = sys.stdin.buffer
  while True:
    try:
      task = pickle.load(tasks_in)
    except EOFError:
      return
    if task is None:
      return
    module, name, chunk, args = task
    try:
      reply = ("ok", getattr(importlib.import_module(module), name)(chunk, *args))
    except Exception as e:  # pylint: disable=broad-except  (reported to the parent)
      reply = ("error", f"{type(e).__name__}: {e}")
    pickle.dump(reply, results_out, protocol=pickle.HIGHEST_PROTOCOL)
    results_out.flush()


def _clock(seconds: float) -> str:
  if seconds == float("inf"):
    return "?"
  seconds = int(round(seconds))
  return f"{seconds // 60}m{seconds % 60:02d}s"


if __name__ == "__main__":
  worker_main()
