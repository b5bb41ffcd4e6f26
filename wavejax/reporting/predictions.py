"""Per-utterance predictions of one fold: `fold_<k>/predictions.csv`.

A fold's `result.json` keeps confusion matrices only; this file keeps every evaluated utterance,
so that two models can be compared utterance by utterance (`wavejax.stats`) and any metric can be
recomputed later.

Format: UTF-8 CSV with a header row, one row per (epoch kind, split, utterance). Columns:

- `epoch_kind`: `selected` (the epoch chosen on validation accuracy: the honest number) or
  `best_test` (the epoch with the best test accuracy: the paper-style number);
- `epoch`: that epoch (1-based, as in `result.json`), the same on every row of one (kind, split);
- `split`: `val` or `test`;
- `utterance_id`, `speaker`, `session`: the corpus' identifiers (`session` is the fold group);
- `label`, `predicted`: class names;
- `p_<class>`, one column per class in the model's class order: the softmax probability, written
  with 6 significant digits (a row sums to 1 within rounding).

Columns after `predicted` that do not start with `p_` are ignored by `read`, so later versions can
add columns. With pandas: `df = pd.read_csv(path); test = df[(df.epoch_kind == "selected") &
(df.split == "test")]; accuracy = (test.label == test.predicted).mean()`. With the csv module:
`rows = list(csv.DictReader(open(path, newline="")))`.

`read` checks the file (columns present, class names known, probabilities finite and summing to
1, no (kind, split, utterance) twice, one epoch per (kind, split)) and raises `ResultsError` with
one line naming the file and the fix.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import pathlib
from collections.abc import Iterable

import numpy as np

from wavejax import atomic, errors

FILENAME = "predictions.csv"
EPOCH_KINDS = ("selected", "best_test")
SPLITS = ("val", "test")
KEY_COLUMNS = ("epoch_kind", "epoch", "split", "utterance_id", "speaker", "session", "label",
               "predicted")
PROBABILITY_PREFIX = "p_"
# Six significant digits per probability: a row's sum is off by at most classes x 5e-7.
SUM_TOLERANCE = 1e-3

_REWRITE = "re-create it by evaluating the fold again (train_fold on its workdir)"


@dataclasses.dataclass(frozen=True)
class Predictions:
  """The rows of one (epoch kind, split): one entry per utterance, in the file's order.

  Attributes:
    epoch_kind: `selected` or `best_test` (see the module docstring).
    epoch: the epoch the predictions were made at.
    split: `val` or `test`.
    utterance_ids, speakers: `[N]` strings.
    sessions: `[N]` integers (the fold group of each utterance).
    labels, predicted: `[N]` integer class indices into `classes`.
    probabilities: `[N, C]` softmax probabilities, float64.
    classes: the `C` class names, in the model's order.
  """
  epoch_kind: str
  epoch: int
  split: str
  utterance_ids: np.ndarray
  speakers: np.ndarray
  sessions: np.ndarray
  labels: np.ndarray
  predicted: np.ndarray
  probabilities: np.ndarray
  classes: tuple[str, ...]

  def __post_init__(self):
    set_ = lambda name, value: object.__setattr__(self, name, value)  # frozen dataclass
    set_("classes", tuple(str(c) for c in self.classes))
    set_("epoch", int(self.epoch))
    set_("utterance_ids", np.asarray(self.utterance_ids).astype(str))
    set_("speakers", np.asarray(self.speakers).astype(str))
    set_("sessions", np.asarray(self.sessions, np.int64))
    set_("labels", np.asarray(self.labels, np.int64))
    set_("predicted", np.asarray(self.predicted, np.int64))
    set_("probabilities", np.asarray(self.probabilities, np.float64))
    if self.epoch_kind not in EPOCH_KINDS:
      raise ValueError(f"epoch_kind={self.epoch_kind!r}; expected one of {EPOCH_KINDS}")
    if self.split not in SPLITS:
      raise ValueError(f"split={self.split!r}; expected one of {SPLITS}")
    n, num_classes = len(self.utterance_ids), len(self.classes)
    if len(set(self.classes)) != num_classes or not num_classes:
      raise ValueError(f"classes={self.classes}: need one or more distinct names")
    for name in ("speakers", "sessions", "labels", "predicted"):
      if getattr(self, name).shape != (n,):
        raise ValueError(f"{name} has shape {getattr(self, name).shape}; expected ({n},)")
    if self.probabilities.shape != (n, num_classes):
      raise ValueError(f"probabilities have shape {self.probabilities.shape}; expected "
                       f"({n}, {num_classes})")
    for name in ("labels", "predicted"):
      values = getattr(self, name)
      if n and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(f"{name} must be class indices in [0, {num_classes})")

  def __len__(self) -> int:
    return len(self.utterance_ids)

  @property
  def key(self) -> tuple[str, str]:
    return (self.epoch_kind, self.split)

  @property
  def correct(self) -> np.ndarray:
    """`[N]` bool: the prediction is the label."""
    return self.labels == self.predicted


def from_probabilities(epoch_kind: str, epoch: int, split: str, utterance_ids, speakers,
                       sessions, labels, probabilities, classes) -> Predictions:
  """`Predictions` whose predicted class is the most probable one."""
  probabilities = np.asarray(probabilities, np.float64)
  return Predictions(epoch_kind, epoch, split, utterance_ids, speakers, sessions, labels,
                     probabilities.argmax(axis=-1), probabilities, classes)


def _check_writable(groups: list[Predictions]) -> None:
  if not groups:
    raise ValueError("no predictions to write")
  classes = groups[0].classes
  seen = set()
  for group in groups:
    if group.classes != classes:
      raise ValueError(f"{group.key} has classes {group.classes}, other rows {classes}")
    if group.key in seen:
      raise ValueError(f"{group.key} is given twice")
    seen.add(group.key)
    if len(set(group.utterance_ids.tolist())) != len(group):
      raise ValueError(f"{group.key} names an utterance twice")
    p = group.probabilities
    if not np.isfinite(p).all() or (p < 0).any() or (
        len(p) and np.abs(p.sum(axis=1) - 1).max() > SUM_TOLERANCE):
      raise ValueError(f"{group.key}: probabilities must be finite, non-negative and sum to 1")


def to_csv(groups: Iterable[Predictions]) -> str:
  """The file's text for these groups (see the module docstring)."""
  groups = list(groups)
  _check_writable(groups)
  classes = groups[0].classes
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(KEY_COLUMNS + tuple(PROBABILITY_PREFIX + c for c in classes))
  for g in groups:
    for i in range(len(g)):
      writer.writerow([g.epoch_kind, g.epoch, g.split, g.utterance_ids[i], g.speakers[i],
                       int(g.sessions[i]), classes[g.labels[i]], classes[g.predicted[i]],
                       *(f"{p:.6g}" for p in g.probabilities[i])])
  return out.getvalue()


