"""Sharding a grid of independent runs over many workers that share one directory.

A sweep is a grid of cells, each one independent run with its own result file in a shared workdir
(Table 1: one training run per (model, task, learning rate, seed, fold)). Workers coordinate through
that directory only, so any launcher works: a Slurm job array, a Kubernetes indexed job, GNU
parallel, N background processes on one machine (docs/sweeps.md).

- `Grid`: the sorted cell list. `Grid.shard(shard)` is worker I's share of N: every N-th cell of the
  sorted list from cell I, a pure function of the cells and (I, N); consecutive cells (the folds of
  one run) go to different workers, so shards balance.
- `parse_shard("I/N")`, `shard_from_env()`, `resolve_shard()`: this worker's index and count from
  the flag or from the launcher's variables (`SLURM_ARRAY_TASK_ID`, `JOB_COMPLETION_INDEX`).
- Results are written with `wavejax.atomic` (temporary file + rename): readers see the old file or
  the whole new one, and a writer that fails leaves nothing.
- `acquire_lock`: one lock file per cell, created with O_CREAT|O_EXCL, holding the owner's host, pid
  and start time. The owner refreshes its mtime (a heartbeat) while it runs; a lock is stale when
  the heartbeat is older than the timeout, or at once when its owner ran on this host (same pid
  namespace) and that process is gone. A stale lock is taken over under a short-lived `.break`
  file, so of several workers that find it stale only one takes it.
- `run_cells`: one worker's loop: skips complete cells, runs free ones under their lock, leaves
  cells that live workers hold to them (or waits for them), and reports what it did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence

from absl import logging

from wavejax import atomic, errors

HOST = atomic.HOST
DEFAULT_LOCK_TIMEOUT_S = 3 * 3600.0
BREAKER_TIMEOUT_S = 60.0  # a `.break` file older than this was left by a worker that died


# ------------------------------------------------------------------------------------------------
# Shards


@dataclasses.dataclass(frozen=True)
class Shard:
  """Worker `index` (0-based) of `count`; `source` says where it came from (for the log)."""
  index: int
  count: int
  source: str = "--shard"

  def __str__(self) -> str:
    return f"{self.index}/{self.count}"


WHOLE = Shard(0, 1, "default: the whole grid")


def make_shard(index: int, count: int, source: str) -> Shard:
  if count < 1:
    raise errors.SweepError(f"{source}: the number of shards is {count}; it must be >= 1")
  if not 0 <= index < count:
    raise errors.SweepError(f"{source}: shard index {index} is outside 0..{count - 1} "
                            "(indices are 0-based: --shard=0/N ... --shard=N-1/N)")
  return Shard(index, count, source)


def parse_shard(text: str, source: str = "--shard") -> Shard:
  """"I/N" -> Shard(I, N): worker I (0-based) of N."""
  where = f"{source}={text!r}"
  parts = str(text).strip().split("/")
  try:
    index, count = (int(p) for p in parts) if len(parts) == 2 else (None, None)
  except ValueError:
    index = count = None
  if index is None:
    raise errors.SweepError(f"{where}: expected I/N, this worker's 0-based index and the number "
                            "of workers, e.g. --shard=0/4")
  return make_shard(index, count, where)


def _env_int(env: Mapping[str, str], name: str) -> int | None:
  value = env.get(name)
  if value is None or not value.strip():
    return None
  try:
    return int(value)
  except ValueError:
    raise errors.SweepError(f"${name}={value!r} is not an integer; unset it or pass "
                            "--shard=I/N") from None


def _slurm_shard(env: Mapping[str, str], num_shards: int | None) -> Shard:
  task, low = _env_int(env, "SLURM_ARRAY_TASK_ID"), _env_int(env, "SLURM_ARRAY_TASK_MIN") or 0
  high, step = _env_int(env, "SLURM_ARRAY_TASK_MAX"), _env_int(env, "SLURM_ARRAY_TASK_STEP") or 1
  count = _env_int(env, "SLURM_ARRAY_TASK_COUNT")
  source = f"SLURM_ARRAY_TASK_ID={task}"
  span = None if high is None else (high - low) // step + 1
  if (span is not None and count is not None and span != count) or (task - low) % step:
    raise errors.SweepError(
        f"{source}: the job array is not a range (SLURM_ARRAY_TASK_MIN={low}, MAX={high}, "
        f"COUNT={count}); submit it with --array=0-<N-1> or pass --shard=I/N")
  count = count or span
  if count is None:
    count = num_shards
    if count is None:
      raise errors.SweepError(f"{source}: Slurm did not give the array size; pass --num_shards=N")
  elif num_shards is not None and num_shards != count:
    raise errors.SweepError(f"{source}: --num_shards={num_shards} but the Slurm array has {count} "
                            "tasks; drop --num_shards")
  return make_shard((task - low) // step, count, f"{source} of {count}")


def shard_from_env(environ: Mapping[str, str] | None = None,
                   num_shards: int | None = None) -> Shard | None:
  """This worker's shard from a launcher's variables, or None outside an array job.

  Slurm job arrays: `SLURM_ARRAY_TASK_ID` relative to `SLURM_ARRAY_TASK_MIN` (and `_STEP`), of
  `SLURM_ARRAY_TASK_COUNT` (or MAX - MIN + 1) tasks. Kubernetes indexed jobs: `JOB_COMPLETION_INDEX`
  of `num_shards` (the job's `completions`, which Kubernetes does not export).
  """
  env = os.environ if environ is None else environ
  if _env_int(env, "SLURM_ARRAY_TASK_ID") is not None:
    return _slurm_shard(env, num_shards)
  index = _env_int(env, "JOB_COMPLETION_INDEX")
  if index is not None:
    if num_shards is None:
      raise errors.SweepError(f"JOB_COMPLETION_INDEX={index} (a Kubernetes indexed job): pass "
                              "--num_shards=<the job's completions>")
    return make_shard(index, num_shards, f"JOB_COMPLETION_INDEX={index} of {num_shards}")
  return None


def resolve_shard(shard: str | None = None, num_shards: int | None = None,
                  environ: Mapping[str, str] | None = None) -> Shard:
  """The `--shard=I/N` flag if given, else the launcher's variables, else the whole grid."""
  if shard:
    chosen = parse_shard(shard)
    if num_shards is not None and num_shards != chosen.count:
      raise errors.SweepError(f"--shard={shard} and --num_shards={num_shards} disagree; drop "
                              "--num_shards")
    return chosen
  chosen = shard_from_env(environ, num_shards)
  if chosen is None and num_shards not in (None, 1):
    raise errors.SweepError(f"--num_shards={num_shards} needs this worker's index: pass "
                            "--shard=I/N or run it as an array job (SLURM_ARRAY_TASK_ID, "
                            "JOB_COMPLETION_INDEX)")
  return chosen or WHOLE


# ------------------------------------------------------------------------------------------------
# The grid


def _format(value) -> str:
  return f"{value:g}" if isinstance(value, float) else str(value)


class Grid:
  """Cells (tuples, e.g. namedtuples) sorted and without duplicates; `names` label their fields
  (default: the namedtuple's fields)."""

  def __init__(self, cells: Iterable[tuple], names: Sequence[str] | None = None):
    self.cells = tuple(sorted(set(cells)))
    if names is None:
      first = self.cells[0] if self.cells else ()
      names = getattr(first, "_fields", [f"#{i}" for i in range(len(first))])
    self.names = tuple(names)

  def __len__(self) -> int:
    return len(self.cells)

  def shard(self, shard: Shard) -> list:
    """Cells I, I+N, I+2N, ... of the sorted list."""
    return list(self.cells[shard.index::shard.count])

  def fingerprint(self) -> str:
    """A short hash of the cell list: workers of one sweep must log the same one."""
    text = json.dumps([[_format(v) for v in cell] for cell in self.cells])
    return hashlib.sha1(text.encode()).hexdigest()[:10]

  def describe(self, cell: tuple) -> str:
    return " ".join(f"{n}={_format(v)}" for n, v in zip(self.names, cell))

  def describe_many(self, cells: Iterable[tuple]) -> list[str]:
    """One line per run of cells that differ only in their last field: "a=1 b=2 fold=1,3,5"."""
    groups: dict[tuple, list] = {}
    for cell in cells:
      groups.setdefault(tuple(cell[:-1]), []).append(cell[-1])
    return [" ".join([*(f"{n}={_format(v)}" for n, v in zip(self.names, prefix)),
                      f"{self.names[-1]}={','.join(_format(v) for v in last)}"])
            for prefix, last in groups.items()]


# ------------------------------------------------------------------------------------------------
# Locks


def _pid_namespace() -> str:
  try:
    return os.readlink("/proc/self/ns/pid")
  except OSError:
    return ""


PID_NAMESPACE = _pid_namespace()
_HELD: set[str] = set()  # tokens of the locks this process holds


@dataclasses.dataclass(frozen=True)
class Owner:
  """Who holds a lock: written into the lock file as JSON."""
  host: str
  pid: int
  started: float
  token: str = ""
  pid_namespace: str = ""
  cell: str = ""

  @classmethod
  def me(cls, cell: str = "") -> Owner:
    return cls(HOST, os.getpid(), time.time(), uuid.uuid4().hex, PID_NAMESPACE, cell)

  def __str__(self) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
    return f"{self.host} pid {self.pid} (since {started})"


def read_owner(path) -> Owner | None:
  """The owner written in a lock file; None if there is no lock. An unreadable (just created, or
  damaged) lock gives an owner on an unknown host, judged by its age only."""
  path = pathlib.Path(path)
  try:
    text = path.read_text()
    mtime = path.stat().st_mtime
  except FileNotFoundError:
    return None
  try:
    data = json.loads(text)
    return Owner(**{f.name: data[f.name] for f in dataclasses.fields(Owner) if f.name in data})
  except (ValueError, TypeError, KeyError):
    return Owner("?", 0, mtime)


def pid_alive(pid: int) -> bool:
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def stale_reason(path, owner: Owner | None, timeout_s: float, now: float | None = None
                 ) -> str | None:
  """Why the lock at `path` (held by `owner`) is stale, or None while its owner may be alive."""
  try:
    heartbeat = pathlib.Path(path).stat().st_mtime
  except FileNotFoundError:
    return "it is gone"
  if owner is not None and owner.host == HOST and owner.pid_namespace == PID_NAMESPACE:
    if not pid_alive(owner.pid):
      return f"its process {owner.pid} on this host has exited"
    if owner.pid == os.getpid() and owner.token not in _HELD:
      return f"an earlier process with this pid ({owner.pid}) left it"
  age = (time.time() if now is None else now) - heartbeat
  if age > timeout_s:
    return f"no heartbeat for {age:.0f} s (lock timeout {timeout_s:g} s)"
  return None


def holds(path) -> bool:
  """True when this process holds the lock `path` (e.g. a sweep cell's, around its training)."""
  owner = read_owner(path)
  return owner is not None and owner.pid == os.getpid() and owner.token in _HELD


class Lock:
  """A held lock file; refreshes its mtime every `heartbeat_s` until `release()`."""

  def __init__(self, path: pathlib.Path, owner: Owner, heartbeat_s: float):
    self.path, self.owner = path, owner
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True,
                                    name=f"heartbeat {path}")
    self._thread.start()

  def _beat(self, heartbeat_s: float) -> None:
    while not self._stop.wait(heartbeat_s):
      current = read_owner(self.path)
      if current is None or current.token != self.owner.token:
        logging.warning("lost the lock %s (now %s); another worker may run this cell too",
                        self.path, current or "absent")
        return
      with contextlib.suppress(OSError):
        os.utime(self.path)

  def release(self) -> None:
    """Stops the heartbeat and removes the lock file if it is still this owner's."""
    self._stop.set()
    self._thread.join()
    _HELD.discard(self.owner.token)
    current = read_owner(self.path)
    if current is not None and current.token == self.owner.token:
      self.path.unlink(missing_ok=True)

  def __enter__(self) -> Lock:
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def _create(path: pathlib.Path, cell: str, heartbeat_s: float) -> Lock | None:
  owner = Owner.me(cell)
  _HELD.add(owner.token)  # before the file exists: a lock with this pid is never judged stale
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
  except FileExistsError:
    _HELD.discard(owner.token)
    return None
  with open(fd, "w", encoding="utf-8") as f:
    json.dump(dataclasses.asdict(owner), f)
    f.flush()
    os.fsync(f.fileno())
  return Lock(path, owner, heartbeat_s)


