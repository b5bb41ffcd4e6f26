"""Decoded-waveform cache: every utterance of a manifest decoded once into one float32 `.npy`.

The key covers the dataset name, each file's path, size and modification time, the sample rate and
the clip length, so editing, adding or removing a file gives a new cache entry. A file that
changes while it is decoded (a copy still running) stops the run instead of being cached.

An entry is `<entry>.npy` (the rows of the good files) and its record `<entry>.json`: the shape,
the file size, the files that could not be decoded and a SHA-256 digest of every chunk of
`CHUNK_BYTES`, computed as the entry is written. Each open checks the entry against its record
(size, header, every digest, in threads: hashlib hashes ~1.8 GB/s per core with SHA extensions,
so 1.2 s on one core for IEMOCAP's 2.1 GB, and decoding it again takes minutes); an entry that is
truncated, overwritten (NaN or other values), has no or a damaged record is derived data: one
warning names it and it is decoded again, never trained on.

Writing: the entry is written under a temporary name whose blocks are allocated before the memory
map is written (`os.posix_fallocate`, else zeros), so a full disk is a one-line `WriteError` at
allocation, not a bus error when a page of a sparse file finds no space; the temporary file is
then removed, and those of killed runs are removed by the next run
(`atomic.remove_stale_temporaries`). Processes that need the same missing entry (the folds of an
array job) take a lock, so one decodes and the others wait for it.

Decoding runs in parallel (worker processes for large manifests, threads otherwise) and logs a
progress line at intervals. Files that cannot be decoded are listed in the record (the `.npy`
holds the rows of the good files only), so the `bad_audio` policy applies the same way whether
the entry was just written or read back: "error" raises a one-line `AudioError` naming the first
bad file, "skip" drops the bad files from the manifest and logs how many. Silent files decode to
zeros and are only logged.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import errno
import hashlib
import io
import itertools
import json
import os
import pathlib

import numpy as np
from absl import logging

from wavejax import atomic, errors
from wavejax.data import audio, workers
from wavejax.data.manifest import Manifest

BAD_AUDIO_POLICIES = ("error", "skip")
# Version of the entry record (`<entry>.json`); an entry with another version is decoded again.
RECORD_FORMAT = 1
# Rows are hashed in chunks of about this many bytes, one digest each, in parallel threads.
CHUNK_BYTES = 64 << 20
# Errors of `os.posix_fallocate` meaning "not on this file system": zeros are written instead.
_NO_FALLOCATE = {errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, getattr(errno, "ENOTSUP", -1)}

try:
  import fcntl
except ImportError:  # not on Windows: concurrent decoders then each decode
  fcntl = None


def default_cache_dir() -> pathlib.Path:
  """`$WAVEJAX_CACHE`, else `$XDG_CACHE_HOME/wavejax`, else `~/.cache/wavejax`."""
  if os.environ.get("WAVEJAX_CACHE"):
    return pathlib.Path(os.environ["WAVEJAX_CACHE"]).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base) / "wavejax"


def cache_key(manifest: Manifest, sample_rate: int, clip_seconds: float) -> str:
  return _key(manifest, sample_rate, clip_seconds, file_stamps(manifest))


def file_stamps(manifest: Manifest) -> list[str]:
  """`path|size|mtime` of every utterance's file (`path|missing` when it cannot be read)."""
  stamps = []
  for utt in manifest:
    try:
      stat = os.stat(utt.path)
      stamps.append(f"{utt.path}|{stat.st_size}|{stat.st_mtime_ns}")
    except OSError:  # a missing file: decoding reports it
      stamps.append(f"{utt.path}|missing")
  return stamps


def _key(manifest: Manifest, sample_rate: int, clip_seconds: float, stamps) -> str:
  digest = hashlib.sha256(f"{manifest.dataset}|{sample_rate}|{clip_seconds!r}".encode())
  for stamp in stamps:
    digest.update(f"|{stamp}".encode())
  return digest.hexdigest()[:20]


@dataclasses.dataclass(frozen=True)
class DecodeReport:
  """What went wrong while decoding: `bad` is `(index, one-line message)` sorted by index."""
  bad: tuple[tuple[int, str], ...] = ()
  silent: tuple[int, ...] = ()


