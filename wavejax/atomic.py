"""Atomic file writes: a temporary file beside the target, then `os.replace`.

Readers see the old file or the whole new one; a writer that fails leaves nothing behind. The
temporary names are unique across hosts and processes, so workers on several machines that share a
directory (a sweep's workdir, a corpus cache) never write into each other's temporary files.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import uuid

from wavejax import errors

HOST = socket.gethostname()


def temporary_path(path) -> pathlib.Path:
  """A hidden name beside `path`, unique across hosts and processes (pids repeat across pods)."""
  path = pathlib.Path(path)
  return path.with_name(f".{path.name}.{HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


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
