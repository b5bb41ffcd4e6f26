"""IEMOCAP (`IEMOCAP_full_release`) loader: label files -> `Manifest` (paper Sec. 4.1).

Layout (docs/reference.md#iemocap-layout-and-label-rules):
`Session{s}/dialog/EmoEvaluation/{dialog}.txt` holds one summary line per scored turn,
`[start - end]<TAB>utt_id<TAB>code<TAB>[V, A, D]`; the audio of a turn is
`Session{s}/sentences/wav/{dialog}/{utt_id}.wav`. The speaker's gender is the first letter of the
utterance id's last token (`Ses01F_impro01_M013` is a male speaker); the letter after `SesNN` only
says who wore the motion-capture markers.

A summary line without its `[V, A, D]` part (a hand-edited or converted label file) is used, since
the dimensional ratings are not needed, and logged (file and line); a line that starts like a
summary line but does not parse (cut, or a malformed id) is logged and not used.
"""

from __future__ import annotations

import pathlib
import re

from absl import logging

from wavejax import errors
from wavejax.data import corpus
from wavejax.data.manifest import Manifest, Utterance

SESSIONS = (1, 2, 3, 4, 5)
# Tolerant of spaces instead of tabs, integer times and trailing whitespace / `\r`; the
# `[V, A, D]` part may be missing (groups 7-9 are then None).
SUMMARY_LINE = re.compile(
    r"^\[(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\]\s+"
    r"(Ses0([1-5])[MF]_\S+_([MF])\d{3})\s+([A-Za-z]{3})"
    r"(?:\s+\[([-\d.]+),\s*([-\d.]+),\s*([-\d.]+)\])?\s*$")
# What a summary line starts with: `[<time> - `.
SUMMARY_START = re.compile(r"^\[\d+(?:\.\d+)?\s*-")
EMOTION_CODES = {"neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad", "ang": "angry"}


def find_root(root) -> pathlib.Path:
  """Returns the folder holding `Session1..5`: `root` itself or its `IEMOCAP_full_release`."""
  root = pathlib.Path(root).expanduser()
  if not root.is_dir():
    raise errors.DatasetError(
        f"IEMOCAP root {root} is not a directory; set --config.data.root to the folder that "
        "holds Session1 ... Session5 (IEMOCAP_full_release)")
  if not _session_dirs(root) and _session_dirs(root / "IEMOCAP_full_release"):
    root = root / "IEMOCAP_full_release"
  if not _session_dirs(root):
    raise errors.DatasetError(
        f"{root} is not an IEMOCAP root: no Session1 ... Session5 folders with "
        "dialog/EmoEvaluation inside; point --config.data.root at IEMOCAP_full_release")
  return root


def _session_dirs(root: pathlib.Path) -> dict[int, pathlib.Path]:
  return {s: root / f"Session{s}" for s in SESSIONS
          if (root / f"Session{s}" / "dialog" / "EmoEvaluation").is_dir()}


def label_files(session_dir: pathlib.Path) -> list[pathlib.Path]:
  """The per-dialog label files of a session, skipping sub-folders and `._*` AppleDouble files."""
  folder = session_dir / "dialog" / "EmoEvaluation"
  return sorted(p for p in folder.glob("*.txt")
                if p.is_file() and p.name.startswith("Ses") and not p.name.startswith("."))


def parse_label_file(path: pathlib.Path) -> list[tuple[str, str]]:
  """Returns `(utt_id, emotion_code)` for every summary line of one EmoEvaluation file."""
  try:
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
  except OSError as e:
    raise errors.LabelFileError(f"{path}: cannot read label file ({e.strerror or e}); "
                                "check its permissions or restore it from the corpus") from e
  entries, without_vad, malformed = [], [], []
  for number, line in enumerate(text.splitlines(), start=1):
    match = SUMMARY_LINE.match(line.strip())
    if match:
      entries.append((match.group(3), match.group(6).lower()))
      if match.group(7) is None:
        without_vad.append(number)
    elif SUMMARY_START.match(line.strip()):
      malformed.append(number)
  if without_vad:
    logging.warning("%s:%d: summary line without its [V, A, D] part (%d such line(s) in the file); "
                    "used, as only the category is needed", path, without_vad[0], len(without_vad))
  if malformed and entries:
    logging.warning("%s:%d: not a valid '[start - end] utt_id code [V, A, D]' summary line (%d "
                    "such line(s) in the file); not used, restore the file from the corpus",
                    path, malformed[0], len(malformed))
  if not entries and text.strip():
    raise errors.LabelFileError(
        f"{path}: no '[start - end] utt_id code [V, A, D]' summary line found; this is not an "
        "IEMOCAP EmoEvaluation file (remove it or restore the original)")
  return entries