def write(path, groups: Iterable[Predictions]) -> pathlib.Path:
  """Writes the groups (e.g. selected/val, selected/test, best_test/test) to `path` atomically.

  Every group must have the same classes; a (kind, split) may appear once; raises ValueError
  otherwise (a caller's bug, not a user's input).
  """
  return atomic.atomic_write(path, to_csv(groups))


def _fail(path, message: str) -> errors.ResultsError:
  return errors.ResultsError(f"{path}: {message}")


def _read_rows(path) -> tuple[list[str], list[list[str]]]:
  path = pathlib.Path(path)
  try:
    text = path.read_text(encoding="utf-8")
  except FileNotFoundError:
    raise _fail(path, "no such predictions file; evaluate the fold with a wavejax version that "
                "writes predictions.csv (train_fold on its workdir)") from None
  except UnicodeDecodeError:
    raise _fail(path, f"not UTF-8 text; {_REWRITE}") from None
  except OSError as e:
    raise _fail(path, f"cannot be read ({e.strerror or e}); check its permissions") from None
  try:
    rows = list(csv.reader(io.StringIO(text, newline="")))
  except csv.Error as e:
    raise _fail(path, f"not a valid CSV file ({e}); {_REWRITE}") from None
  rows = [row for row in rows if row]
  if not rows:
    raise _fail(path, f"empty file; {_REWRITE}")
  return rows[0], rows[1:]


