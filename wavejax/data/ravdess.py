"""RAVDESS speech (audio-only) loader: `Actor_XX/MM-VV-EE-II-SS-RR-AA.wav` -> `Manifest`.

Layout (docs/reference.md#ravdess): `Audio_Speech_Actors_01-24.zip` unpacks to
`Actor_01/ ... Actor_24/`, 60 wavs each (1440). The name is seven 2-digit fields: modality (03
audio-only), vocal channel (01 speech, 02 song), emotion (01 neutral, 02 calm, 03 happy, 04 sad,
05 angry, 06 fearful, 07 disgust, 08 surprised), intensity (01 normal, 02 strong; neutral has no
strong), statement, repetition, actor (01-24; odd = male, even = female). Only audio-only speech
files are used: song files (vocal channel 02) and anything not following the naming are listed in
`Manifest.notes`.

Cross-validation groups: the 12 (odd, even) actor pairs (1, 2), (3, 4), ... are dealt round robin
to k groups, so with k=5 the groups hold 3/3/2/2/2 pairs and every fold is gender-balanced.
"""

from __future__ import annotations

import pathlib
import re

from wavejax import errors
from wavejax.data import corpus, grouping
from wavejax.data.manifest import Manifest, Utterance

FILENAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.wav$", re.IGNORECASE)
# Full label set (the `label` task); names shared with the other corpora.
LABELS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
          "06": "fear", "07": "disgust", "08": "surprise"}
# The cross-corpus 4-class map (docs/reference.md#the-cross-corpus-4-class-map); calm joins
# neutral with calm_as_neutral.
EMOTIONS = {"01": "neutral", "03": "happy", "04": "sad", "05": "angry"}
INTENSITIES = {"01": "normal", "02": "strong"}
NUM_ACTORS = 24


def scan(root, *, calm_as_neutral: bool = False, num_folds: int = 5) -> Manifest:
  """Scans a RAVDESS speech root (the folder holding `Actor_01 ... Actor_24`, or a parent).

  Args:
    root: the unpacked `Audio_Speech_Actors_01-24` folder (searched recursively).
    calm_as_neutral: map calm (02) to neutral in the 4-class `emotion` (864 instead of 672
      utterances on the full corpus); the `label` task keeps calm apart either way.
    num_folds: number of actor-pair groups (`Utterance.session` 1..num_folds).

  Returns:
    Every speech file (1440 on the full corpus), sorted by actor then file name. `emotion` is ""
    for labels outside the 4-class map (the `emotion` task does not use them).
  """
  grouping.check_num_folds(num_folds)
  if num_folds > NUM_ACTORS // 2:
    raise errors.ConfigError(f"config.data.num_folds={num_folds}: RAVDESS has {NUM_ACTORS // 2} "
                             "actor pairs, so at most that many folds")
  root = corpus.check_dir(root, "RAVDESS", "the folder holding Actor_01 ... Actor_24")
  files, notes = corpus.walk(root)
  # Of two copies of a file, keep the one in its own Actor_XX folder, then the shallower one.
  files.sort(key=lambda p: (p.parent.name != f"Actor_{p.name[-6:-4]}", len(p.parts), p))
  emotions = dict(EMOTIONS, **({"02": "neutral"} if calm_as_neutral else {}))
  parsed, seen = [], {}
  for path in files:
    fields = _parse(path, notes)
    if fields is None:
      continue
    if path.name.lower() in seen:
      notes.append(f"{path}: a second copy of {seen[path.name.lower()]}; ignored")
      continue
    seen[path.name.lower()] = path
    parsed.append((path, fields))
  if not parsed:
    raise errors.DatasetError(f"{root}: no RAVDESS speech file (03-01-EE-II-SS-RR-AA.wav) found; "
                              "point --config.data.root at Audio_Speech_Actors_01-24")
  durations = corpus.durations(path for path, _ in parsed)
  utterances = [_utterance(path, fields, emotions, duration, num_folds)
                for (path, fields), duration in zip(parsed, durations)]
  utterances = corpus.check_distinct(utterances, notes, str(root))
  utterances.sort(key=lambda u: (u.speaker, u.utt_id))
  notes.sort()
  corpus.log_notes("ravdess", notes)
  return Manifest(tuple(utterances), dataset="ravdess", root=str(root),
                  label_set=tuple(sorted(LABELS.values())), notes=tuple(notes))


def _parse(path: pathlib.Path, notes: list[str]) -> dict | None:
  """The filename fields, or None (with a note) for a file that is not RAVDESS audio speech."""
  match = FILENAME.match(path.name)
  if not match:
    notes.append(f"{path}: not a RAVDESS name (MM-VV-EE-II-SS-RR-AA.wav); ignored")
    return None
  modality, channel, emotion, intensity, statement, repetition, actor = match.groups()
  if modality != "03" or channel != "01":
    kind = "song" if channel == "02" else f"modality {modality}, vocal channel {channel}"
    notes.append(f"{path}: {kind} file, not audio-only speech; ignored")
    return None
  problems = []
  if emotion not in LABELS:
    problems.append(f"emotion {emotion}")
  if intensity not in INTENSITIES or (emotion == "01" and intensity == "02"):
    problems.append(f"intensity {intensity}")
  if statement not in ("01", "02") or repetition not in ("01", "02"):
    problems.append(f"statement/repetition {statement}/{repetition}")
  if not 1 <= int(actor) <= NUM_ACTORS:
    problems.append(f"actor {actor}")
  if problems:
    notes.append(f"{path}: invalid RAVDESS field(s) {', '.join(problems)}; ignored")
    return None
  folder = re.fullmatch(r"Actor_(\d\d)", path.parent.name)
  if folder and folder.group(1) != actor:
    notes.append(f"{path}: file of actor {actor} in folder {path.parent.name}; the file name's "
                 "actor is used")
  return {"emotion": emotion, "intensity": intensity, "statement": statement,
          "repetition": repetition, "actor": actor}


def _utterance(path, fields, emotions, duration, num_folds) -> Utterance:
  actor = int(fields["actor"])
  return Utterance(
      path=str(path), utt_id=path.stem, session=pair_group(actor, num_folds),
      speaker=f"{actor:02d}", gender="M" if actor % 2 else "F",
      emotion=emotions.get(fields["emotion"], ""), duration_s=duration,
      label=LABELS[fields["emotion"]],
      extra={"intensity": INTENSITIES[fields["intensity"]], "statement": fields["statement"],
             "repetition": fields["repetition"]})


def pair_group(actor: int, num_folds: int) -> int:
  """Group 1..num_folds of an actor: pair (2p-1, 2p) goes to group (p-1) mod num_folds + 1."""
  return (actor - 1) // 2 % num_folds + 1
