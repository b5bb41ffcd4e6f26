r"""The paper's Table 1: every model x task x fold x learning rate (x seed), one command.

  python -m experiments.table1 --workdir=runs/table1              # built-in corpus (~1 h, 2 cores)
  python -m experiments.table1 --workdir=runs/t1 --preset=smoke      # ~14 min for the five models,
  2 cores
  python -m experiments.table1 --workdir=runs/t1 --data_root=/data/IEMOCAP_full_release \
      --models=simplenet_cnn,specnet --tasks=emotion --lrs=1e-4,1e-3 --seeds=7,17

Each training run, one (model, task, learning rate, seed, fold) cell, writes
`<workdir>/<model>/<task>/lr<lr>/seed<seed>/fold_<k>` as `wavejax.train_fold` does, so an
interrupted table resumes where it stopped (finished folds are read back, a started one resumes
from its checkpoint). By default (`--group`) the learning rates and seeds of one (model, task,
fold) train together as one vmapped step (`wavejax.train_group`), in as few groups as fit the
device's memory (`group.members_that_fit`: the single train step's memory as XLA compiles it,
times the members, against 80% of the device's memory); the group's latest checkpoint is in
`<workdir>/<model>/<task>/group_fold_<k>/`, each run's files in its own folder as above.
`--nogroup` trains every run on its own (`wavejax.train_fold`). The
learning rate of each model and task is chosen on VALIDATION accuracy (mean over folds and seeds),
never on test; the table reports, for that rate, test accuracy with training accuracy in
parentheses (as the paper's Table 1), WA and UA, mean +- std over folds x seeds, and the
paper-style number (best test epoch, the paper code's optimistic aggregation) beside it.
Writes `table1.md` and `table1.json` into the workdir once every cell is complete.

Many workers (docs/sweeps.md): `--shard=I/N` (or a Slurm / Kubernetes array's variables) runs only
worker I's share of the units of work (with `--group` a (model, task, fold) and all its rates and
seeds, locked by `group_fold_<k>/running.lock`; with `--nogroup` one cell, locked in its fold
folder), so workers sharing one workdir (with the same flags) never run a cell twice;
`--collect` writes the table from the complete cells and lists the missing ones (a learning
rate is chosen only among rates whose every fold and seed is complete).

  for i in 0 1; do python -m experiments.table1 --workdir=W --shard=$i/2 & done; wait
  python -m experiments.table1 --workdir=W --collect

Models: the paper's five by default (`--models=all` adds the other configs). Sizes (`--preset`):
`builtin` (the default without --data_root) shrinks the built-in corpus run so the whole grid
(5 models x 2 tasks x 3 rates x 5 folds = 150 trainings) fits in about an hour on 2 CPU cores:
20 utterances per speaker, 2 s clips, 12 validation utterances, batch 16, 5 epochs; its claim
intervals are wide (README). `decisive` generates the built-in corpus at IEMOCAP's size (~1,100
utterances per session, 6 s clips) and trains every cell with 3 seeds at the paper's sizes: an
accelerator's job. `paper` (the default with --data_root) keeps every config default (6 s clips,
32 validation utterances, batch 32). `smoke` is for tests.

Under the table, table1.md / table1.json rule on the paper's claims (`wavejax.reporting.claims`)
from the chosen runs' per-utterance predictions, with 95 % paired bootstrap intervals, and
table1_claims.png draws them (a forest plot) when plots are installed; runs without predictions
are named.
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
from wavejax.data import audio, pipeline
from wavejax.data import folds as folds_lib
from wavejax.reporting import claims, forest_plot, paper_table, plots, predictions, results
from wavejax.training import group, sweep

_WORKDIR = flags.DEFINE_string("workdir", None, "Where every run and the table go.")
_MODELS = flags.DEFINE_list("models", list(paper_table.PAPER_MODELS),
                            "Models (configs/<name>.py), or 'all'; default: the paper's five.")
_TASKS = flags.DEFINE_list("tasks", ["emotion", "gender"], "Tasks.")
_LRS = flags.DEFINE_list("lrs", ["1e-5", "1e-4", "1e-3"], "Learning rates to choose from.")
_SEEDS = flags.DEFINE_list("seeds", None, "Seeds (default: the preset's, else 0).")
_FOLDS = flags.DEFINE_list("folds", None, "Folds (default: all).")
_DATA_ROOT = flags.DEFINE_string("data_root", None, "Corpus root (default: built-in corpus).")
_PRESET = presets.define_flag(presets.TABLE1, None)  # default: builtin, or paper with --data_root
_EPOCHS = flags.DEFINE_integer("epochs", None, "Override train.num_epochs.")
_GROUP = flags.DEFINE_boolean(
    "group", True, "Train the learning rates and seeds of each (model, task, fold) together as one "
    "vmapped step, in groups that fit the device's memory (one unit of work, one lock); "
    "--nogroup trains every run on its own. Every worker of a sweep must use the same.")
_SWEEP = sweep.define_flags()

# One training run: a cell of the grid.
Cell = collections.namedtuple("Cell", "model task lr seed fold")
# With --group, one unit of work: a (model, task, fold) and its cells (every lr and seed).
GroupCell = collections.namedtuple("GroupCell", "model task fold")


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


def group_of(cell: Cell) -> GroupCell:
  return GroupCell(cell.model, cell.task, cell.fold)


def group_dir(workdir, unit: GroupCell) -> pathlib.Path:
  """The folder of a (model, task, fold)'s groups: their lock and latest checkpoints."""
  return pathlib.Path(workdir) / unit.model / unit.task / f"group_fold_{unit.fold}"


