"""Per-fold results and the cross-validation summary (JSON and Markdown).

Two aggregations are reported side by side (docs/reference.md#metrics):
- honest: each fold's test accuracy at the epoch chosen on its validation set;
- paper-style: each fold's best TEST accuracy over epochs, which is how the paper's code aggregated
  its Table 1 (optimistic: the test set picks the epoch).
WA is overall accuracy, UA the mean per-class recall, F1 the macro F1.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Sequence

import numpy as np

from wavejax import atomic, errors


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
  """`[true, predicted]` counts."""
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
  return matrix


def metrics_from_confusion(matrix: np.ndarray) -> dict:
  """WA, UA and macro-F1 of a confusion matrix. Classes absent from the labels are left out of
  UA."""
  matrix = np.asarray(matrix, np.float64)
  support = matrix.sum(axis=1)
  predicted = matrix.sum(axis=0)
  hits = np.diag(matrix)
  present = support > 0
  recall = np.divide(hits, support, out=np.zeros_like(hits), where=present)
  precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
  denominator = precision + recall
  f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(hits),
                 where=denominator > 0)
  total = matrix.sum()
  return {
      "wa": float(hits.sum() / total) if total else 0.0,
      "ua": float(recall[present].mean()) if present.any() else 0.0,
      "f1": float(f1[present].mean()) if present.any() else 0.0,
  }


def classification_metrics(labels, predictions, num_classes: int) -> dict:
  matrix = confusion_matrix(labels, predictions, num_classes)
  return {**metrics_from_confusion(matrix), "confusion": matrix.tolist()}


@dataclasses.dataclass
class FoldResult:
  """Everything measured on one fold.

  `history` has one dict per epoch (train loss/accuracy and val/test metrics); `selected_epoch` is
  the epoch with the best validation metric; `test` holds the test metrics at that epoch;
  `train_accuracy` is the accuracy of the selected model on the training set in evaluation mode;
  `best_test_epoch` / `best_test_wa` give the paper-style (test-selected) number.
  """
  model: str
  task: str
  dataset: str
  fold: int
  test_session: int
  classes: list
  num_train: int
  num_val: int
  num_test: int
  selected_epoch: int
  val: dict
  test: dict
  train_accuracy: float
  best_test_epoch: int
  best_test_wa: float
  best_test_ua: float
  train_utterances_per_s: float
  history: list = dataclasses.field(default_factory=list)

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, data: dict) -> FoldResult:
    return cls(**data)


def write_json(path, data) -> None:
  """Writes JSON atomically (a unique temporary file beside it + rename, `atomic.atomic_write`): a
  crash never leaves half a file, and concurrent writers on several hosts never collide."""
  atomic.atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_text(path, text: str) -> None:
  """Writes text atomically, like `write_json`."""
  atomic.atomic_write(path, text)


def save_fold(result: FoldResult, path) -> None:
  write_json(path, result.to_json())


# What a damaged result.json's error line says to do.
REBUILD_RESULT = ("delete it and rerun the command that trained it: the fold's result is computed "
                  "again from its checkpoints (or the fold trains again if it has none)")


def load_fold(path) -> FoldResult:
  """The `FoldResult` in `path`, checked: readable JSON with every field, finite metrics.

  Raises:
    ResultsError: naming the file and the fix (delete it, rerun) when it is damaged.
  """
  path = pathlib.Path(path)
  try:
    data = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise errors.ResultsError(f"{path}: damaged ({errors.one_line(e)}); {REBUILD_RESULT}") from e
  names = [f.name for f in dataclasses.fields(FoldResult)]
  missing = [name for name in names if not isinstance(data, dict) or name not in data]
  if missing:
    raise errors.ResultsError(f"{path}: damaged (no {', '.join(missing[:3])}); {REBUILD_RESULT}")
  result = FoldResult.from_json({name: data[name] for name in names})
  try:
    numbers = [get(result) for get in SUMMARY_FIELDS.values()]
    finite = all(np.isfinite(float(number)) for number in numbers)
  except (TypeError, ValueError, KeyError):
    finite = False
  if not finite:
    raise errors.ResultsError(f"{path}: damaged (a metric is missing, not a number or not finite);"
                              f" {REBUILD_RESULT}")
  return result


def _mean_std(values: Sequence[float]) -> dict:
  values = np.asarray(values, np.float64)
  return {"mean": float(values.mean()), "std": float(values.std(ddof=0))}


SUMMARY_FIELDS = {
    "test_wa": lambda r: r.test["wa"],
    "test_ua": lambda r: r.test["ua"],
    "test_f1": lambda r: r.test["f1"],
    "train_accuracy": lambda r: r.train_accuracy,
    "val_wa": lambda r: r.val["wa"],
    "paper_style_test_wa": lambda r: r.best_test_wa,
    "paper_style_test_ua": lambda r: r.best_test_ua,
}


def summarize(results: Sequence[FoldResult]) -> dict:
  """Mean +- std over folds of every field in `SUMMARY_FIELDS`, plus the per-fold rows."""
  results = sorted(results, key=lambda r: r.fold)
  first = results[0]
  return {
      "model": first.model, "task": first.task, "dataset": first.dataset,
      "folds": [r.fold for r in results],
      "metrics": {name: _mean_std([get(r) for r in results])
                  for name, get in SUMMARY_FIELDS.items()},
      "per_fold": [{"fold": r.fold, "test_session": r.test_session,
                    **{name: get(r) for name, get in SUMMARY_FIELDS.items()},
                    "selected_epoch": r.selected_epoch, "best_test_epoch": r.best_test_epoch}
                   for r in results],
  }


def _pct(value: float) -> str:
  return f"{100 * value:.1f}"


def markdown_table(summary: dict) -> str:
  """The summary as a Markdown table: one row per fold, then mean +- std."""
  header = ("| fold | test session | test WA | test UA | test F1 | train acc | epoch "
            "| paper-style WA (best test epoch) |")
  lines = [f"**{summary['model']}** on **{summary['dataset']}**, task **{summary['task']}** "
           "(accuracies in %)", "", header, "|---" * 8 + "|"]
  for row in summary["per_fold"]:
    lines.append(
        f"| {row['fold']} | {row['test_session']} | {_pct(row['test_wa'])} "
        f"| {_pct(row['test_ua'])} | {_pct(row['test_f1'])} | {_pct(row['train_accuracy'])} "
        f"| {row['selected_epoch']} | {_pct(row['paper_style_test_wa'])} "
        f"(epoch {row['best_test_epoch']}) |")
  m = summary["metrics"]

  def cell(name):
    return f"{_pct(m[name]['mean'])} ± {_pct(m[name]['std'])}"

  lines.append(f"| **mean ± std** | | **{cell('test_wa')}** | **{cell('test_ua')}** "
               f"| {cell('test_f1')} | {cell('train_accuracy')} | "
               f"| {cell('paper_style_test_wa')} |")
  lines += ["", "Test WA/UA/F1 at the epoch chosen on validation data; train accuracy of that "
            "model in evaluation mode; paper-style = best test accuracy over epochs (the paper's "
            "optimistic aggregation)."]
  return "\n".join(lines) + "\n"
