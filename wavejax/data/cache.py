"""Decoded-waveform cache: every utterance of a manifest decoded once into one float32 `.npy`.

The key covers the dataset name, each file's path, size and modification time, the sample rate and
the clip length, so editing, adding or removing a file gives a new cache entry. Entries are written
to a temporary name and renamed, so an interrupted run never leaves a truncated cache behind.

Decoding runs in parallel (worker processes for large manifests, threads otherwise) and logs a
progress line at intervals. Files that cannot be decoded are recorded beside the entry
(`<entry>.bad.json`; the `.npy` holds the rows of the good files only), so the `bad_audio` policy
applies the same way whether the entry was just written or read back: "error" raises a one-line
`AudioError` naming the first bad file, "skip" drops the bad files from the manifest and logs how
many. Silent files decode to zeros and are only logged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib

import numpy as np
from absl import logging

from wavejax import atomic, errors
from wavejax.data import audio, workers
from wavejax.data.manifest import Manifest

BAD_AUDIO_POLICIES = ("error", "skip")


def default_cache_dir() -> pathlib.Path:
  """`$WAVEJAX_CACHE`, else `$XDG_CACHE_HOME/wavejax`, else `~/.cache/wavejax`."""
  if os.environ.get("WAVEJAX_CACHE"):
    return pathlib.Path(os.environ["WAVEJAX_CACHE"]).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base) / "wavejax"


def cache_key(manifest: Manifest, sample_rate: int, clip_seconds: float) -> str:
  digest = hashlib.sha256(f"{manifest.dataset}|{sample_rate}|{clip_seconds!r}".encode())
  for utt in manifest:
    try:
      stat = os.stat(utt.path)
      digest.update(f"|{utt.path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    except OSError:  # a missing file: decoding reports it
      digest.update(f"|{utt.path}|missing".encode())
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

  Decodes only on a cache miss; the array is memory-mapped read-only from the cache file.
  With `bad_audio="skip"` the returned manifest lacks the files that could not be decoded (row i
  of the array is utterance i of the returned manifest); with "error" the first one raises.
  """
  check_policy(bad_audio)
  if not len(manifest):
    raise errors.DatasetError(f"{manifest.root}: the {manifest.dataset} manifest is empty")
  folder = pathlib.Path(cache_dir) if cache_dir else default_cache_dir() / "decoded"
  key = cache_key(manifest, sample_rate, clip_seconds)
  path = folder / f"{manifest.dataset}-{sample_rate}hz-{clip_seconds:g}s-{key}.npy"
  if path.exists():
    bad = _read_bad(_bad_path(path))
  else:
    bad = _decode_to_file(manifest, sample_rate, clip_seconds, path, num_workers)
  manifest = apply_policy(manifest, bad, bad_audio)
  return manifest, np.load(path, mmap_mode="r")


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


def _decode_to_file(manifest, sample_rate, clip_seconds, path: pathlib.Path,
                    num_workers) -> tuple[tuple[int, str], ...]:
  """Decodes into the cache entry `path` (good rows only) and its `.bad.json`; returns bad."""
  logging.info("Decoding %d files of %s into %s", len(manifest), manifest.dataset, path)
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = atomic.temporary_path(path)  # unique across hosts sharing the cache directory
  compacted = atomic.temporary_path(path.with_suffix(".good"))
  shape = (len(manifest), audio.clip_samples(sample_rate, clip_seconds))
  try:
    waveforms = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=shape)
    report = decode_into(manifest, waveforms, sample_rate, clip_seconds, num_workers)
    if report.bad:
      _write_good_rows(waveforms, {i for i, _ in report.bad}, compacted)
      del waveforms
      os.replace(compacted, temporary)
      _write_bad(_bad_path(path), report.bad)
    else:
      waveforms.flush()
      del waveforms
      _bad_path(path).unlink(missing_ok=True)  # a stale record from an interrupted run
    os.replace(temporary, path)
  finally:
    for leftover in (temporary, compacted):
      leftover.unlink(missing_ok=True)
  return report.bad


def _write_good_rows(waveforms: np.ndarray, bad: set[int], path: pathlib.Path) -> None:
  good = [i for i in range(waveforms.shape[0]) if i not in bad]
  if not good:
    with open(path, "wb") as f:  # (np.save on a name would append ".npy")
      np.save(f, np.zeros((0, waveforms.shape[1]), np.float32))
    return
  out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                  shape=(len(good), waveforms.shape[1]))
  for row, index in enumerate(good):
    out[row] = waveforms[index]
  out.flush()


def _bad_path(path: pathlib.Path) -> pathlib.Path:
  return path.with_suffix(".bad.json")


def _write_bad(path: pathlib.Path, bad) -> None:
  atomic.atomic_write(path, json.dumps({"bad": [list(item) for item in bad]}, indent=1))


def _read_bad(path: pathlib.Path) -> tuple[tuple[int, str], ...]:
  if not path.exists():
    return ()
  return tuple((int(i), str(message)) for i, message in json.loads(path.read_text())["bad"])