def check_policy(bad_audio: str) -> None:
  if bad_audio not in BAD_AUDIO_POLICIES:
    raise errors.ConfigError(f"config.data.bad_audio={bad_audio!r}: choose 'error' (stop at the "
                             "first unusable file) or 'skip' (drop unusable files)")


def load(manifest: Manifest, sample_rate: int, clip_seconds: float, *, cache_dir=None,
         num_workers: int | None = None,
         bad_audio: str = "error") -> tuple[Manifest, np.ndarray]:
  """The manifest of the usable files and their `[N, clip_samples]` float32 waveforms.

  Decodes only on a cache miss, or when the entry on disk fails its checks (logged, then decoded
  again); the array is memory-mapped read-only from the cache file. With `bad_audio="skip"` the
  returned manifest lacks the files that could not be decoded (row i of the array is utterance i
  of the returned manifest); with "error" the first one raises.
  """
  check_policy(bad_audio)
  if not len(manifest):
    raise errors.DatasetError(f"{manifest.root}: the {manifest.dataset} manifest is empty")
  folder = pathlib.Path(cache_dir) if cache_dir else default_cache_dir() / "decoded"
  stamps = file_stamps(manifest)
  key = _key(manifest, sample_rate, clip_seconds, stamps)
  path = folder / f"{manifest.dataset}-{sample_rate}hz-{clip_seconds:g}s-{key}.npy"
  shape = (len(manifest), audio.clip_samples(sample_rate, clip_seconds))
  if folder.is_dir():
    atomic.remove_stale_temporaries(folder)
  entry, problem = read_entry(path, shape, num_workers)
  if entry is None:
    with _decode_lock(path):
      entry, problem = read_entry(path, shape, num_workers)  # written meanwhile by another process?
      if entry is None:
        if problem:
          logging.warning("%s: %s; the decoded cache is derived data, so it is decoded again and "
                          "replaced", path, problem)
        _remove_entry(path)
        entry = _decode_to_file(manifest, sample_rate, clip_seconds, path, num_workers, stamps)
  waveforms, bad = entry
  return apply_policy(manifest, bad, bad_audio), waveforms


def load_waveforms(manifest: Manifest, sample_rate: int, clip_seconds: float,
                   cache_dir=None, num_workers: int | None = None) -> np.ndarray:
  """Returns `[len(manifest), clip_samples]` float32 waveforms; an unusable file raises.

  The array is memory-mapped read-only from the cache file.
  """
  return load(manifest, sample_rate, clip_seconds, cache_dir=cache_dir,
              num_workers=num_workers)[1]


def apply_policy(manifest: Manifest, bad, bad_audio: str) -> Manifest:
  """Raises for the first bad file ("error") or returns the manifest without them ("skip")."""
  check_policy(bad_audio)
  if not bad:
    return manifest
  bad = sorted(bad)
  if bad_audio == "error":
    first = bad[0][1]
    raise errors.AudioError(f"{first} [{len(bad)} unusable file(s) in {manifest.dataset}; "
                            "set --config.data.bad_audio=skip to drop them]")
  dropped = {index for index, _ in bad}
  if len(dropped) == len(manifest):
    raise errors.DatasetError(f"{manifest.root}: none of the {len(manifest)} files could be "
                              f"decoded (first: {bad[0][1]})")
  logging.warning("Skipped %d unusable audio file(s) of %s (bad_audio=skip); first: %s",
                  len(dropped), manifest.dataset, bad[0][1])
  return manifest.replace(u for i, u in enumerate(manifest) if i not in dropped)


def decode_all(manifest: Manifest, sample_rate: int, clip_seconds: float,
               num_workers: int | None = None) -> np.ndarray:
  """Decodes every utterance into memory; the first unusable file raises `AudioError`."""
  waveforms = np.zeros((len(manifest), audio.clip_samples(sample_rate, clip_seconds)), np.float32)
  report = decode_into(manifest, waveforms, sample_rate, clip_seconds, num_workers)
  apply_policy(manifest, report.bad, "error")
  return waveforms