@contextlib.contextmanager
def _breaking(path: pathlib.Path):
  """Yields True to the one worker allowed to remove the stale lock `path` now, else False."""
  breaker = path.with_name(path.name + ".break")
  try:
    os.close(os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
  except FileExistsError:
    with contextlib.suppress(FileNotFoundError):
      if time.time() - breaker.stat().st_mtime > BREAKER_TIMEOUT_S:
        breaker.unlink()
    yield False
    return
  try:
    yield True
  finally:
    breaker.unlink(missing_ok=True)


def acquire_lock(path, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S, cell: str = "",
                 heartbeat_s: float | None = None) -> Lock | None:
  """Takes the lock file `path`, or returns None while another live worker holds it.

  A stale lock (see `stale_reason`) is taken over, with a warning naming its old owner.
  `heartbeat_s` defaults to min(60 s, timeout / 4).
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  heartbeat_s = heartbeat_s or min(60.0, timeout_s / 4)
  lock = _create(path, cell, heartbeat_s)
  if lock is not None or stale_reason(path, read_owner(path), timeout_s) is None:
    return lock
  with _breaking(path) as allowed:
    if not allowed:
      return None
    owner = read_owner(path)  # again, now that no other worker can break it
    reason = stale_reason(path, owner, timeout_s)
    if reason is None:
      return None
    if owner is not None:
      logging.warning("taking over the lock %s of %s: %s", path, owner, reason)
      path.unlink(missing_ok=True)
    return _create(path, cell, heartbeat_s)


# ------------------------------------------------------------------------------------------------
# A worker's loop


@dataclasses.dataclass
class Report:
  """What `run_cells` did: cells it ran, found complete, left to other workers, or saw fail."""
  ran: list = dataclasses.field(default_factory=list)
  complete: list = dataclasses.field(default_factory=list)
  left: list = dataclasses.field(default_factory=list)
  failed: list = dataclasses.field(default_factory=list)  # (cell, message)


def run_cells(cells: Sequence, run: Callable, *, is_complete: Callable, lock_path: Callable,
              lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S, wait: bool = False,
              poll_s: float = 60.0, describe: Callable = str) -> Report:
  """Runs `run(cell)` for each cell that is not complete and not locked by a live worker.

  Each cell runs under its lock file `lock_path(cell)`. A `WavejaxError` fails that cell only (it is
  logged and reported, the lock is released); `errors.Preempted` and other exceptions stop the
  worker. Cells locked by other workers are left to them; with `wait=True` the worker re-polls
  them every `poll_s` seconds until each is complete or its lock goes stale (then runs it).
  """
  report, pending = Report(), list(cells)
  while True:
    left = [cell for cell in pending if not _try_cell(cell, run, is_complete, lock_path,
                                                      lock_timeout_s, describe, report)]
    if not left or not wait:
      break
    logging.info("sweep: %d cell(s) held by other workers; checking again in %g s: %s",
                 len(left), poll_s, "; ".join(describe(c) for c in left))
    time.sleep(poll_s)
    pending = left
  report.left = left
  if left:
    logging.info("sweep: left %d cell(s) to the workers holding them: %s", len(left),
                 "; ".join(describe(c) for c in left))
  return report


def _try_cell(cell, run, is_complete, lock_path, lock_timeout_s, describe, report) -> bool:
  """Runs one cell if it is free; False when another live worker holds it."""
  if is_complete(cell):
    logging.info("sweep: %s: already complete", describe(cell))
    report.complete.append(cell)
    return True
  lock = acquire_lock(lock_path(cell), lock_timeout_s, describe(cell))
  if lock is None:
    logging.info("sweep: %s: being run by %s", describe(cell),
                 read_owner(lock_path(cell)) or "another worker")
    return False
  with lock:
    if is_complete(cell):  # finished by another worker between the check and the lock
      report.complete.append(cell)
      return True
    logging.info("sweep: running %s", describe(cell))
    try:
      run(cell)
    except errors.Preempted:
      raise
    except errors.WavejaxError as e:
      logging.error("sweep: %s failed: %s", describe(cell), e)
      report.failed.append((cell, str(e)))
      return True
  report.ran.append(cell)
  return True


def cell_status(result_path, lock_path, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> str:
  """'complete', 'running on <owner>', 'stale lock of <owner>' or 'not started'."""
  if pathlib.Path(result_path).exists():
    return "complete"
  owner = read_owner(lock_path)
  if owner is None:
    return "not started"
  reason = stale_reason(lock_path, owner, timeout_s)
  return f"stale lock of {owner}" if reason else f"running on {owner}"


# ------------------------------------------------------------------------------------------------
# Command-line flags shared by the grid CLIs


@dataclasses.dataclass(frozen=True)
class Flags:
  """The absl flag holders of `define_flags`."""
  shard: object
  num_shards: object
  lock_timeout: object
  wait: object
  poll_interval: object
  collect: object

  def resolve_shard(self, environ: Mapping[str, str] | None = None) -> Shard:
    if self.lock_timeout.value <= 0 or self.poll_interval.value <= 0:
      raise errors.SweepError(f"--lock_timeout={self.lock_timeout.value:g} and --poll_interval="
                              f"{self.poll_interval.value:g} must be positive seconds")
    return resolve_shard(self.shard.value, self.num_shards.value, environ)


def define_flags() -> Flags:
  """Defines --shard, --num_shards, --lock_timeout, --wait, --poll_interval and --collect."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  return Flags(
      shard=flags.DEFINE_string(
          "shard", None, "Run only this worker's share of the grid: I/N, worker I (0-based) of N. "
          "Default: from SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX, else the whole grid."),
      num_shards=flags.DEFINE_integer(
          "num_shards", None, "Number of workers, for JOB_COMPLETION_INDEX (a Kubernetes indexed "
          "job: its completions) or a Slurm that does not set SLURM_ARRAY_TASK_COUNT."),
      lock_timeout=flags.DEFINE_float(
          "lock_timeout", DEFAULT_LOCK_TIMEOUT_S, "Seconds without a heartbeat after which "
          "another worker's lock on a cell is stale and taken over (a lock whose process on this "
          "host has exited is stale at once)."),
      wait=flags.DEFINE_boolean(
          "wait", False, "After this worker's free cells, wait for those that other workers hold "
          "(re-polling; a stale lock is taken over) instead of leaving them to them."),
      poll_interval=flags.DEFINE_float("poll_interval", 60.0, "Seconds between polls (--wait)."),
      collect=flags.DEFINE_boolean(
          "collect", False, "Train nothing: write the results of the complete cells and list the "
          "missing ones."),
  )