def group_lock_path(workdir, unit: GroupCell) -> pathlib.Path:
  return group_dir(workdir, unit) / "running.lock"


def group_grid(grid: sweep.Grid) -> tuple[sweep.Grid, dict]:
  """The grid's units of work with --group and each one's cells, {GroupCell: [Cell]}."""
  members = {}
  for cell in grid.cells:
    members.setdefault(group_of(cell), []).append(cell)
  return sweep.Grid(members), members


def has_checkpoint(directory: pathlib.Path) -> bool:
  """Whether the Orbax folder `directory` holds a finished checkpoint."""
  return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


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


_CAPACITY = {}


def group_capacity(config) -> int | None:
  """How many runs of `config`'s model and task fit one group (`group.members_that_fit`), once
  per model, task and sizes; None: unknown (the whole unit is one group)."""
  key = json.dumps({"model": config.model.to_dict(), "train": config.train.to_dict(),
                    "task": config.task, "data": config.data.to_dict()}, sort_keys=True,
                   default=str)
  if key not in _CAPACITY:
    manifest = pipeline.load_manifest(config.data, task=config.task)
    num_classes = len(folds_lib.task_classes(config.task, manifest))
    num_samples = audio.clip_samples(config.data.sample_rate, pipeline.clip_seconds(config.data))
    _CAPACITY[key] = group.members_that_fit(config, num_samples, num_classes)
    logging.info("table1: %s %s: %s runs per group fit the device's memory", config.model.name,
                 config.task, _CAPACITY[key] or "all")
  return _CAPACITY[key]


