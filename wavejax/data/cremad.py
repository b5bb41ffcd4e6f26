"""CREMA-D loader: `AudioWAV/{ActorID}_{SEN}_{EMO}_{LVL}.wav` + demographics CSV -> `Manifest`.

Layout (docs/reference.md#crema-d): 7442 clips in `AudioWAV/` (16 kHz mono; `AudioMP3/` is not
used) by 91 actors 1001-1091. The name gives actor, sentence (12 codes), emotion (ANG DIS FEA HAP
NEU SAD) and level (LO MD HI, XX unspecified). Gender is not in the name: it is joined from
`VideoDemographics.csv` (`"ActorID","Age","Sex","Race","Ethnicity"`, Sex Male/Female; 48 male,
43 female). Without the CSV the loader falls back to the 43 female actor ids counted from it, and
says so. The known defective clip `1076_MTI_SAD_XX` has no signal and is left out (noted).

Cross-validation groups: female and male actors, each sorted, dealt round robin to k groups
(`grouping.speaker_folds`) over every actor of the demographics table, so the groups do not
depend on which clips are present.
"""

from __future__ import annotations

import csv
import pathlib
import re

from absl import logging

from wavejax import errors
from wavejax.data import corpus, grouping
from wavejax.data.manifest import UNKNOWN, Manifest, Utterance

FILENAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})\.wav$", re.IGNORECASE)
SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
LABELS = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral",
          "SAD": "sad"}
EMOTIONS = {"NEU": "neutral", "HAP": "happy", "SAD": "sad", "ANG": "angry"}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
KNOWN_DEFECTS = {"1076_MTI_SAD_XX": "has no signal (a known defect of CREMA-D); left out"}
DEMOGRAPHICS = "VideoDemographics.csv"
ACTORS = tuple(range(1001, 1092))
# Counted from VideoDemographics.csv (docs/reference.md#crema-d); used only when the CSV is absent.
FEMALE_ACTORS = frozenset((
    1002, 1003, 1004, 1006, 1007, 1008, 1009, 1010, 1012, 1013, 1018, 1020, 1021, 1024, 1025,
    1028, 1029, 1030, 1037, 1043, 1046, 1047, 1049, 1052, 1053, 1054, 1055, 1056, 1058, 1060,
    1061, 1063, 1072, 1073, 1074, 1075, 1076, 1078, 1079, 1082, 1084, 1089, 1091))
_SEX = {"male": "M", "m": "M", "female": "F", "f": "F"}


def scan(root, *, num_folds: int = 5) -> Manifest:
  """Scans a CREMA-D root (the folder holding `AudioWAV/` and `VideoDemographics.csv`).

  Args:
    root: the CREMA-D folder, or its `AudioWAV` folder (the CSV is then looked for beside it).
    num_folds: number of gender-balanced actor groups (`Utterance.session` 1..num_folds).

  Returns:
    Every clip (7441 of the 7442 on the full corpus), sorted by actor then file name. `emotion` is
    "" for DIS and FEA (outside the 4-class map).
  """
  grouping.check_num_folds(num_folds)
  root = corpus.check_dir(root, "CREMA-D", "the CREMA-D folder holding AudioWAV/")
  wav_dir = root / "AudioWAV" if (root / "AudioWAV").is_dir() else root
  files, notes = corpus.walk(wav_dir, recursive=False)
  genders = _genders(root, wav_dir, notes)
  parsed = [(path, fields) for path in files if (fields := _parse(path, notes)) is not None]
  if not parsed:
    raise errors.DatasetError(f"{wav_dir}: no CREMA-D clip (1001_DFA_ANG_XX.wav) found; point "
                              "--config.data.root at the CREMA-D folder holding AudioWAV/")
  for actor in sorted({int(f["actor"]) for _, f in parsed} - set(genders)):
    notes.append(f"actor {actor}: not in {DEMOGRAPHICS}; gender unknown")
    genders[actor] = UNKNOWN
  groups = grouping.speaker_folds([str(a) for a in genders], list(genders.values()), num_folds)
  durations = corpus.durations(path for path, _ in parsed)
  utterances = [_utterance(path, fields, genders, groups, duration)
                for (path, fields), duration in zip(parsed, durations)]
  utterances = corpus.check_distinct(utterances, notes, str(root))
  utterances.sort(key=lambda u: (u.speaker, u.utt_id))
  corpus.log_notes("cremad", notes)
  return Manifest(tuple(utterances), dataset="cremad", root=str(root),
                  label_set=tuple(sorted(LABELS.values())), notes=tuple(notes))