def decode_into(manifest: Manifest, out: np.ndarray, sample_rate: int, clip_seconds: float,
                num_workers: int | None = None) -> DecodeReport:
  """Decodes utterance i into `out[i]` for every i, in parallel, with a progress log.

  Rows of unusable files stay as they were; the report lists them. Never raises for a bad file.
  """
  bad, silent = {}, set()

  def store(results):
    for index, waveform, error, is_silent in results:
      if error:
        bad[index] = error
        continue
      out[index] = waveform
      if is_silent:
        silent.add(index)

  workers.run_chunks(_decode_chunk, [(i, u.path) for i, u in enumerate(manifest)],
                     (sample_rate, clip_seconds), what=f"Decoding {manifest.dataset}",
                     num_workers=num_workers, store=store)
  if silent:
    logging.warning("%d silent file(s) in %s (peak <= %g), e.g. %s; they train as zeros",
                    len(silent), manifest.dataset, audio.SILENCE_PEAK,
                    manifest[min(silent)].path)
  return DecodeReport(tuple(sorted(bad.items())), tuple(sorted(silent)))


def _decode_chunk(items, sample_rate: int, clip_seconds: float) -> list:
  """`(index, waveform or None, error message or "", silent)` for each `(index, path)`."""
  results = []
  for index, path in items:
    try:
      waveform = audio.read(path, sample_rate)
    except errors.AudioError as e:
      results.append((index, None, str(e), False))
      continue
    except Exception as e:  # pylint: disable=broad-except  (one bad file must not stop a run)
      results.append((index, None, f"{path}: cannot decode audio ({type(e).__name__}: {e})",
                      False))
      continue
    results.append((index, audio.fit_length(waveform, audio.clip_samples(sample_rate,
                                                                         clip_seconds)),
                    "", audio.is_silent(waveform)))
  return results


# ------------------------------------------------------------------ reading an entry back


def read_entry(path: pathlib.Path, shape: tuple[int, int], num_workers: int | None = None):
  """`((waveforms, bad), None)` for an intact entry, else `(None, why)`; `why` is None when the
  entry does not exist.

  `shape` is `(manifest rows, clip samples)`. Intact means: the record beside the entry is
  readable and of this format, describes `shape`, the file has the recorded size and header, and
  every chunk of rows has its recorded SHA-256 digest (the digests cover the values the waveforms
  are read from; a mismatch says whether NaN or infinite values are there).
  """
  try:
    path.stat()
  except FileNotFoundError:
    return None, None
  except OSError as e:
    return None, f"it cannot be read ({e.strerror or e})"
  record_path = record_path_of(path)
  try:
    record = json.loads(record_path.read_text())
  except FileNotFoundError:
    return None, (f"no record {record_path.name} beside it (written by an older wavejax, or the "
                  "record was deleted)")
  except (OSError, ValueError) as e:
    return None, f"its record {record_path.name} is unreadable ({type(e).__name__}: {e})"
  try:
    bad = tuple((int(i), str(message)) for i, message in record["bad"])
    rows = shape[0] - len({i for i, _ in bad})
    expected = {"format": RECORD_FORMAT, "manifest_rows": shape[0], "shape": [rows, shape[1]]}
    if any(record.get(name) != value for name, value in expected.items()) or any(
        not 0 <= i < shape[0] for i, _ in bad):
      return None, f"its record {record_path.name} does not describe this entry"
    size, chunk_rows, digests = int(record["bytes"]), int(record["chunk_rows"]), record["sha256"]
    if chunk_rows < 1 or not isinstance(digests, list):
      raise ValueError(f"chunk_rows {chunk_rows}, sha256 {type(digests).__name__}")
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    return None, f"its record {record_path.name} is damaged ({type(e).__name__}: {e})"
  try:
    actual = path.stat().st_size
    if actual != size:
      return None, (f"it is {actual} bytes instead of the {size} written "
                    f"({'truncated' if actual < size else 'extended'})")
    waveforms = np.load(path, mmap_mode="r")
  except (OSError, ValueError) as e:
    return None, f"it cannot be read ({type(e).__name__}: {e})"
  if (waveforms.shape != (rows, shape[1]) or waveforms.dtype != np.float32
      or not waveforms.flags.c_contiguous):
    return None, (f"its header says {waveforms.dtype} {waveforms.shape}, not float32 "
                  f"{(rows, shape[1])}")
  try:
    actual_digests = chunk_digests(waveforms, chunk_rows, num_workers)
  except OSError as e:
    return None, f"it cannot be read ({type(e).__name__}: {e})"
  if actual_digests != digests:
    return None, _content_problem(waveforms, chunk_rows, actual_digests, digests)
  return (waveforms, bad), None


