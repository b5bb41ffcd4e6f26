r"""The paper's Table 1: every model x task x fold x learning rate (x seed), one command.

  python -m experiments.table1 --workdir=runs/table1                 # built-in corpus (~2 h, 2 cores)
  python -m experiments.table1 --workdir=runs/t1 --preset=smoke      # minutes on 2 CPU cores
  python -m experiments.table1 --workdir=runs/t1 --data_root=/data/IEMOCAP_full_release \
      --models=simplenet_cnn,specnet --tasks=emotion --lrs=1e-4,1e-3 --seeds=7,17

Each (model, task, learning rate, seed) is one `wavejax.cross_validate` run in its own workdir
cell, so an interrupted table resumes where it stopped (finished folds are read back). The
learning rate of each model and task is chosen on VALIDATION accuracy (mean over folds and seeds),
never on test; the table reports, for that rate, test accuracy with training accuracy in
parentheses (as the paper's Table 1), WA and UA, mean +- std over folds x seeds, and the
paper-style number (best test epoch, the paper code's optimistic aggregation) beside it.
Writes `table1.md` and `table1.json` into the workdir.

Models: the paper's five by default (`--models=all` adds the other configs). Sizes (`--preset`):
`builtin` (the default without --data_root) shrinks the built-in corpus run so the whole grid
(5 models x 2 tasks x 3 rates x 5 folds = 150 trainings) fits in about two hours on 2 CPU cores:
24 utterances per speaker, 2 s clips, 16 validation utterances, batch 16, 6 epochs. `paper` (the
default with --data_root) keeps every config default (6 s clips, 32 validation utterances, batch
32). `smoke` is for tests.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np
from absl import app, flags, logging

from wavejax import config as wavejax_config
from wavejax import errors, results, runtime, train

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
PAPER_MODELS = ("soundnet", "wavernn", "simplenet_rnn", "simplenet_cnn", "specnet")
# Table 1 of the paper: test accuracy (training accuracy), %.
PAPER_TABLE = {
    "emotion": {"soundnet": (48.7, 95.0), "wavernn": (48.0, 83.8), "simplenet_rnn": (49.2, 73.8),
                "simplenet_cnn": (52.9, 80.0), "specnet": (42.3, 66.3)},
    "gender": {"soundnet": (88.6, 99.4), "wavernn": (88.8, 98.8), "simplenet_rnn": (88.7, 96.3),
               "simplenet_cnn": (88.6, 98.1), "specnet": (63.9, 78.1)},
}
PRESETS = {
    "paper": {},
    "builtin": {"data.builtin.utterances_per_speaker": 24, "data.builtin.clip_seconds": 2.0,
                "data.val_size": 16, "train.batch_size": 16, "train.num_epochs": 6},
    "smoke": {"data.builtin.utterances_per_speaker": 6, "data.builtin.clip_seconds": 1.0,
              "data.val_size": 4, "train.batch_size": 8, "train.num_epochs": 1},
}

_WORKDIR = flags.DEFINE_string("workdir", None, "Where every run and the table go.")
_MODELS = flags.DEFINE_list("models", list(PAPER_MODELS),
                            "Models (configs/<name>.py), or 'all'; default: the paper's five.")
_TASKS = flags.DEFINE_list("tasks", ["emotion", "gender"], "Tasks.")
_LRS = flags.DEFINE_list("lrs", ["1e-5", "1e-4", "1e-3"], "Learning rates to choose from.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds.")
_FOLDS = flags.DEFINE_list("folds", None, "Folds (default: all).")
_DATA_ROOT = flags.DEFINE_string("data_root", None, "Corpus root (default: built-in corpus).")
_PRESET = flags.DEFINE_enum("preset", None, list(PRESETS),
                            "Size preset; default: builtin, or paper with --data_root.")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Override train.num_epochs.")


def available_models() -> list[str]:
  return sorted(p.stem for p in CONFIGS.glob("*.py") if p.stem not in ("__init__", "base"))


def load_config(model: str, task: str):
  path = CONFIGS / f"{model}.py"
  spec = importlib.util.spec_from_file_location(f"wavejax_configs_{model}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(task)


def cell_config(model, task, lr, seed, preset, data_root, epochs):
  config = load_config(model, task)
  for dotted, value in PRESETS[preset].items():
    wavejax_config.set_field(config, dotted, value)
  config.train.learning_rate = lr
  config.seed = seed
  if data_root:
    config.data.root = data_root
  if epochs:
    config.train.num_epochs = epochs
  return config


def cell_dir(workdir: pathlib.Path, model, task, lr, seed) -> pathlib.Path:
  return workdir / model / task / f"lr{lr:g}" / f"seed{seed}"


def run_grid(workdir, models, tasks, lrs, seeds, folds, preset, data_root, epochs) -> dict:
  """Runs (or reads back) every cell; returns {(model, task, lr, seed): [FoldResult]}."""
  grid = {}
  for model in models:
    for task in tasks:
      for lr in lrs:
        for seed in seeds:
          config = cell_config(model, task, lr, seed, preset, data_root, epochs)
          logging.info("table1: %s %s lr=%g seed=%d", model, task, lr, seed)
          fold_results, _ = train.cross_validate(config, cell_dir(workdir, model, task, lr, seed),
                                                 folds)
          grid[(model, task, lr, seed)] = fold_results
  return grid


def _stats(values) -> dict:
  values = np.asarray(values, np.float64)
  return {"mean": float(values.mean()), "std": float(values.std()), "n": int(values.size)}


def summarize_grid(grid: dict) -> dict:
  """Per (model, task): the validation-chosen lr and its test/train/paper-style statistics."""
  table = {}
  for model, task in sorted({(m, t) for m, t, _, _ in grid}):
    by_lr = {}
    for (m, t, lr, _), fold_results in grid.items():
      if (m, t) == (model, task):
        by_lr.setdefault(lr, []).extend(fold_results)
    val = {lr: float(np.mean([r.val["wa"] for r in rs])) for lr, rs in by_lr.items()}
    chosen = max(sorted(val), key=lambda lr: val[lr])
    rs = by_lr[chosen]
    table.setdefault(task, {})[model] = {
        "learning_rate": chosen, "val_wa_by_lr": {f"{lr:g}": v for lr, v in val.items()},
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


def markdown(table: dict, dataset: str) -> str:
  models = [m for m in PAPER_MODELS if any(m in row for row in table.values())]
  models += sorted({m for row in table.values() for m in row} - set(models))
  lines = [f"Accuracy (%) on {dataset}: test mean ± std over folds x seeds, training accuracy in "
           "parentheses; learning rate chosen on validation.", "",
           "| | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
  for task, row in table.items():
    for key, label in (("test_wa", "WA"), ("test_ua", "UA"),
                       ("paper_style_test_wa", "paper-style WA (best test epoch)")):
      cells = [_cell(row[m], key) if m in row else "—" for m in models]
      lines.append(f"| {task.capitalize()} {label} | " + " | ".join(cells) + " |")
    lrs = [f"{row[m]['learning_rate']:g}" if m in row else "—" for m in models]
    lines.append(f"| {task.capitalize()} chosen lr | " + " | ".join(lrs) + " |")
    paper = [f"{PAPER_TABLE[task][m][0]} ({PAPER_TABLE[task][m][1]})"
             if m in PAPER_TABLE.get(task, {}) else "—" for m in models]
    lines.append(f"| {task.capitalize()}: the paper's Table 1 (IEMOCAP) | " + " | ".join(paper)
                 + " |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  workdir = pathlib.Path(_WORKDIR.value)
  models = available_models() if _MODELS.value == ["all"] else _MODELS.value
  preset = _PRESET.value or ("paper" if _DATA_ROOT.value else "builtin")
  runtime.quiet_library_logs()
  runtime.enable_compilation_cache()
  unknown = sorted(set(models) - set(available_models()))
  if unknown:
    raise app.UsageError(f"unknown models {unknown}; available: {available_models()}")
  try:
    grid = run_grid(workdir, models, _TASKS.value, [float(x) for x in _LRS.value],
                    [int(x) for x in _SEEDS.value],
                    [int(x) for x in _FOLDS.value] if _FOLDS.value else None,
                    preset, _DATA_ROOT.value, _EPOCHS.value)
  except errors.WavejaxError as e:
    print(f"table1: error: {e}", file=sys.stderr)
    return 1
  table = summarize_grid(grid)
  dataset = _DATA_ROOT.value or "the built-in corpus"
  text = markdown(table, dataset)
  results.write_json(workdir / "table1.json", {"dataset": dataset, "table": table})
  results.write_text(workdir / "table1.md", text)
  print(text)
  print(f"Written: {workdir / 'table1.md'}, {workdir / 'table1.json'}")
  return 0


if __name__ == "__main__":
  app.run(main)