def _parse(path: pathlib.Path, notes: list[str]) -> dict | None:
  match = FILENAME.match(path.name)
  if not match:
    notes.append(f"{path}: not a CREMA-D name (ActorID_SEN_EMO_LVL.wav); ignored")
    return None
  actor, sentence, emotion, level = (g.upper() if i else g for i, g in enumerate(match.groups()))
  if path.stem in KNOWN_DEFECTS:
    notes.append(f"{path}: {KNOWN_DEFECTS[path.stem]}")
    return None
  if emotion not in LABELS:
    notes.append(f"{path}: unknown emotion code {emotion}; ignored")
    return None
  if int(actor) not in ACTORS:
    notes.append(f"{path}: actor {actor} is outside 1001-1091; kept")
  if sentence not in SENTENCES:
    notes.append(f"{path}: unknown sentence code {sentence}; kept")
  if level not in LEVELS:
    notes.append(f"{path}: unknown level {level}; kept")
  return {"actor": actor, "sentence": sentence, "emotion": emotion, "level": level}


def _utterance(path, fields, genders, groups, duration) -> Utterance:
  actor = int(fields["actor"])
  return Utterance(
      path=str(path), utt_id=path.stem, session=groups[str(actor)], speaker=str(actor),
      gender=genders[actor], emotion=EMOTIONS.get(fields["emotion"], ""), duration_s=duration,
      label=LABELS[fields["emotion"]],
      extra={"sentence": fields["sentence"], "level": LEVELS.get(fields["level"], fields["level"])})


def _genders(root: pathlib.Path, wav_dir: pathlib.Path, notes: list[str]) -> dict[int, str]:
  """Actor -> "F"/"M" from `VideoDemographics.csv` (or the built-in table when it is absent)."""
  for folder in (root, wav_dir.parent):
    if (folder / DEMOGRAPHICS).is_file():
      return read_demographics(folder / DEMOGRAPHICS)
  note = (f"{root / DEMOGRAPHICS}: not found; gender taken from the built-in table of the 43 "
          "female actors (copy the CSV from the CREMA-D repository to silence this)")
  logging.warning("%s", note)
  notes.append(note)
  return {actor: "F" if actor in FEMALE_ACTORS else "M" for actor in ACTORS}


def read_demographics(path: pathlib.Path) -> dict[int, str]:
  """Actor id -> "F"/"M" from the `"ActorID","Age","Sex",...` table."""
  try:
    with open(path, encoding="utf-8-sig", newline="") as f:
      rows = list(csv.reader(f))
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise errors.LabelFileError(f"{path}: cannot read the demographics table ({e}); restore it "
                                "from the CREMA-D repository") from e
  header = [name.strip().lower() for name in rows[0]] if rows else []
  if "actorid" not in header or "sex" not in header:
    raise errors.LabelFileError(f"{path}: no ActorID and Sex columns in the header {rows[:1]}; "
                                "restore the file from the CREMA-D repository")
  actor_col, sex_col = header.index("actorid"), header.index("sex")
  genders = {}
  for line, row in enumerate(rows[1:], start=2):
    if not any(cell.strip() for cell in row):
      continue
    try:
      actor, sex = int(row[actor_col]), _SEX[row[sex_col].strip().lower()]
    except (IndexError, ValueError, KeyError):
      raise errors.LabelFileError(
          f"{path}:{line}: expected an integer ActorID and Sex Male/Female, got {row}; fix "
          "the line or restore the file") from None
    genders[actor] = sex
  return genders