def _content_problem(waveforms, chunk_rows: int, actual, recorded) -> str:
  changed = next(i for i, (a, b) in enumerate(itertools.zip_longest(actual, recorded)) if a != b)
  first = min(changed * chunk_rows, max(0, waveforms.shape[0] - 1))
  rows = waveforms[first:first + chunk_rows]
  where = f"rows {first}-{first + max(len(rows), 1) - 1}"
  if not np.all(np.isfinite(rows)):
    return f"it holds NaN or infinite values ({where}), which decoding never writes"
  return f"its values differ from those written ({where}: SHA-256 mismatch)"


def chunk_digests(waveforms: np.ndarray, chunk_rows: int,
                  num_workers: int | None = None) -> list[str]:
  """SHA-256 of each run of `chunk_rows` rows of the C-contiguous `waveforms`, in threads
  (hashlib releases the GIL while hashing)."""
  starts = range(0, waveforms.shape[0], chunk_rows)

  def digest(start):
    rows = waveforms[start:start + chunk_rows]
    return hashlib.sha256(memoryview(np.ascontiguousarray(rows)).cast("B")).hexdigest()

  threads = min(len(starts), workers.resolve_workers(num_workers))
  if threads <= 1:
    return [digest(start) for start in starts]
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    return list(pool.map(digest, starts))


def record_path_of(path: pathlib.Path) -> pathlib.Path:
  """The record (`<entry>.json`) of the cache entry `path`."""
  return path.with_suffix(".json")


def _remove_entry(path: pathlib.Path) -> None:
  """Removes a damaged entry and its record (and the `.bad.json` of older versions)."""
  for leftover in (path, record_path_of(path), path.with_suffix(".bad.json")):
    with contextlib.suppress(OSError):
      leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def _decode_lock(path: pathlib.Path):
  """Holds `.<entry>.lock` beside the entry, so that one process decodes a missing entry and the
  others wait for it (then read it). Without locks (read-only folder, a file system without
  `flock`) every process decodes on its own, as before."""
  fd = None
  if fcntl is not None:
    with contextlib.suppress(OSError):
      path.parent.mkdir(parents=True, exist_ok=True)
      fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
  try:
    if fd is not None:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        logging.info("Waiting for another process that is decoding %s", path)
        with contextlib.suppress(OSError):
          fcntl.flock(fd, fcntl.LOCK_EX)
      except OSError:
        pass
    yield
  finally:
    if fd is not None:
      os.close(fd)


# ------------------------------------------------------------------ writing an entry


def _decode_to_file(manifest, sample_rate, clip_seconds, path: pathlib.Path, num_workers,
                    stamps) -> tuple[np.ndarray, tuple[tuple[int, str], ...]]:
  """Decodes into the cache entry `path` (good rows only) and its record; returns what
  `read_entry` returns for an intact entry."""
  logging.info("Decoding %d files of %s into %s", len(manifest), manifest.dataset, path)
  shape = (len(manifest), audio.clip_samples(sample_rate, clip_seconds))
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    with allocated_npy(path, shape) as (temporary, waveforms):
      report = decode_into(manifest, waveforms, sample_rate, clip_seconds, num_workers)
      _check_unchanged(manifest, stamps)
      if not report.bad:
        _flush(waveforms)
        _publish(temporary, path, shape[0], report.bad, num_workers)
      else:
        bad_rows = {i for i, _ in report.bad}
        good = [i for i in range(shape[0]) if i not in bad_rows]
        with allocated_npy(path.with_suffix(".good"), (len(good), shape[1])) as (compacted, out):
          for row, index in enumerate(good):
            out[row] = waveforms[index]
          _flush(out)
          _publish(compacted, path, shape[0], report.bad, num_workers)
  except OSError as e:
    size_gb = shape[0] * shape[1] * 4 / 1e9
    raise errors.WriteError(
        f"{path}: cannot write the decoded cache ({e.strerror or e}; it needs {size_gb:.3g} GB); "
        "free space there or set --config.data.cache_dir to a disk with room") from e
  return np.load(path, mmap_mode="r"), report.bad


