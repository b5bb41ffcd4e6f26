"""Helpers shared by the corpus loaders: finding files, checking options, reading durations."""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
from collections.abc import Iterable

from absl import logging

from wavejax import errors
from wavejax.data import audio

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".w64")
MISSING_AUDIO_POLICIES = ("error", "skip")


def check_dir(root, dataset: str, hint: str) -> pathlib.Path:
  """`root` as an absolute path, or a `DatasetError` when it is not a directory."""
  path = pathlib.Path(root).expanduser()
  if not path.is_dir():
    raise errors.DatasetError(f"{dataset} root {path} is not a directory; set "
                              f"--config.data.root to {hint}")
  return path.resolve()


def check_missing_policy(missing_audio: str) -> None:
  if missing_audio not in MISSING_AUDIO_POLICIES:
    raise errors.ConfigError(
        f"config.data.missing_audio={missing_audio!r}: choose 'error' or 'skip'")


def walk(root: pathlib.Path, suffixes=(".wav",), recursive: bool = True):
  """Audio files under `root` (sorted), and notes on entries that look like audio but are not.

  Symlinked folders are followed (a corpus assembled from links is common), each real folder once.
  Hidden entries (`.git`, macOS `._*` AppleDouble files) and `__MACOSX` folders are skipped. A
  directory named like an audio file is reported, not returned.
  """
  files, notes = [], []
  for path in sorted(_entries(root, recursive)):
    relative = path.relative_to(root).parts
    if any(part.startswith(".") or part == "__MACOSX" for part in relative):
      continue
    if path.suffix.lower() not in suffixes:
      continue
    if path.is_dir():
      notes.append(f"{path}: a directory named like an audio file; ignored")
    elif path.is_file():
      files.append(path)
    else:
      notes.append(f"{path}: not a regular file (a broken link?); ignored")
  return files, notes


def _entries(root: pathlib.Path, recursive: bool):
  """Every entry under `root` (one level unless `recursive`), through symlinked folders too."""
  if not recursive:
    yield from root.glob("*")
    return
  visited = set()
  for folder, dirs, names in os.walk(root, followlinks=True):
    real = os.path.realpath(folder)
    if real in visited:  # a link loop, or two links to one folder
      dirs[:] = []
      continue
    visited.add(real)
    base = pathlib.Path(folder)
    for name in dirs + names:
      yield base / name


def durations(paths: Iterable, num_threads: int = 8) -> list[float]:
  """Header durations (seconds; 0.0 when unreadable) of `paths`, read in threads."""
  paths = list(paths)
  if len(paths) < 64:
    return [audio.duration(p) for p in paths]
  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    return list(pool.map(audio.duration, paths))


def report_missing(missing: list, policy: str, restore: str = "the files") -> None:
  """Raises `MissingAudioError` for the first missing file ("error"), or logs a count ("skip")."""
  if not missing:
    return
  if policy == "error":
    raise errors.MissingAudioError(
        f"{missing[0]}: labelled utterance has no audio file ({len(missing)} missing in all); "
        f"restore {restore} or set --config.data.missing_audio=skip")
  logging.warning("Skipped %d labelled utterances without an audio file (first: %s)",
                  len(missing), missing[0])


def log_notes(dataset: str, notes: list[str]) -> None:
  """Logs what a loader ignored: a count and the first few lines."""
  if notes:
    logging.warning("%s: %d file(s) or entries not used (see `python -m wavejax.data summary`); "
                    "first: %s", dataset, len(notes), notes[0])
