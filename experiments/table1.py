r"""The paper's Table 1: every model x task x fold x learning rate (x seed), one command.

  python -m experiments.table1 --workdir=runs/table1              # built-in corpus (~1 h, 2 cores)
  python -m experiments.table1 --workdir=runs/t1 --preset=smoke      # ~14 min for the five models,
  2 cores
  python -m experiments.table1 --workdir=runs/t1 --data_root=/data/IEMOCAP_full_release \
      --models=simplenet_cnn,specnet --tasks=emotion --lrs=1e-4,1e-3 --seeds=7,17

Each training run, one (model, task, learning rate, seed, fold) cell, is one `wavejax.train_fold`
call into `<workdir>/<model>/<task>/lr<lr>/seed<seed>/fold_<k>`, so an interrupted table resumes
where it stopped (finished folds are read back, a started one resumes from its checkpoint). The
learning rate of each model and task is chosen on VALIDATION accuracy (mean over folds and seeds),
never on test; the table reports, for that rate, test accuracy with training accuracy in
parentheses (as the paper's Table 1), WA and UA, mean +- std over folds x seeds, and the
paper-style number (best test epoch, the paper code's optimistic aggregation) beside it.
Writes `table1.md` and `table1.json` into the workdir once every cell is complete.

Many workers (docs/sweeps.md): `--shard=I/N` (or a Slurm / Kubernetes array's variables) runs only
worker I's share of the cells, each under a lock file in its fold folder, so workers sharing one
workdir never run a cell twice; `--collect` writes the table from the complete cells and lists the
missing ones (a learning rate is chosen only among rates whose every fold and seed is complete).

  for i in 0 1; do python -m experiments.table1 --workdir=W --shard=$i/2 & done; wait
  python -m experiments.table1 --workdir=W --collect

Models: the paper's five by default (`--models=all` adds the other configs). Sizes (`--preset`):
`builtin` (the default without --data_root) shrinks the built-in corpus run so the whole grid
(5 models x 2 tasks x 3 rates x 5 folds = 150 trainings) fits in about an hour on 2 CPU cores:
20 utterances per speaker, 2 s clips, 12 validation utterances, batch 16, 5 epochs. `paper` (the
default with --data_root) keeps every config default (6 s clips, 32 validation utterances, batch
32). `smoke` is for tests.
"""

from __future__ import annotations

import collections
import itertools
import json
import pathlib
import sys

from absl import flags, logging

from wavejax import cli, errors, runtime, training
from wavejax.analysis import common
from wavejax.config import presets
from wavejax.data import folds as folds_lib
from wavejax.data import pipeline
from wavejax.reporting import paper_table, results
from wavejax.training import sweep

_WORKDIR = flags.DEFINE_string("workdir", None, "Where every run and the table go.")
_MODELS = flags.DEFINE_list("models", list(paper_table.PAPER_MODELS),
                            "Models (configs/<name>.py), or 'all'; default: the paper's five.")
_TASKS = flags.DEFINE_list("tasks", ["emotion", "gender"], "Tasks.")
_LRS = flags.DEFINE_list("lrs", ["1e-5", "1e-4", "1e-3"], "Learning rates to choose from.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds.")
_FOLDS = flags.DEFINE_list("folds", None, "Folds (default: all).")
_DATA_ROOT = flags.DEFINE_string("data_root", None, "Corpus root (default: built-in corpus).")
_PRESET = presets.define_flag(presets.TABLE1, None)  # default: builtin, or paper with --data_root
_EPOCHS = flags.DEFINE_integer("epochs", None, "Override train.num_epochs.")
_SWEEP = sweep.define_flags()

# One training run: a cell of the grid.
Cell = collections.namedtuple("Cell", "model task lr seed fold")


def cell_config(model, task, lr, seed, preset, data_root, epochs):
  config = common.load_config(model, presets.fields(preset, presets.TABLE1), arg=task)
  config.train.learning_rate = lr
  config.seed = seed
  if data_root:
    config.data.root = data_root
  if epochs:
    config.train.num_epochs = epochs
  return config


def run_dir(workdir: pathlib.Path, model, task, lr, seed) -> pathlib.Path:
  """The folder of one (model, task, lr, seed): a `cross_validate`-style workdir of its folds."""
  return pathlib.Path(workdir) / model / task / f"lr{lr:g}" / f"seed{seed}"


def fold_dir(workdir, cell: Cell) -> pathlib.Path:
  return run_dir(workdir, *cell[:4]) / f"fold_{cell.fold}"


def result_path(workdir, cell: Cell) -> pathlib.Path:
  return fold_dir(workdir, cell) / "result.json"


def lock_path(workdir, cell: Cell) -> pathlib.Path:
  return fold_dir(workdir, cell) / "running.lock"