def _columns(path, header: list[str]) -> tuple[dict[str, int], list[int], tuple[str, ...]]:
  """Column positions of the key columns, of the probability columns, and the class names."""
  positions = {}
  for index, name in enumerate(header):
    if name in positions:
      raise _fail(path, f"column {name!r} appears twice; {_REWRITE}")
    positions[name] = index
  for name in KEY_COLUMNS:
    if name not in positions:
      raise _fail(path, f"column {name!r} is missing (columns: {', '.join(header)}); not a "
                  f"predictions file, or a damaged one: {_REWRITE}")
  probability_columns = [i for i, name in enumerate(header)
                         if name.startswith(PROBABILITY_PREFIX) and name not in KEY_COLUMNS]
  if not probability_columns:
    raise _fail(path, f"no {PROBABILITY_PREFIX}<class> probability columns; {_REWRITE}")
  classes = tuple(header[i][len(PROBABILITY_PREFIX):] for i in probability_columns)
  return positions, probability_columns, classes


def _parse_int(path, line: int, column: str, text: str) -> int:
  try:
    return int(text)
  except ValueError:
    raise _fail(path, f"line {line}: {column} {text!r} is not an integer; {_REWRITE}") from None


def read(path) -> dict[tuple[str, str], Predictions]:
  """Reads and checks a predictions file; returns {(epoch_kind, split): Predictions}, in the
  file's order."""
  header, rows = _read_rows(path)
  positions, probability_columns, classes = _columns(path, header)
  class_index = {name: i for i, name in enumerate(classes)}
  groups: dict[tuple[str, str], dict] = {}
  for line, row in enumerate(rows, start=2):
    if len(row) != len(header):
      raise _fail(path, f"line {line} has {len(row)} fields where the header has {len(header)}; "
                  f"{_REWRITE}")
    fields = {name: row[positions[name]] for name in KEY_COLUMNS}
    kind, split = fields["epoch_kind"], fields["split"]
    if kind not in EPOCH_KINDS or split not in SPLITS:
      raise _fail(path, f"line {line}: epoch_kind {kind!r} / split {split!r} is not one of "
                  f"{EPOCH_KINDS} / {SPLITS}; {_REWRITE}")
    epoch = _parse_int(path, line, "epoch", fields["epoch"])
    group = groups.setdefault((kind, split), {"epoch": epoch, "ids": set(), "rows": []})
    if epoch != group["epoch"]:
      raise _fail(path, f"line {line}: {kind}/{split} rows name epochs {group['epoch']} and "
                  f"{epoch}; one (epoch_kind, split) has one epoch: {_REWRITE}")
    utterance = fields["utterance_id"]
    if utterance in group["ids"]:
      raise _fail(path, f"line {line}: utterance {utterance!r} appears twice in {kind}/{split}; "
                  f"{_REWRITE}")
    group["ids"].add(utterance)
    indices = []
    for column in ("label", "predicted"):
      if fields[column] not in class_index:
        raise _fail(path, f"line {line}: {column} {fields[column]!r} is not a class of the "
                    f"probability columns {list(classes)}; {_REWRITE}")
      indices.append(class_index[fields[column]])
    try:
      probabilities = [float(row[i]) for i in probability_columns]
    except ValueError:
      raise _fail(path, f"line {line}: a probability is not a number; {_REWRITE}") from None
    if not all(np.isfinite(probabilities)) or min(probabilities) < 0 or (
        abs(sum(probabilities) - 1) > SUM_TOLERANCE):
      raise _fail(path, f"line {line}: probabilities {probabilities} are not finite, "
                  f"non-negative and summing to 1; {_REWRITE}")
    group["rows"].append((utterance, fields["speaker"],
                          _parse_int(path, line, "session", fields["session"]), *indices,
                          probabilities))
  return {key: _group(key, group, classes) for key, group in groups.items()}


def _group(key, group: dict, classes) -> Predictions:
  ids, speakers, sessions, labels, predicted, probabilities = zip(*group["rows"])
  return Predictions(key[0], group["epoch"], key[1], np.array(ids, dtype=str),
                     np.array(speakers, dtype=str), sessions, labels, predicted,
                     np.array(probabilities, np.float64).reshape(len(ids), len(classes)), classes)


def read_split(path, epoch_kind: str = "selected", split: str = "test") -> Predictions:
  """The rows of one (epoch kind, split) of a predictions file, as arrays."""
  groups = read(path)
  if (epoch_kind, split) not in groups:
    present = ", ".join(f"{k}/{s}" for k, s in groups) or "none"
    raise _fail(path, f"has no {epoch_kind}/{split} rows (it has {present}); {_REWRITE}")
  return groups[(epoch_kind, split)]

