"""EmoDB (Berlin Database of Emotional Speech) loader: `wav/{SS}{TTT}{E}{V}.wav` -> `Manifest`.

Layout (docs/reference.md#emodb): 535 wavs (16 kHz mono) in `wav/` (`wav_corpus/` in some
copies; the root is searched recursively). The name is speaker (2 digits), text code (a01 ...
b10), emotion letter (German initials: W anger, L boredom, E disgust, A fear, F happiness, T
sadness, N neutral) and version letter, e.g. `03a01Fa.wav`. Speakers and genders are a fixed
table: male 03, 10, 11, 12, 15; female 08, 09, 13, 14, 16.

Cross-validation groups: with 5 folds, the fixed (male, female) pairs (03, 08), (10, 09),
(11, 13), (12, 14), (15, 16), one per fold as in IEMOCAP; other fold counts deal the speakers
with `grouping.speaker_folds`.
"""

from __future__ import annotations

import pathlib
import re

from wavejax import errors
from wavejax.data import corpus, grouping
from wavejax.data.manifest import Manifest, Utterance

FILENAME = re.compile(r"^(\d\d)([ab]\d\d)([WLEAFTN])([a-z])\.(?i:wav)$")
LABELS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fear", "F": "happy", "T": "sad",
          "N": "neutral"}
EMOTIONS = {"N": "neutral", "F": "happy", "T": "sad", "W": "angry"}
SPEAKERS = {"03": "M", "08": "F", "09": "F", "10": "M", "11": "M", "12": "M", "13": "F",
            "14": "F", "15": "M", "16": "F"}
TEXTS = ("a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10")
WAV_FOLDERS = ("wav", "wav_corpus")
FIVE_FOLDS = {"03": 1, "08": 1, "10": 2, "09": 2, "11": 3, "13": 3, "12": 4, "14": 4, "15": 5,
              "16": 5}


def scan(root, *, num_folds: int = 5) -> Manifest:
  """Scans an EmoDB root (the folder holding `wav/`, or `wav/` itself; searched recursively).

  Args:
    root: the unpacked EmoDB folder.
    num_folds: number of speaker groups (`Utterance.session` 1..num_folds); 5 uses the fixed
      (male, female) pairs.

  Returns:
    Every recording (535 on the full corpus), sorted by speaker then file name. `emotion` is ""
    for boredom, disgust and fear (outside the 4-class map).
  """
  grouping.check_num_folds(num_folds)
  root = corpus.check_dir(root, "EmoDB", "the unpacked EmoDB folder holding wav/")
  files, notes = corpus.walk(root)
  # Of two copies of a recording, keep the one in the corpus' own wav/ (wav_corpus/) folder.
  files.sort(key=lambda p: (p.parent.name not in WAV_FOLDERS, len(p.parts), p))
  groups = (FIVE_FOLDS if num_folds == 5
            else grouping.speaker_folds(list(SPEAKERS), list(SPEAKERS.values()), num_folds))
  parsed, seen = [], {}
  for path in files:
    match = FILENAME.match(path.name)
    if not match:
      notes.append(f"{path}: not an EmoDB name (e.g. 03a01Fa.wav); ignored")
    elif match.group(1) not in SPEAKERS:
      notes.append(f"{path}: speaker {match.group(1)} is not one of the 10 EmoDB speakers; ignored")
    elif path.name in seen:
      notes.append(f"{path}: a second copy of {seen[path.name]}; ignored")
    else:
      seen[path.name] = path
      if match.group(2) not in TEXTS:
        notes.append(f"{path}: unknown text code {match.group(2)}; kept")
      parsed.append((path, match))
  if not parsed:
    raise errors.DatasetError(f"{root}: no EmoDB recording (e.g. wav/03a01Fa.wav) found; point "
                              "--config.data.root at the unpacked EmoDB folder")
  durations = corpus.durations(path for path, _ in parsed)
  utterances = [_utterance(path, match, groups, duration)
                for (path, match), duration in zip(parsed, durations)]
  utterances = corpus.check_distinct(utterances, notes, str(root))
  utterances.sort(key=lambda u: (u.speaker, u.utt_id))
  notes.sort()
  corpus.log_notes("emodb", notes)
  return Manifest(tuple(utterances), dataset="emodb", root=str(root),
                  label_set=tuple(sorted(LABELS.values())), notes=tuple(notes))


def _utterance(path: pathlib.Path, match, groups, duration) -> Utterance:
  speaker, text, letter, version = match.groups()
  return Utterance(
      path=str(path), utt_id=path.stem, session=groups[speaker], speaker=speaker,
      gender=SPEAKERS[speaker], emotion=EMOTIONS.get(letter, ""), duration_s=duration,
      label=LABELS[letter], extra={"text": text, "version": version})