_NUM_FOLDS = {}


def default_folds(config) -> list[int]:
  """`config.fold`, or every fold of the dataset: its sessions (fold groups), from a scan of the
  labels without decoding audio, once per data config and task."""
  if config.get("fold") is not None:
    return [config.fold]
  key = json.dumps({"task": config.task, "data": config.data.to_dict()}, sort_keys=True,
                   default=str)
  if key not in _NUM_FOLDS:
    manifest = pipeline.load_manifest(config.data, task=config.task)
    _NUM_FOLDS[key] = folds_lib.num_folds(manifest)
  return list(range(1, _NUM_FOLDS[key] + 1))


def build_grid(models, tasks, lrs, seeds, folds, preset, data_root, epochs):
  """The grid of `Cell`s and each run's config, {(model, task, lr, seed): config}."""
  configs, cells = {}, []
  for model, task, lr, seed in itertools.product(models, tasks, lrs, seeds):
    config = cell_config(model, task, lr, seed, preset, data_root, epochs)
    configs[(model, task, lr, seed)] = config
    cells += [Cell(model, task, lr, seed, k) for k in (folds or default_folds(config))]
  return sweep.Grid(cells), configs


def run_cells(workdir, grid: sweep.Grid, configs: dict, cells, lock_timeout_s: float,
              wait: bool = False, poll_s: float = 60.0) -> sweep.Report:
  """Trains (or finds complete) each cell with `training.train_fold`, under its lock."""
  def run(cell):
    training.train_fold(configs[tuple(cell[:4])], cell.fold, workdir=run_dir(workdir, *cell[:4]))

  return sweep.run_cells(cells, run, is_complete=lambda c: result_path(workdir, c).exists(),
                         lock_path=lambda c: lock_path(workdir, c), lock_timeout_s=lock_timeout_s,
                         wait=wait, poll_s=poll_s, describe=grid.describe)


def run_grid(workdir, models, tasks, lrs, seeds, folds, preset, data_root, epochs) -> dict:
  """Runs (or reads back) every cell in this process; returns {(model, task, lr, seed):
  [FoldResult]}."""
  grid, configs = build_grid(models, tasks, lrs, seeds, folds, preset, data_root, epochs)
  run_cells(workdir, grid, configs, grid.cells, sweep.DEFAULT_LOCK_TIMEOUT_S)
  return collect(workdir, grid)[0]


def collect(workdir, grid: sweep.Grid, lock_timeout_s: float = sweep.DEFAULT_LOCK_TIMEOUT_S
            ) -> tuple[dict, list]:
  """The complete cells' results, {(model, task, lr, seed): [FoldResult]}, and the missing cells
  as [(cell, status)] (`sweep.cell_status`)."""
  runs, missing = {}, []
  for cell in grid.cells:
    path = result_path(workdir, cell)
    if path.exists():
      runs.setdefault(tuple(cell[:4]), []).append(results.load_fold(path))
    else:
      status = sweep.cell_status(path, lock_path(workdir, cell), lock_timeout_s)
      if status == "not started" and (fold_dir(workdir, cell) / "checkpoints").exists():
        status = "interrupted (a checkpoint, no live lock)"
      missing.append((cell, status))
  return runs, missing


def write_run_summaries(workdir, runs: dict, missing: list) -> None:
  """summary.json / summary.md of each (model, task, lr, seed) whose folds are all complete, as
  `cross_validate` writes them."""
  partial = {tuple(cell[:4]) for cell, _ in missing}
  for key, fold_results in runs.items():
    folder = run_dir(workdir, *key)
    if key not in partial:
      summary = results.summarize(fold_results)
      results.write_json(folder / "summary.json", summary)
      results.write_text(folder / "summary.md", results.markdown_table(summary))


STATUS_LABELS = (("running", "running (locked by a live worker)"),
                 ("stale", "stale lock (its worker died; a rerun takes it over)"),
                 ("interrupted", "interrupted (a rerun resumes it from its checkpoint)"),
                 ("not started", "not started (or failed before its first checkpoint)"))


def missing_lines(grid: sweep.Grid, missing: list) -> list[str]:
  """The missing cells grouped by status, one line per (model, task, lr, seed) and status."""
  lines = []
  for prefix, label in STATUS_LABELS:
    cells = [cell for cell, status in missing if status.startswith(prefix)]
    lines += [f"- {label}: {text}" for text in grid.describe_many(cells)]
  return lines


def missing_markdown(grid: sweep.Grid, missing: list) -> str:
  return "\n".join([
      "", f"**Incomplete grid: {len(missing)} of {len(grid)} training runs are missing.** The "
      "learning rate is chosen only among rates whose every fold and seed is complete; a chosen "
      "lr marked \"(k of n rates)\" may change when the other rates finish, and — means no rate "
      "is complete yet. Missing runs:", "", *missing_lines(grid, missing)]) + "\n"


