"""Helpers shared by the corpus loaders: finding files, checking options, reading durations."""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
from collections.abc import Iterable

from absl import logging

from wavejax import errors
from wavejax.data import audio

AUDIO_SUFFIXES = (".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff",
                  ".aifc", ".au", ".caf", ".w64", ".rf64")
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

  Symlinked folders are followed (a corpus assembled from links is common), each real folder once
  (by device and inode, so a link loop ends); a file reached through several links or hard links
  is returned once, by the path with the fewest links (then the shortest), the others noted.
  Hidden entries (`.git`, macOS `._*` AppleDouble files) and `__MACOSX` folders are skipped. A
  directory named like an audio file is reported, not returned, as is a folder that cannot be
  listed (permissions).
  """
  candidates, notes = [], []
  for path in sorted(_entries(root, recursive, notes)):
    relative = path.relative_to(root).parts
    if any(part.startswith(".") or part == "__MACOSX" for part in relative):
      continue
    if path.suffix.lower() not in suffixes:
      continue
    if path.is_dir():
      notes.append(f"{path}: a directory named like an audio file; ignored")
    elif path.is_file():
      candidates.append(path)
    else:
      notes.append(f"{path}: not a regular file (a broken link?); ignored")
  by_identity = {}
  for path in candidates:
    by_identity.setdefault(file_identity(path) or path, []).append(path)
  files = []
  for paths in by_identity.values():
    paths.sort(key=lambda p: (_links_on(p, root), len(p.parts), p))
    files.append(paths[0])
    notes += [f"{path}: the same file as {paths[0]} (reached through a link); used once"
              for path in paths[1:]]
  return sorted(files), notes


def _links_on(path: pathlib.Path, root: pathlib.Path) -> int:
  """How many components of `path` below `root` are symbolic links."""
  parts = path.relative_to(root).parts
  return sum(os.path.islink(root.joinpath(*parts[:i + 1])) for i in range(len(parts)))


def _entries(root: pathlib.Path, recursive: bool, notes: list[str]):
  """Every entry under `root` (one level unless `recursive`), through symlinked folders too."""
  if not recursive:
    yield from root.glob("*")
    return
  visited = set()

  def unreadable(error: OSError):
    notes.append(f"{error.filename}: cannot list this folder ({error.strerror or error}); its "
                 "files are not used (check its permissions)")

  for folder, dirs, names in os.walk(root, followlinks=True, onerror=unreadable):
    key = file_identity(folder)
    if key is None or key in visited:  # a link loop, or two links to one folder
      dirs[:] = []
      continue
    visited.add(key)
    base = pathlib.Path(folder)
    for name in dirs + names:
      yield base / name


def file_identity(path) -> tuple[int, int] | None:
  """`(device, inode)` of the file `path` leads to (through links), or None when it cannot be read.

  Two paths with one identity are one file: a symbolic link, a hard link, or a folder linked
  into the corpus twice.
  """
  try:
    stat = os.stat(path)
  except OSError:
    return None
  return stat.st_dev, stat.st_ino


def check_distinct(utterances: list, notes: list[str], what: str) -> list:
  """The utterances with one entry per real file (`file_identity`); the others noted.

  The same file reached under two paths (a link back into the corpus, a hard link) would be one
  recording counted twice, in two folds at once. Under the same label the first is kept (noted);
  under two different labels it is a one-line `DatasetError` naming both paths.
  """
  first, kept = {}, []
  for utt in utterances:
    key = file_identity(utt.path)
    if key is None:
      kept.append(utt)
      continue
    other = first.get(key)
    if other is None:
      first[key] = utt
      kept.append(utt)
      continue
    if other.label != utt.label:
      raise errors.DatasetError(
          f"{other.path} ({other.utt_id}, label {other.label!r}) and {utt.path} ({utt.utt_id}, "
          f"label {utt.label!r}) are the same file (a link or hard link) in {what}; remove the "
          "link so that each recording has one label")
    notes.append(f"{utt.path}: the same file as {other.path} (a link or hard link); used once")
  return kept


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
