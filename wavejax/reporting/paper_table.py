"""The paper's Table 1 layout (Sec. 4.1) from a grid of cross-validated runs.

`summarize_grid` picks each (model, task)'s learning rate on VALIDATION accuracy and gathers, for
that rate, test WA/UA, training accuracy and the paper-style (best test epoch) numbers as mean +-
std over folds x seeds; `markdown` lays them out like the paper's Table 1 (test accuracy with
training accuracy in parentheses), with the paper's own numbers as a reference row.
"""

from __future__ import annotations

import numpy as np

PAPER_MODELS = ("soundnet", "wavernn", "simplenet_rnn", "simplenet_cnn", "specnet")
# Table 1 of the paper: test accuracy (training accuracy), %.
PAPER_TABLE = {
    "emotion": {"soundnet": (48.7, 95.0), "wavernn": (48.0, 83.8), "simplenet_rnn": (49.2, 73.8),
                "simplenet_cnn": (52.9, 80.0), "specnet": (42.3, 66.3)},
    "gender": {"soundnet": (88.6, 99.4), "wavernn": (88.8, 98.8), "simplenet_rnn": (88.7, 96.3),
               "simplenet_cnn": (88.6, 98.1), "specnet": (63.9, 78.1)},
}


def _stats(values) -> dict:
  values = np.asarray(values, np.float64)
  return {"mean": float(values.mean()), "std": float(values.std()), "n": int(values.size)}


def summarize_grid(grid: dict, incomplete=frozenset()) -> dict:
  """Per (model, task): the validation-chosen lr and its test/train/paper-style statistics.

  `grid` maps (model, task, lr, seed) to fold results; `incomplete` holds the (model, task, lr)
  groups with missing cells, which take no part in the choice (nor in the statistics): the rate is
  chosen among complete groups only, and a (model, task) with none is left out.
  """
  table = {}
  for model, task in sorted({(m, t) for m, t, _, _ in grid}):
    by_lr = {}
    for (m, t, lr, _), fold_results in grid.items():
      if (m, t) == (model, task) and (m, t, lr) not in incomplete:
        by_lr.setdefault(lr, []).extend(fold_results)
    if not by_lr:
      continue
    val = {lr: float(np.mean([r.val["wa"] for r in rs])) for lr, rs in by_lr.items()}
    chosen = max(sorted(val), key=lambda lr: val[lr])
    rs = by_lr[chosen]
    table.setdefault(task, {})[model] = {
        "learning_rate": chosen, "val_wa_by_lr": {f"{lr:g}": v for lr, v in val.items()},
        "incomplete_lrs": sorted({f"{lr:g}" for m, t, lr in incomplete if (m, t) == (model, task)}),
        "test_wa": _stats([r.test["wa"] for r in rs]),
        "test_ua": _stats([r.test["ua"] for r in rs]),
        "train_accuracy": _stats([r.train_accuracy for r in rs]),
        "paper_style_test_wa": _stats([r.best_test_wa for r in rs]),
        "paper_style_test_ua": _stats([r.best_test_ua for r in rs]),
    }
  return table


def _cell(entry, test_key: str) -> str:
  test, train_acc = entry[test_key], entry["train_accuracy"]
  return (f"{100 * test['mean']:.1f} ± {100 * test['std']:.1f} "
          f"({100 * train_acc['mean']:.1f})")


def _chosen_lr(entry) -> str:
  text = f"{entry['learning_rate']:g}"
  if entry.get("incomplete_lrs"):
    considered = len(entry["val_wa_by_lr"])
    text += f" ({considered} of {considered + len(entry['incomplete_lrs'])} rates)"
  return text


def markdown(table: dict, dataset: str, models=None, tasks=None) -> str:
  """The table; `models` / `tasks` (default: those in `table`) keep columns and rows that have no
  complete result yet, shown as —."""
  present = {m for row in table.values() for m in row} | set(models or ())
  models = [m for m in PAPER_MODELS if m in present] + sorted(present - set(PAPER_MODELS))
  lines = [f"Accuracy (%) on {dataset}: test mean ± std over folds x seeds, training accuracy in "
           "parentheses; learning rate chosen on validation.", "",
           "| | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
  for task in list(table) + [t for t in tasks or () if t not in table]:
    row = table.get(task, {})
    for key, label in (("test_wa", "WA"), ("test_ua", "UA"),
                       ("paper_style_test_wa", "paper-style WA (best test epoch)")):
      cells = [_cell(row[m], key) if m in row else "—" for m in models]
      lines.append(f"| {task.capitalize()} {label} | " + " | ".join(cells) + " |")
    lrs = [_chosen_lr(row[m]) if m in row else "—" for m in models]
    lines.append(f"| {task.capitalize()} chosen lr | " + " | ".join(lrs) + " |")
    paper = [f"{PAPER_TABLE[task][m][0]} ({PAPER_TABLE[task][m][1]})"
             if m in PAPER_TABLE.get(task, {}) else "—" for m in models]
    lines.append(f"| {task.capitalize()}: the paper's Table 1 (IEMOCAP) | " + " | ".join(paper)
                 + " |")
  return "\n".join(lines) + "\n"