def groups_that_fit(cells: list, configs: dict) -> list[list]:
  """`cells` (of one unit) in as few groups as fit the device's memory, of even sizes."""
  capacity = group_capacity(configs[tuple(cells[0][:4])]) if len(cells) > 1 else None
  count = 1 if capacity is None else -(-len(cells) // capacity)
  bounds = [len(cells) * i // count for i in range(count + 1)]
  return [cells[start:end] for start, end in zip(bounds, bounds[1:])]


def train_unit(workdir, configs: dict, cells: list) -> None:
  """Trains the incomplete cells of one (model, task, fold): a cell with its own run's checkpoint
  (an interrupted --nogroup run) resumes alone, the others train in groups
  (`wavejax.train_group`; a group of one is a plain `train_fold`). A failure fails its cells
  only: the rest still train, then the first error is raised."""
  pending = [c for c in cells if not result_path(workdir, c).exists()]
  alone = [c for c in pending if has_checkpoint(fold_dir(workdir, c) / "checkpoints" / "latest")]
  together = [c for c in pending if c not in alone]
  parts = [[c] for c in alone] + (groups_that_fit(together, configs) if together else [])
  failures = []
  for part in parts:
    try:
      if len(part) == 1:
        cell = part[0]
        training.train_fold(configs[tuple(cell[:4])], cell.fold,
                            workdir=run_dir(workdir, *cell[:4]))
      else:
        group.train_group([configs[tuple(c[:4])] for c in part], part[0].fold,
                          [run_dir(workdir, *c[:4]) for c in part],
                          group_dir=group_dir(workdir, group_of(part[0])))
    except errors.Preempted:
      raise
    except errors.WavejaxError as e:
      logging.error("table1: %s", e)
      failures.append(e)
  if failures:
    raise failures[0]


def run_groups(workdir, grid: sweep.Grid, configs: dict, units, lock_timeout_s: float,
               wait: bool = False, poll_s: float = 60.0) -> sweep.Report:
  """`run_cells` with --group: each (model, task, fold) is one unit under its lock."""
  groups, members = group_grid(grid)
  return sweep.run_cells(
      units, lambda unit: train_unit(workdir, configs, members[unit]),
      is_complete=lambda u: all(result_path(workdir, c).exists() for c in members[u]),
      lock_path=lambda u: group_lock_path(workdir, u), lock_timeout_s=lock_timeout_s, wait=wait,
      poll_s=poll_s, describe=groups.describe)


def run_grid(workdir, models, tasks, lrs, seeds, folds, preset, data_root, epochs,
             grouped: bool = True) -> dict:
  """Runs (or reads back) every cell in this process; returns {(model, task, lr, seed):
  [FoldResult]}."""
  grid, configs = build_grid(models, tasks, lrs, seeds, folds, preset, data_root, epochs)
  if grouped:
    run_groups(workdir, grid, configs, group_grid(grid)[0].cells, sweep.DEFAULT_LOCK_TIMEOUT_S)
  else:
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
      unit_dir = group_dir(workdir, group_of(cell))
      if status == "not started":  # its unit's lock, when it runs in a group
        status = sweep.cell_status(path, unit_dir / "running.lock", lock_timeout_s)
      if status == "not started" and (
          (fold_dir(workdir, cell) / "checkpoints").exists()
          or any(has_checkpoint(d) for d in unit_dir.glob("group_*/checkpoints/latest"))):
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


def chosen_runs(workdir, grid: sweep.Grid, table: dict) -> tuple[dict, list]:
  """The runs of each (model, task)'s chosen learning rate with per-utterance predictions,
  {(model, task): stats.Run}, and those lacking them, [(model, task, lr, seed, why)]."""
  fold_dirs = {}
  for cell in grid.cells:
    entry = table.get(cell.task, {}).get(cell.model)
    if entry is not None and cell.lr == entry["learning_rate"]:
      by_seed = fold_dirs.setdefault((cell.model, cell.task), {})
      by_seed.setdefault(cell.seed, {})[cell.fold] = fold_dir(workdir, cell)
  runs, lacking = {}, []
  for (model, task), by_seed in fold_dirs.items():
    lr = table[task][model]["learning_rate"]
    complete = {}
    for seed, folds in by_seed.items():
      absent = [k for k, d in sorted(folds.items()) if not (d / predictions.FILENAME).exists()]
      if absent:
        lacking.append((model, task, lr, seed, f"no {predictions.FILENAME} in fold "
                        f"{', '.join(map(str, absent))} (trained by an older wavejax)"))
      else:
        complete[seed] = folds
    if not complete:
      continue
    try:
      train = {(s, k): results.load_fold(d / "result.json").train_accuracy
               for s, folds in complete.items() for k, d in folds.items()}
      runs[(model, task)] = claims.load_run(complete, train)
    except errors.ResultsError as e:
      lacking += [(model, task, lr, seed, str(e)) for seed in complete]
  return runs, lacking


def lacking_markdown(lacking: list) -> str:
  if not lacking:
    return ""
  return "\n".join([
      "", "Runs without usable per-utterance predictions (their claims are ruled without them, or "
      "not at all; rerunning the fold's training writes them):", "",
      *(f"- {model} {task} lr={lr:g} seed {seed}: {why}" for model, task, lr, seed, why in lacking)
  ]) + "\n"


def write_claims(workdir, grid: sweep.Grid, table: dict) -> tuple[str, dict]:
  """Rules on the paper's claims (`reporting.claims`) from the chosen runs' predictions; draws
  table1_claims.png when plots are installed. Returns the markdown and the JSON fields."""
  runs, lacking = chosen_runs(workdir, grid, table)
  ruled = claims.rule_all(runs)
  if lacking:
    logging.warning("table1: %d runs lack per-utterance predictions:\n%s", len(lacking),
                    "\n".join(f"  {m} {t} lr={lr:g} seed {s}: {why}"
                              for m, t, lr, s, why in lacking))
  rows = claims.forest_rows(ruled)
  if rows and plots.available():
    forest_plot.forest_plot(rows, workdir / "table1_claims.png",
                            title="The paper's claims: differences with 95% intervals",
                            xlabel="difference A - B (points)")
  fields = {"claims": claims.to_json(ruled),
            "lacking_predictions": [{"model": m, "task": t, "lr": lr, "seed": s, "why": why}
                                    for m, t, lr, s, why in lacking]}
  return claims.markdown(ruled) + lacking_markdown(lacking), fields


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
  claims_text, claims_fields = write_claims(workdir, grid, table)
  text += claims_text
  results.write_json(workdir / "table1.json", {
      "dataset": dataset, "table": table, "complete": not missing,
      "cells": {"total": len(grid), "complete": len(grid) - len(missing)},
      "missing": [{**cell._asdict(), "status": status} for cell, status in missing],
      **claims_fields})
  results.write_text(workdir / "table1.md", text)
  return text, missing


def log_share(grid: sweep.Grid, shard: sweep.Shard, cells, units: sweep.Grid | None = None
              ) -> None:
  """Logs the grid and this worker's share: cells, or with --group the units of `units`."""
  shared = grid if units is None else units
  what = "" if units is None else f" in {len(units)} groups (model, task, fold)"
  logging.info("table1: %d training runs%s in the grid (fingerprint %s; every worker must show "
               "the same); shard %s (%s) takes %d:\n%s", len(grid), what, shared.fingerprint(),
               shard, shard.source, len(cells),
               "\n".join(f"  {t}" for t in shared.describe_many(cells)))


def grid_from_flags(models, preset) -> tuple[sweep.Grid, dict]:
  lrs = _numbers("lrs", _LRS.value, float)
  if any(not 0 < lr < float("inf") for lr in lrs):
    raise errors.SweepError(f"--lrs={','.join(_LRS.value)}: learning rates must be positive")
  seeds = _SEEDS.value or [str(s) for s in presets.sizes(preset, presets.TABLE1).get("seeds", [0])]
  return build_grid(models, _TASKS.value, lrs, _numbers("seeds", seeds, int),
                    _numbers("folds", _FOLDS.value, int) if _FOLDS.value else None,
                    preset, _DATA_ROOT.value, _EPOCHS.value)


def _numbers(name: str, values: list[str], kind) -> list:
  try:
    return [kind(value) for value in values]
  except ValueError:
    raise errors.SweepError(f"--{name}={','.join(values)}: not a list of "
                            f"{'numbers' if kind is float else 'integers'}") from None


def finish(workdir, grid: sweep.Grid, shard: sweep.Shard, report: sweep.Report, models,
           units: sweep.Grid | None = None) -> int:
  """Reports failed cells (or units); writes the table when the grid is complete, with --collect,
  or when this process ran the whole grid alone (then the table lists what failed)."""
  for cell, message in report.failed:
    print(f"table1: error: {(units or grid).describe(cell)}: {message}", file=sys.stderr)
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
  if _SWEEP.collect.value and not workdir.is_dir():
    raise errors.SweepError(f"--workdir={workdir}: no such folder, so nothing to collect; pass the "
                            "--workdir the workers trained into")
  models = common.available_configs() if _MODELS.value == ["all"] else _MODELS.value
  preset = _PRESET.value or ("paper" if _DATA_ROOT.value else "builtin")
  runtime.enable_compilation_cache()
  unknown = sorted(set(models) - set(common.available_configs()))
  if unknown:
    cli.fail("table1", f"unknown models {unknown}; available: {common.available_configs()}")
  report = sweep.Report()
  shard = _SWEEP.resolve_shard()
  grid, configs = grid_from_flags(models, preset)
  units = group_grid(grid)[0] if _GROUP.value else None
  if not _SWEEP.collect.value:
    run = run_cells if units is None else run_groups
    cells = (grid if units is None else units).shard(shard)
    log_share(grid, shard, cells, units)
    report = run(workdir, grid, configs, cells, _SWEEP.lock_timeout.value, _SWEEP.wait.value,
                 _SWEEP.poll_interval.value)
  return finish(workdir, grid, shard, report, models, units)


if __name__ == "__main__":
  cli.run(main, "table1")
