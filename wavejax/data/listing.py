"""The `manifest` dataset: any labelled audio listed in a CSV, TSV, JSONL or JSON file.

One row per file. Columns (case-insensitive; the first name is canonical, the others aliases):

  path     (file, filename, audio, wav)   required; relative paths are relative to the listing file
  label    (emotion, class)               required; any string, e.g. `angry` or `dog`
  speaker  (speaker_id)                   optional; folds are speaker-independent when given
  session  (group, fold)                  optional; the cross-validation group (integers are used as
                                          they are, other names are numbered 1..n in natural order)
  gender   (sex)                          optional; F/M (female/male/woman/man/w/f/m accepted),
                                          empty or unknown/u/na/? for unknown
  utt_id   (id)                           optional; default: the path without its extension

Every other column is kept in `Utterance.extra`. A JSONL file holds one JSON object per line, a
JSON file a list of them. `label` is the class of the `label` task; the 4-class `emotion` task uses
the rows whose label is one of neutral, happy, sad, angry. Without a session column the rows are
dealt to `num_folds` speaker groups (`grouping.assign_groups`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pathlib

from wavejax import errors
from wavejax.data import corpus, grouping
from wavejax.data.manifest import EMOTIONS, UNKNOWN, Manifest, Utterance

COLUMNS = {
    "path": ("path", "file", "filename", "audio", "wav"),
    "label": ("label", "emotion", "class"),
    "speaker": ("speaker", "speaker_id"),
    "session": ("session", "group", "fold"),
    "gender": ("gender", "sex"),
    "utt_id": ("utt_id", "id"),
}
DEFAULT_NAMES = ("manifest.csv", "manifest.tsv", "manifest.jsonl", "manifest.json")
SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json")
_GENDERS = {"f": "F", "female": "F", "woman": "F", "w": "F", "m": "M", "male": "M", "man": "M",
            "": UNKNOWN, "u": UNKNOWN, "unknown": UNKNOWN, "na": UNKNOWN, "n/a": UNKNOWN,
            "?": UNKNOWN, "none": UNKNOWN, "null": UNKNOWN}


def scan(root, *, num_folds: int = 5, missing_audio: str = "error") -> Manifest:
  """Reads a listing file (or the `manifest.{csv,tsv,jsonl,json}` in folder `root`).

  Args:
    root: the listing file, or a folder holding exactly one `manifest.*` file.
    num_folds: groups to deal the speakers (or files) to when there is no session column.
    missing_audio: "error" raises `MissingAudioError` for a listed file that does not exist;
      "skip" drops such rows and logs how many.

  Returns:
    The rows in file order. Problems that do not stop the scan (a file listed twice) are in
    `Manifest.notes`.
  """
  corpus.check_missing_policy(missing_audio)
  grouping.check_num_folds(num_folds)
  path = find_listing(root)
  rows = read_rows(path)
  if not rows:
    raise errors.DatasetError(f"{path}: the listing has no rows; add one line per audio file")
  columns = _columns(path, rows)
  notes, missing = [], []
  utterances = _utterances(path, rows, columns, notes, missing)
  corpus.report_missing(missing, missing_audio)
  utterances = corpus.check_distinct(utterances, notes, str(path))
  if not utterances:
    raise errors.DatasetError(f"{path}: none of the listed audio files exists")
  if "session" in columns:
    utterances = _numbered_sessions(utterances)
  else:
    utterances = grouping.assign_groups(utterances, num_folds, what=str(path))
  corpus.log_notes("manifest", notes)
  return Manifest(tuple(utterances), dataset="manifest", root=str(path),
                  label_set=tuple(sorted({u.label for u in utterances})), notes=tuple(notes))


def find_listing(root) -> pathlib.Path:
  """`root` when it is a file, else the single `manifest.*` file inside folder `root`."""
  path = pathlib.Path(root).expanduser()
  if path.is_file():
    return path.resolve()
  if not path.is_dir():
    raise errors.DatasetError(f"manifest {path} does not exist; set --config.data.root to a CSV, "
                              "TSV, JSONL or JSON file listing path,label")
  found = [path / name for name in DEFAULT_NAMES if (path / name).is_file()]
  if len(found) != 1:
    raise errors.DatasetError(
        f"{path}: expected exactly one of {', '.join(DEFAULT_NAMES)} in the folder, found "
        f"{len(found)}; set --config.data.root to the listing file itself")
  return found[0].resolve()


def read_rows(path: pathlib.Path) -> list[tuple[int, dict]]:
  """`(line number, {column: value})` for every non-blank row of the listing."""
  suffix = path.suffix.lower()
  try:
    text = path.read_text(encoding="utf-8-sig")
  except (OSError, UnicodeDecodeError) as e:
    raise errors.LabelFileError(f"{path}: cannot read the listing ({e}); save it as UTF-8 "
                                "text") from e
  if suffix in (".jsonl", ".ndjson"):
    return _json_lines(path, text)
  if suffix == ".json":
    return _json_list(path, text)
  return _csv_rows(path, text, "\t" if suffix == ".tsv" else None)


def _csv_rows(path, text: str, delimiter) -> list[tuple[int, dict]]:
  if delimiter is None:
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count) if first else ","
  reader = csv.reader(text.splitlines(), delimiter=delimiter)
  try:
    header = [name.strip() for name in next(reader, [])]
    rows = []
    for values in reader:
      if not any(v.strip() for v in values):
        continue
      if len(values) > len(header):
        raise errors.LabelFileError(
            f"{path}:{reader.line_num}: {len(values)} fields but the header has {len(header)}; "
            "quote fields that contain the delimiter")
      rows.append((reader.line_num, {name: value.strip() for name, value in zip(header, values)}))
  except csv.Error as e:
    raise errors.LabelFileError(f"{path}:{reader.line_num}: not valid CSV ({e})") from e
  return rows


def _json_lines(path, text: str) -> list[tuple[int, dict]]:
  rows = []
  for number, line in enumerate(text.splitlines(), start=1):
    if line.strip():
      rows.append((number, _json_object(path, number, line)))
  return rows


def _json_list(path, text: str) -> list[tuple[int, dict]]:
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise errors.LabelFileError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e
  if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
    raise errors.LabelFileError(f"{path}: expected a JSON list of objects with path and label")
  return [(number, item) for number, item in enumerate(data, start=1)]


def _json_object(path, number: int, line: str) -> dict:
  try:
    item = json.loads(line)
  except json.JSONDecodeError as e:
    raise errors.LabelFileError(f"{path}:{number}: not valid JSON ({e.msg})") from e
  if not isinstance(item, dict):
    raise errors.LabelFileError(f"{path}:{number}: expected a JSON object with path and label")
  return item


def _columns(path, rows) -> dict[str, str]:
  """Field -> the column name used for it (the canonical name first, then the aliases)."""
  names = {}
  for _, row in rows:
    for name in row:
      names.setdefault(str(name).strip().lower(), name)
  columns = {}
  for field, aliases in COLUMNS.items():
    for alias in aliases:
      if alias in names:
        columns[field] = names[alias]
        break
  for field in ("path", "label"):
    if field not in columns:
      raise errors.LabelFileError(
          f"{path}: no {field!r} column (columns: {sorted(names.values())}); a listing needs "
          "path and label columns")
  return columns


def _utterances(path, rows, columns, notes, missing) -> list[Utterance]:
  base = path.parent
  known = set(columns.values())
  utterances, by_path, by_id = [], {}, {}
  for line, row in rows:
    values = {field: _text(row.get(column)) for field, column in columns.items()}
    where = f"{path}:{line}"
    for field in ("path", "label"):
      if not values[field]:
        raise errors.LabelFileError(f"{where}: the {field} is empty; fill it or remove the row")
    if "session" in columns and not values["session"]:
      raise errors.LabelFileError(f"{where}: the session is empty; give every row a session or "
                                  "leave the column out")
    audio = pathlib.Path(os.path.normpath(base / pathlib.Path(values["path"]).expanduser()))
    utt = Utterance(
        path=str(audio), utt_id=values.get("utt_id") or _default_id(audio, base),
        session=0, speaker=values.get("speaker", UNKNOWN), gender=_gender(where, values),
        emotion=values["label"].lower() if values["label"].lower() in EMOTIONS else "",
        duration_s=0.0, label=values["label"],
        extra={**{k: v for k, v in row.items() if k not in known},
               **({"session": values["session"]} if "session" in columns else {})})
    if _duplicate(where, utt, by_path, by_id, notes):
      continue
    if not os.path.lexists(audio):
      missing.append(audio)
      notes.append(f"{audio}: listed at line {line} but does not exist")
      continue
    utterances.append(utt)
  durations = corpus.durations(u.path for u in utterances)
  return [_with(u, duration_s=d) for u, d in zip(utterances, durations)]


def _duplicate(where, utt, by_path, by_id, notes) -> bool:
  """True (with a note) for a repeated row; raises for conflicting labels or ids."""
  first = by_path.get(utt.path)
  if first is not None:
    if first[1].label != utt.label:
      raise errors.LabelFileError(
          f"{where}: {utt.path} is labelled {utt.label!r} here but {first[1].label!r} at "
          f"{first[0]}; keep one row per file")
    notes.append(f"{where}: {utt.path} is listed again (first at {first[0]}); used once")
    return True
  if utt.utt_id in by_id:
    raise errors.LabelFileError(f"{where}: utt_id {utt.utt_id!r} is also used at "
                                f"{by_id[utt.utt_id]}; make the ids unique")
  by_path[utt.path] = (where, utt)
  by_id[utt.utt_id] = where
  return False


def _numbered_sessions(utterances: list[Utterance]) -> list[Utterance]:
  """Integer sessions as they are; otherwise the names numbered 1..n in natural order."""
  names = [u.extra["session"] for u in utterances]
  if all(_is_int(name) for name in names):
    number = {name: int(name) for name in names}
  else:
    number = {name: i for i, name in enumerate(sorted(set(names), key=grouping.natural_key), 1)}
  return [_with(u, session=number[u.extra["session"]],
                extra={k: v for k, v in u.extra.items() if k != "session" or not _is_int(v)})
          for u in utterances]


def _gender(where: str, values: dict) -> str:
  gender = values.get("gender", "")
  if gender.lower() not in _GENDERS:
    raise errors.LabelFileError(f"{where}: gender {gender!r} is not understood; use F, M or leave "
                                "it empty for unknown")
  return _GENDERS[gender.lower()]


def _default_id(audio: pathlib.Path, base: pathlib.Path) -> str:
  try:
    relative = audio.relative_to(base)
  except ValueError:
    relative = audio
  return relative.with_suffix("").as_posix()


def _text(value) -> str:
  if value is None:
    return ""
  if isinstance(value, float) and value.is_integer():
    value = int(value)
  return str(value).strip()


def _is_int(text: str) -> bool:
  try:
    int(text)
  except ValueError:
    return False
  return True


def _with(utt: Utterance, **changes) -> Utterance:
  return dataclasses.replace(utt, **changes)