def scan(root, *, merge_excited: bool = True, missing_audio: str = "error") -> Manifest:
  """Scans an IEMOCAP root into the 4-class (neutral, happy, sad, angry) manifest.

  Args:
    root: `IEMOCAP_full_release` (or the folder containing it).
    merge_excited: map `exc` to happy, as the paper's code does (5531 utterances on the full
      corpus); when False `exc` turns are dropped (4490 utterances).
    missing_audio: "error" raises `MissingAudioError` for a labelled turn without its wav;
      "skip" drops such turns and logs how many.

  Returns:
    The manifest, sorted by session then utterance id.
  """
  corpus.check_missing_policy(missing_audio)
  root = find_root(root)
  codes = dict(EMOTION_CODES)
  if not merge_excited:
    del codes["exc"]
  found, missing, seen = [], [], {}
  for folder_session, session_dir in _session_dirs(root).items():
    for path in label_files(session_dir):
      for utt_id, code in parse_label_file(path):
        if code not in codes:
          continue
        if utt_id in seen:
          _check_duplicate(utt_id, code, path, seen[utt_id])
          continue
        seen[utt_id] = (code, path)
        session = int(utt_id[3:5])  # the id, not the folder: a stray label copy changes nothing
        if session != folder_session:
          logging.warning("%s: lists %s, a Session%d turn; using it as Session%d", path, utt_id,
                          session, session)
        wav = (root / f"Session{session}" / "sentences" / "wav" / utt_id.rsplit("_", 1)[0]
               / f"{utt_id}.wav")
        if not wav.is_file():
          missing.append(wav)
          continue
        found.append((wav, utt_id, session, codes[code]))
  corpus.report_missing(missing, missing_audio, restore="the sentences/wav folders")
  if not found:
    raise errors.DatasetError(f"{root}: no labelled neu/hap/exc/sad/ang utterance with audio found")
  seconds = corpus.durations(wav for wav, *_ in found)
  utterances = sorted((_utterance(*entry, duration) for entry, duration in zip(found, seconds)),
                      key=lambda u: (u.session, u.utt_id))
  notes = []
  utterances = corpus.check_distinct(utterances, notes, str(root))
  corpus.log_notes("iemocap", notes)
  _warn_missing_sessions(root, {u.session for u in utterances})
  return Manifest(tuple(utterances), dataset="iemocap", root=str(root), notes=tuple(notes))


def _utterance(wav: pathlib.Path, utt_id: str, session: int, emotion: str,
               duration: float) -> Utterance:
  """One manifest entry; `duration` is 0.0 for an unreadable file, which decoding reports (or
  skips, with `config.data.bad_audio=skip`)."""
  gender = utt_id.rsplit("_", 1)[1][0]
  return Utterance(path=str(wav.resolve()), utt_id=utt_id, session=session,
                   speaker=f"{session:02d}{gender}", gender=gender, emotion=emotion,
                   duration_s=float(duration))


def _warn_missing_sessions(root: pathlib.Path, sessions: set[int]) -> None:
  absent = [s for s in SESSIONS if s not in sessions]
  if absent:
    logging.warning(
        "%s: no usable utterance of Session%s; the folds are the %d sessions found, fold k "
        "testing on the k-th of %s (restore the missing sessions for the paper's 5 folds)",
        root, ", Session".join(map(str, absent)), len(sessions), sorted(sessions))


def _check_duplicate(utt_id, code, path, first):
  first_code, first_path = first
  if code != first_code:
    raise errors.LabelFileError(
        f"{path}: {utt_id} is labelled {code!r} here but {first_code!r} in {first_path}; "
        "remove the stray copy of the label file")
  logging.warning("%s: %s is listed again (first in %s); using it once", path, utt_id, first_path)