def write_table(workdir, grid: sweep.Grid, dataset: str, models, tasks,
                lock_timeout_s: float = sweep.DEFAULT_LOCK_TIMEOUT_S) -> tuple[str, list]:
  """Collects the complete cells into table1.md / table1.json; returns the text and the missing
  cells."""
  runs, missing = collect(workdir, grid, lock_timeout_s)
  write_run_summaries(workdir, runs, missing)
  incomplete = {(c.model, c.task, c.lr) for c, _ in missing}
  table = paper_table.summarize_grid(runs, incomplete)
  text = paper_table.markdown(table, dataset, models, tasks)
  if missing:
    text += missing_markdown(grid, missing)
    logging.warning("table1: %d of %d training runs are missing:\n%s", len(missing), len(grid),
                    "\n".join(f"  {grid.describe(c)}: {status}" for c, status in missing))
  results.write_json(workdir / "table1.json", {
      "dataset": dataset, "table": table, "complete": not missing,
      "cells": {"total": len(grid), "complete": len(grid) - len(missing)},
      "missing": [{**cell._asdict(), "status": status} for cell, status in missing]})
  results.write_text(workdir / "table1.md", text)
  return text, missing


def log_share(grid: sweep.Grid, shard: sweep.Shard, cells) -> None:
  logging.info("table1: %d training runs in the grid (fingerprint %s; every worker must show the "
               "same); shard %s (%s) takes %d:\n%s", len(grid), grid.fingerprint(), shard,
               shard.source, len(cells), "\n".join(f"  {t}" for t in grid.describe_many(cells)))


def grid_from_flags(models, preset) -> tuple[sweep.Grid, dict]:
  lrs = _numbers("lrs", _LRS.value, float)
  if any(not 0 < lr < float("inf") for lr in lrs):
    raise errors.SweepError(f"--lrs={','.join(_LRS.value)}: learning rates must be positive")
  return build_grid(models, _TASKS.value, lrs, _numbers("seeds", _SEEDS.value, int),
                    _numbers("folds", _FOLDS.value, int) if _FOLDS.value else None,
                    preset, _DATA_ROOT.value, _EPOCHS.value)


def _numbers(name: str, values: list[str], kind) -> list:
  try:
    return [kind(value) for value in values]
  except ValueError:
    raise errors.SweepError(f"--{name}={','.join(values)}: not a list of "
                            f"{'numbers' if kind is float else 'integers'}") from None


def finish(workdir, grid: sweep.Grid, shard: sweep.Shard, report: sweep.Report, models) -> int:
  """Reports failed cells; writes the table when the grid is complete, with --collect, or when
  this process ran the whole grid alone (then the table lists what failed)."""
  for cell, message in report.failed:
    print(f"table1: error: {grid.describe(cell)}: {message}", file=sys.stderr)
  alone = shard.count == 1 and not report.left
  if _SWEEP.collect.value or alone or all(result_path(workdir, c).exists() for c in grid.cells):
    text, _ = write_table(workdir, grid, _DATA_ROOT.value or "the built-in corpus", models,
                          _TASKS.value, _SWEEP.lock_timeout.value)
    print(text)
    print(f"Written: {workdir / 'table1.md'}, {workdir / 'table1.json'}")
  else:
    logging.info("table1: this worker is done (ran %d, found %d complete, left %d to other "
                 "workers, %d failed); the grid is not complete yet. When every worker has "
                 "finished, write the table with the same flags and --collect",
                 len(report.ran), len(report.complete), len(report.left), len(report.failed))
  return 1 if report.failed else 0


def main(argv):
  del argv
  if not _WORKDIR.value:
    cli.fail("table1", "--workdir is required")
  workdir = pathlib.Path(_WORKDIR.value)
  models = common.available_configs() if _MODELS.value == ["all"] else _MODELS.value
  preset = _PRESET.value or ("paper" if _DATA_ROOT.value else "builtin")
  runtime.enable_compilation_cache()
  unknown = sorted(set(models) - set(common.available_configs()))
  if unknown:
    cli.fail("table1", f"unknown models {unknown}; available: {common.available_configs()}")
  report = sweep.Report()
  shard = _SWEEP.resolve_shard()
  grid, configs = grid_from_flags(models, preset)
  if not _SWEEP.collect.value:
    cells = grid.shard(shard)
    log_share(grid, shard, cells)
    report = run_cells(workdir, grid, configs, cells, _SWEEP.lock_timeout.value,
                       _SWEEP.wait.value, _SWEEP.poll_interval.value)
  return finish(workdir, grid, shard, report, models)


if __name__ == "__main__":
  cli.run(main, "table1")
