"""Training entry points: one leave-one-session-out fold (`train_fold`) or all of them
(`cross_validate`), with their files in a workdir."""

from __future__ import annotations

import pathlib

import ml_collections
from absl import logging

from wavejax import config as wavejax_config
from wavejax import errors
from wavejax.data import folds, pipeline
from wavejax.reporting import results
from wavejax.training import parallel, workspace
from wavejax.training.loop import FoldData, FoldTrainer


def load_fold_data(config, fold: int) -> FoldData:
  manifest, waveforms = pipeline.load_dataset(config.data, task=config.task)
  classes = folds.task_classes(config.task, manifest)
  targets = folds.labels(manifest, config.task)
  return FoldData(manifest, waveforms, targets, fold_split(config, manifest, targets, fold),
                  classes)


def fold_split(config, manifest, targets, fold: int) -> folds.Fold:
  """The train/val/test split of `fold` under `config` (its validation draw depends on the
  seed)."""
  return folds.leave_one_session_out(
      manifest, fold, targets, val_size=config.data.val_size, val_from=config.data.val_from,
      seed=config.seed)


def train_fold(config: ml_collections.ConfigDict, fold: int | None = None,
               workdir=None) -> results.FoldResult:
  """Trains and evaluates one leave-one-session-out fold; returns its `FoldResult`.

  Args:
    config: a config from `configs/<model>.py` (or `wavejax.config.get_config`).
    fold: 1-based fold (test session); defaults to `config.fold`.
    workdir: where checkpoints and `fold_<k>/result.json` go. A fold whose result exists is not
      trained again; a fold with a checkpoint resumes from it. None: nothing is written.
  """
  config = wavejax_config.resolve(config)
  wavejax_config.check_values(config)
  fold = config.fold if fold is None else fold
  if fold is None:
    raise errors.ConfigError("no fold given: set config.fold (e.g. 'configs/x.py:emotion,fold=1') "
                             "or call cross_validate")
  if not workdir:
    return FoldTrainer(config, load_fold_data(config, fold), None).run()
  workdir = pathlib.Path(workdir)
  fold_dir = workdir / f"fold_{fold}"
  # One process per fold, and none while another process runs the whole workdir.
  with workspace.owned(fold_dir, others=[workdir / workspace.LOCK_FILE]):
    return _train_owned_fold(config, fold, workdir, fold_dir)


def _train_owned_fold(config, fold: int, workdir: pathlib.Path,
                      fold_dir: pathlib.Path) -> results.FoldResult:
  for directory in (fold_dir, workdir):  # what writers killed mid-write left
    workspace.remove_stale_temporaries(directory)
  root_changed = workspace.check_config(config, fold_dir)
  if (fold_dir / "result.json").exists():
    logging.info("fold %d: already complete, reading %s", fold, fold_dir / "result.json")
    result = results.load_fold(fold_dir / "result.json")
    if parallel.is_primary():  # a deleted (damaged) config.json is written again
      workspace.record_config(config, fold_dir)
    return result
  data = load_fold_data(config, fold)
  workspace.check_corpus(data, workdir, root_changed)
  trainer = FoldTrainer(config, data, fold_dir)
  # Only a config that got this far (task, fold, sizes and options checked) is recorded, so a
  # rejected command leaves nothing that blocks the corrected one.
  if parallel.is_primary():
    workspace.record_config(config, fold_dir)
    workspace.record_corpus(data, workdir)
    folds.write_assignment(data.manifest, workdir / "folds.json", classes=data.classes)
  result = trainer.run()
  if parallel.is_primary():
    results.save_fold(result, fold_dir / "result.json")
  if trainer.stop.signum is not None:  # it came after the last step: the fold is complete
    written = fold_dir / "result.json"
    raise errors.Preempted(
        f"stopped by {trainer.stop.signal_name} after fold {fold} was complete ({written}); "
        "rerun the same command to continue with the next fold", trainer.stop.signum)
  return result


def default_fold_numbers(config) -> list[int]:
  """`[config.fold]`, or every fold of the configured dataset."""
  if config.fold is not None:
    return [config.fold]
  manifest, _ = pipeline.load_dataset(config.data, task=config.task)
  return list(range(1, folds.num_folds(manifest) + 1))


def cross_validate(config: ml_collections.ConfigDict, workdir=None,
                   fold_numbers=None) -> tuple[list[results.FoldResult], dict]:
  """Runs `train_fold` on every fold (or `fold_numbers`); writes the summary of every finished
  fold of `workdir` into it.

  Returns the fold results and the summary dict (see `results.summarize`).
  """
  if fold_numbers is None:
    fold_numbers = default_fold_numbers(config)
  if workdir is None:
    fold_results = [train_fold(config, fold) for fold in fold_numbers]
    return fold_results, results.summarize(fold_results)
  workdir = pathlib.Path(workdir)
  # The whole workdir is this process's while it runs: no other command trains a fold in it.
  with workspace.owned(workdir, others=sorted(workdir.glob(f"fold_*/{workspace.LOCK_FILE}"))):
    fold_results = [train_fold(config, fold, workdir) for fold in fold_numbers]
    # The workdir's summary covers every finished fold in it (all of one config, see
    # workspace.check_config), not only this call's: `--folds=2` after `--folds=1` keeps fold 1.
    # It is derived from the folds' results and written again by every call.
    finished = {r.fold: r for r in map(results.load_fold, workdir.glob("fold_*/result.json"))}
    finished.update({r.fold: r for r in fold_results})
    summary = results.summarize(list(finished.values()))
    if parallel.is_primary():
      results.write_json(workdir / "summary.json", summary)
      results.write_text(workdir / "summary.md", results.markdown_table(summary))
  return fold_results, summary