def _publish(temporary: pathlib.Path, path: pathlib.Path, manifest_rows: int, bad,
             num_workers) -> None:
  """Writes the record of the finished `temporary` (its digests), then renames it to `path`."""
  written = np.load(temporary, mmap_mode="r")
  chunk_rows = max(1, CHUNK_BYTES // max(1, written.itemsize * written.shape[1]))
  record = {"format": RECORD_FORMAT, "manifest_rows": manifest_rows,
            "shape": list(written.shape), "dtype": "float32",
            "bytes": temporary.stat().st_size, "chunk_rows": chunk_rows,
            "sha256": chunk_digests(written, chunk_rows, num_workers),
            "bad": [list(item) for item in bad]}
  atomic.atomic_write(record_path_of(path), json.dumps(record, indent=1))
  os.replace(temporary, path)


def _check_unchanged(manifest: Manifest, stamps: list[str]) -> None:
  """Raises `DatasetError` when a file changed while it was decoded (its rows may mix versions)."""
  changed = [utt.path for utt, before, after in zip(manifest, stamps, file_stamps(manifest))
             if before != after]
  if changed:
    raise errors.DatasetError(
        f"{changed[0]}: changed while it was being decoded ({len(changed)} file(s) of "
        f"{manifest.dataset}; a copy still running?); rerun once the corpus is complete")


@contextlib.contextmanager
def allocated_npy(path: pathlib.Path, shape: tuple[int, int]):
  """Yields `(temporary, writable float32 memmap of shape)`: a `.npy` under a temporary name beside
  `path` whose blocks are all allocated before anything is written through the memory map.

  Writing into a memory-mapped sparse file on a full disk kills the process with SIGBUS; with the
  blocks allocated up front, a full disk is an `OSError` here instead. The temporary file is
  removed when the body raises, and locked while it is written (`atomic.lock_as_writer`).
  """
  temporary = atomic.temporary_path(path)
  header = io.BytesIO()
  np.lib.format.write_array_header_1_0(
      header, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
               "fortran_order": False, "shape": tuple(shape)})
  offset = len(header.getvalue())
  size = offset + shape[0] * shape[1] * np.dtype(np.float32).itemsize
  try:
    with open(os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), "r+b") as f:
      atomic.lock_as_writer(f.fileno())
      f.write(header.getvalue())
      f.flush()
      allocate(f.fileno(), offset, size)
      if shape[0] * shape[1]:
        yield temporary, np.memmap(f, dtype=np.float32, mode="r+", offset=offset, shape=shape)
      else:  # (an empty file cannot be memory-mapped)
        yield temporary, np.zeros(shape, np.float32)
  finally:
    with contextlib.suppress(OSError):
      temporary.unlink(missing_ok=True)


def _flush(array: np.ndarray) -> None:
  if isinstance(array, np.memmap):
    array.flush()


def allocate(fd: int, start: int, size: int) -> None:
  """Allocates the blocks of bytes `[start, size)` of the open file `fd` (zeros where the file
  system has no `posix_fallocate`), then syncs them, so that a full disk raises `OSError` now."""
  if size <= start:
    return
  fallocate = getattr(os, "posix_fallocate", None)
  try:
    if fallocate is None:
      raise OSError(errno.ENOSYS, "posix_fallocate is not available")
    fallocate(fd, start, size - start)
  except OSError as e:
    if e.errno not in _NO_FALLOCATE:
      raise
    zeros = bytes(8 << 20)
    for offset in range(start, size, len(zeros)):
      os.pwrite(fd, zeros[:size - offset], offset)
  os.fsync(fd)  # (a network file system may report no space only when the data are sent)
