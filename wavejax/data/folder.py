"""The `folder` dataset: `root/<label>/*.wav`, the label being the folder name.

Every audio file soundfile may read (`corpus.AUDIO_SUFFIXES`: wav, flac, ogg, opus, mp3, aiff, caf,
...) at any depth under a label folder belongs to that label. Hidden entries, `__MACOSX` and files
directly in `root` are ignored (noted). A file reached twice through links (e.g. a link from a label
folder back to `root`) is one file: used once under one label, an error under two. Speaker and
gender are unknown, so the files are dealt to `num_folds` label-stratified groups one by one (such
folds are not speaker-independent; use the `manifest` dataset with a speaker column for that). The
`emotion` task uses the folders named neutral, happy, sad and angry; the `label` task every folder.
"""

from __future__ import annotations

import dataclasses
import pathlib

from wavejax import errors
from wavejax.data import corpus, grouping
from wavejax.data.manifest import EMOTIONS, UNKNOWN, Manifest, Utterance


def scan(root, *, num_folds: int = 5) -> Manifest:
  """Scans `root/<label>/...` into a manifest, sorted by label then path."""
  grouping.check_num_folds(num_folds)
  root = corpus.check_dir(root, "folder", "a folder holding one sub-folder per label")
  notes, utterances = [], []
  for entry in sorted(root.iterdir()):
    if entry.name.startswith(".") or entry.name == "__MACOSX":
      continue
    if not entry.is_dir():
      notes.append(f"{entry}: not inside a label folder; ignored")
      continue
    files, found_notes = corpus.walk(entry, corpus.AUDIO_SUFFIXES)
    notes += found_notes
    if not files:
      notes.append(f"{entry}: label folder without audio files; ignored")
    utterances += [_utterance(root, entry.name, path) for path in files]
  if not utterances:
    raise errors.DatasetError(f"{root}: no audio file in any label sub-folder; expected "
                              "root/<label>/<file>.wav")
  utterances = corpus.check_distinct(utterances, notes, str(root))
  durations = corpus.durations(u.path for u in utterances)
  utterances = [dataclasses.replace(u, duration_s=d) for u, d in zip(utterances, durations)]
  utterances = grouping.assign_groups(utterances, num_folds, what=str(root))
  corpus.log_notes("folder", notes)
  return Manifest(tuple(utterances), dataset="folder", root=str(root),
                  label_set=tuple(sorted({u.label for u in utterances})), notes=tuple(notes))


def _utterance(root: pathlib.Path, label: str, path: pathlib.Path) -> Utterance:
  return Utterance(path=str(path), utt_id=path.relative_to(root).with_suffix("").as_posix(),
                   session=0, speaker=UNKNOWN, gender=UNKNOWN,
                   emotion=label.lower() if label.lower() in EMOTIONS else "", duration_s=0.0,
                   label=label)
