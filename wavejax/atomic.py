"""Atomic file writes: a temporary file beside the target, then `os.replace`.

Readers see the old file or the whole new one; a writer that fails leaves nothing behind. The
temporary names are unique across hosts and processes, so workers on several machines that share a
directory (a sweep's workdir, a corpus cache) never write into each other's temporary files.
A process killed mid-write (SIGKILL, a node lost) leaves its temporary file behind;
`remove_stale_temporaries` removes those whose writer is gone (its process id on this host, a
lock it held, or a day without change).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import socket
import time
import uuid

from absl import logging

from wavejax import errors

try:
  import fcntl
except ImportError:  # not on Windows: temporary files are then judged by owner and age only
  fcntl = None

HOST = socket.gethostname()
# A temporary file older than this (unmodified for a day) belongs to no live writer, whatever host
# wrote it: a decode that is still running keeps modifying its file.
STALE_AFTER_S = 24 * 3600
# `temporary_path`'s suffix: `.<pid>.<8 hex>.tmp` after `.<name>.<host>`.
_TEMPORARY_SUFFIX = re.compile(r"\.(\d+)\.([0-9a-f]{8})\.tmp$")


def temporary_path(path) -> pathlib.Path:
  """A hidden name beside `path`, unique across hosts and processes (pids repeat across pods)."""
  path = pathlib.Path(path)
  return path.with_name(f".{path.name}.{HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def lock_as_writer(fd: int) -> None:
  """Marks the open temporary file `fd` as written by a live process (an advisory `flock`, held
  until the file is closed), so that `remove_stale_temporaries` in another process, container or
  host never removes it. A file system without locks is left to the owner and age rules."""
  if fcntl is None:
    return
  with contextlib.suppress(OSError):
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def remove_stale_temporaries(folder, max_age_s: float = STALE_AFTER_S) -> list[pathlib.Path]:
  """Removes the temporary files (`temporary_path` names) in `folder` that no live process writes.

  A temporary file is stale when its writer is gone: on this host, its process id (in the name)
  no longer exists; on any host, it has not been modified for `max_age_s`. A file whose writer
  holds its lock (`lock_as_writer`) is never removed, so a writer in another PID namespace with
  the same host name keeps its file. Returns the removed paths; each is logged.
  """
  folder = pathlib.Path(folder)
  try:
    names = [entry.name for entry in os.scandir(folder) if entry.name.startswith(".")]
  except OSError:
    return []
  removed = []
  for name in names:
    path = folder / name
    if _is_stale(path, max_age_s):
      try:
        size = path.stat().st_size
        path.unlink()
      except OSError:
        continue
      logging.warning("Removed %s (%.3g GB), a temporary file left by a run that was killed or "
                      "failed", path, size / 1e9)
      removed.append(path)
  return removed


def _is_stale(path: pathlib.Path, max_age_s: float) -> bool:
  match = _TEMPORARY_SUFFIX.search(path.name)
  if not match:
    return False
  try:
    stat = os.lstat(path)
  except OSError:
    return False
  if not os.path.isfile(path) or os.path.islink(path):
    return False
  old = time.time() - stat.st_mtime > max_age_s
  this_host = path.name[:match.start()].endswith(f".{HOST}")
  if not old and not (this_host and not _process_exists(int(match.group(1)))):
    return False
  return not _locked_by_writer(path)


def _process_exists(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except OSError:  # (PermissionError: it exists, as another user's process)
    return True
  return True


def _locked_by_writer(path: pathlib.Path) -> bool:
  if fcntl is None:
    return False
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return True  # cannot look: leave it
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    return True
  except OSError:  # no locks on this file system: the owner and age rules decide
    return False
  finally:
    os.close(fd)
  return False


@contextlib.contextmanager
def atomic_open(path, binary: bool = False):
  """Opens a temporary file beside `path` for writing; renames it onto `path` on success.

  If the body raises, the temporary file is removed and `path` keeps its old content (or stays
  absent). The data are flushed to disk before the rename.
  """
  path = pathlib.Path(path)
  temporary = temporary_path(path)
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    with open(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except OSError as e:
    raise errors.WriteError.from_os_error(path, e) from e
  finally:
    with contextlib.suppress(OSError):
      temporary.unlink(missing_ok=True)


def atomic_write(path, data: str | bytes) -> pathlib.Path:
  """Writes `data` to `path` atomically (see `atomic_open`)."""
  with atomic_open(path, binary=isinstance(data, bytes)) as f:
    f.write(data)
  return pathlib.Path(path)
