"""Decoded-waveform cache: every utterance of a manifest decoded once into one float32 `.npy`.

The key covers the dataset name, each file's path, size and modification time, the sample rate and
the clip length, so editing, adding or removing a file gives a new cache entry. Entries are written
to a temporary name and renamed, so an interrupted run never leaves a truncated cache behind.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import pathlib

import numpy as np
from absl import logging

from wavejax.data import audio
from wavejax.data.manifest import Manifest


def default_cache_dir() -> pathlib.Path:
  """`$WAVEJAX_CACHE`, else `$XDG_CACHE_HOME/wavejax`, else `~/.cache/wavejax`."""
  if os.environ.get("WAVEJAX_CACHE"):
    return pathlib.Path(os.environ["WAVEJAX_CACHE"]).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base) / "wavejax"


def cache_key(manifest: Manifest, sample_rate: int, clip_seconds: float) -> str:
  digest = hashlib.sha256(f"{manifest.dataset}|{sample_rate}|{clip_seconds!r}".encode())
  for utt in manifest:
    stat = os.stat(utt.path)
    digest.update(f"|{utt.path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
  return digest.hexdigest()[:20]


def load_waveforms(manifest: Manifest, sample_rate: int, clip_seconds: float,
                   cache_dir=None, num_workers: int | None = None) -> np.ndarray:
  """Returns `[len(manifest), clip_samples]` float32 waveforms, decoding only on a cache miss.

  The array is memory-mapped read-only from the cache file.
  """
  folder = pathlib.Path(cache_dir) if cache_dir else default_cache_dir() / "decoded"
  key = cache_key(manifest, sample_rate, clip_seconds)
  path = folder / f"{manifest.dataset}-{sample_rate}hz-{clip_seconds:g}s-{key}.npy"
  if not path.exists():
    logging.info("Decoding %d files of %s into %s", len(manifest), manifest.dataset, path)
    waveforms = decode_all(manifest, sample_rate, clip_seconds, num_workers)
    folder.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    with open(temporary, "wb") as f:
      np.save(f, waveforms)
    os.replace(temporary, path)
  return np.load(path, mmap_mode="r")


def decode_all(manifest: Manifest, sample_rate: int, clip_seconds: float,
               num_workers: int | None = None) -> np.ndarray:
  """Decodes every utterance (in parallel threads: libsndfile and scipy release the GIL)."""
  waveforms = np.zeros((len(manifest), audio.clip_samples(sample_rate, clip_seconds)), np.float32)

  def decode(index):
    waveforms[index] = audio.load(manifest[index].path, sample_rate, clip_seconds)

  workers = num_workers or min(8, os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    list(pool.map(decode, range(len(manifest))))
  return waveforms
