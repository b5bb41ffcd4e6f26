r"""Sec. 2.2.2-2.2.3 (Figs. 1-3) measured: stacked convolutions, pooling aliases, the band task.

  python -m experiments.aliasing --workdir=runs/aliasing                 # a few minutes, 2 cores
  python -m experiments.aliasing --workdir=runs/aliasing --preset=smoke  # seconds to train
  python -m experiments.aliasing --workdir=runs/aliasing --noband_task   # signal analyses only

1. Equivalence (Sec. 2.2.2, Figs. 1-2): the paper's two-layer linear network collapsed into one
   kernel per output; the stack vs the single convolution with strides, average/strided pooling,
   ReLU and max pooling added.
2. Pooling sweep (Sec. 2.2.3): tones, chirp and band-limited noise pooled once by 2 (max, avg,
   stride), with and without an anti-aliasing low-pass: aliased fraction of output power.
3. Stack (Fig. 3): a chirp through conv -> pool -> conv -> pool -> conv, per-stage spectra and
   aliased fractions, for each pool kind with and without anti-aliasing.
4. Band task (Sec. 2.2.3, 3): two classes that differ only in bands that decimation by 2 folds
   together, trained with the normal trainer: SimpleNet-CNN, SoundNet (zoo) and SimpleNet-CNN's
   pool-first twins (max- or stride-pooled waveform), over several seeds.

Writes `aliasing.json` (every number and the verdicts) and PNG/PDF figures into --workdir, with
JAX's persistent compilation cache on (`wavejax.runtime`), so the seeds reuse compiled steps. Each
band-task run (model, seed) keeps its result in `band_task/<model>/seed<seed>/result.json`, so a
rerun trains only what is missing, and the runs can be spread over workers like Table 1's
(docs/sweeps.md): `--shard=I/N` (or a Slurm / Kubernetes array's variables) trains only worker I's
share of the band-task runs and writes no report; `--collect` then writes the report from the
complete runs, listing the missing ones.
"""

from __future__ import annotations

import collections
import functools
import json
import pathlib
import sys

import numpy as np
from absl import flags, logging

from wavejax import cli, errors, runtime
from wavejax.analysis import aliasing, band_task, common, equivalence, signals
from wavejax.config import presets
from wavejax.reporting import plots, results
from wavejax.training import sweep

PROG = "aliasing"
# Band-task contenders: zoo config name, and the pool-first twin's pooling (None: the zoo model).
CONTENDERS = {
    "simplenet_cnn": ("simplenet_cnn", None),
    "soundnet": ("soundnet", None),
    "pool_first_max": ("simplenet_cnn", "max"),
    "pool_first_stride": ("simplenet_cnn", "stride"),
}
SAMPLE_RATE = 16000

_WORKDIR = flags.DEFINE_string("workdir", None, "Where the JSON and the figures go.")
_PRESET = presets.define_flag(presets.ALIASING, "builtin")
_BAND_TASK = flags.DEFINE_boolean("band_task", True, "Train the band-task models.")
_MODELS = flags.DEFINE_list("models", None, "Band-task contenders (default: all; the smoke "
                            f"preset: two). Choose from {', '.join(CONTENDERS)}.")
_SEEDS = flags.DEFINE_list("seeds", None, "Band-task seeds (default: the preset's).")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Band-task epochs (default: the preset's).")
_SWEEP = sweep.define_flags()

# One band-task run.
BandCell = collections.namedtuple("BandCell", "seed model")


def run_equivalence(preset: dict, figures: common.Figures) -> dict:
  rng = np.random.default_rng(0)
  x = signals.band_noise(0.0, SAMPLE_RATE / 2, SAMPLE_RATE, preset["num_samples"] // 2, rng)
  layers = equivalence.paper_stack(SAMPLE_RATE)
  report = equivalence.equivalence_report(x, layers, SAMPLE_RATE)
  figures.save(plots.equivalence_figure, "equivalence", report, layers, SAMPLE_RATE)
  return report


def run_pooling(preset: dict, figures: common.Figures) -> tuple[dict, dict]:
  rng = np.random.default_rng(1)
  probes = aliasing.probe_signals(SAMPLE_RATE, preset["num_samples"], rng)
  sweep = aliasing.pooling_sweep(probes, SAMPLE_RATE)
  figures.save(plots.pooling_sweep_figure, "pooling_sweep", sweep)
  stacks = aliasing.stack_report(probes["chirp"], SAMPLE_RATE)
  for key, stages in stacks.items():
    figures.save(plots.aliasing_stack_figure, f"stack_{key.replace('+', '_')}", stages,
                 f"chirp 0-8 kHz through conv -> {key} pool -> conv -> pool -> conv")
  numbers = {key: [aliasing.scalars(stage) for stage in stages] for key, stages in stacks.items()}
  return sweep, numbers


def stack_verdict(stacks: dict) -> str:
  last = {key: stages[-1]["cumulative_aliased_fraction"] for key, stages in stacks.items()}
  return ("Fig. 3 / 'aliasing accumulates': after two poolings, the share of the last stage's "
          "output that is aliased (vs an alias-free path) is " +
          ", ".join(f"{key} {value:.2f}" for key, value in last.items()))


def contenders(models, epochs: int) -> dict:
  overrides = {"task": "band", "train.num_epochs": epochs, "train.batch_size": 16,
               "train.eval_batch_size": 32}
  chosen = {}
  for name in models:
    if name not in CONTENDERS:
      raise errors.ConfigError(f"--models: {name!r} is not a contender; choose from "
                               f"{sorted(CONTENDERS)}")
    config_name, pooling = CONTENDERS[name]
    config = common.load_config(config_name, overrides)
    build = None if pooling is None else (
        lambda c, n, kind=pooling: band_task.pool_first_model(c, n, factor=2, kind=kind))
    chosen[name] = band_task.Contender(config, build)
  return chosen


def band_cell_dir(workdir: pathlib.Path, cell: BandCell) -> pathlib.Path:
  return workdir / "band_task" / cell.model / f"seed{cell.seed}"


def band_settings(contender: band_task.Contender, preset: dict) -> dict:
  """What a band-task run depends on besides its seed; stored beside its result."""
  return json.loads(json.dumps({
      "config": json.loads(contender.config.to_json_best_effort(sort_keys=True)),
      "per_class_per_session": preset["per_class_per_session"],
      "clip_seconds": preset["clip_seconds"]}))


def band_result(workdir: pathlib.Path, cell: BandCell, settings: dict) -> pathlib.Path | None:
  """The result file of a complete run, or None; refuses a run trained with other settings."""
  folder = band_cell_dir(workdir, cell)
  if not (folder / "result.json").exists():
    return None
  stored = folder / "settings.json"
  if not stored.exists() or json.loads(stored.read_text()) != settings:
    raise errors.ConfigError(f"{folder} was trained with other settings (--preset, --epochs); use "
                             "a new --workdir or the original flags")
  return folder / "result.json"


def band_grid(preset: dict) -> tuple[sweep.Grid, dict, dict]:
  """The band-task runs, the contenders and each contender's `band_settings`."""
  seeds = [int(s) for s in (_SEEDS.value or preset["seeds"])]
  models = _MODELS.value or preset.get("models", list(CONTENDERS))
  chosen = contenders(models, _EPOCHS.value or preset["epochs"])
  settings = {name: band_settings(contender, preset) for name, contender in chosen.items()}
  return sweep.Grid(BandCell(seed, name) for name in chosen for seed in seeds), chosen, settings


def run_band_cells(preset: dict, workdir: pathlib.Path, grid: sweep.Grid, chosen: dict,
                   settings: dict, shard: sweep.Shard) -> sweep.Report:
  """Trains this worker's share of the band-task runs that are not complete."""
  runtime.enable_compilation_cache()
  cells = grid.shard(shard)
  logging.info("band task: %d runs (fingerprint %s); shard %s (%s) takes %d: %s", len(grid),
               grid.fingerprint(), shard, shard.source, len(cells),
               "; ".join(grid.describe_many(cells)))
  data = functools.lru_cache(maxsize=None)(functools.partial(
      band_task.seed_data, per_class_per_session=preset["per_class_per_session"],
      clip_seconds=preset["clip_seconds"]))

  def run(cell):
    result = band_task.run_one(chosen[cell.model], cell.seed, data(cell.seed))
    results.write_json(band_cell_dir(workdir, cell) / "settings.json", settings[cell.model])
    results.write_json(band_cell_dir(workdir, cell) / "result.json", result)

  return sweep.run_cells(
      cells, run, is_complete=lambda c: band_result(workdir, c, settings[c.model]) is not None,
      lock_path=lambda c: band_cell_dir(workdir, c) / "running.lock",
      lock_timeout_s=_SWEEP.lock_timeout.value, wait=_SWEEP.wait.value,
      poll_s=_SWEEP.poll_interval.value, describe=grid.describe)


def band_task_summary(workdir: pathlib.Path, grid: sweep.Grid, settings: dict,
                      figures: common.Figures) -> dict:
  """`band_task.summarize` of the complete runs; the missing ones are listed and flagged."""
  runs, missing = {}, []
  for cell in grid.cells:
    path = band_result(workdir, cell, settings[cell.model])
    runs.setdefault(cell.model, {})
    if path is not None:
      runs[cell.model][cell.seed] = json.loads(path.read_text())
    else:
      missing.append(cell)
  summary = band_task.summarize(runs)
  if missing:
    summary["missing"] = [grid.describe(c) for c in missing]
    summary["verdict"] = (f"[incomplete: {len(missing)} of {len(grid)} band-task runs missing: "
                          f"{'; '.join(grid.describe_many(missing))}] " + summary["verdict"])
    logging.warning("band task: %d of %d runs are missing: %s", len(missing), len(grid),
                    "; ".join(summary["missing"]))
  if _PRESET.value == "smoke":
    summary["verdict"] = "[smoke preset: too little training to judge] " + summary["verdict"]
  if summary["models"]:
    figures.save(plots.band_task_figure, "band_task", summary)
  return summary


def signal_analyses(preset: dict, figures: common.Figures) -> tuple[dict, list]:
  """Equivalence, pooling sweep and stacks (no training): their numbers and verdicts."""
  report = {"preset": _PRESET.value, "equivalence": run_equivalence(preset, figures)}
  sweep_numbers, stacks = run_pooling(preset, figures)
  report.update(pooling_sweep=sweep_numbers, stacks=stacks)
  return report, [report["equivalence"]["verdict"], aliasing.aliasing_verdict(sweep_numbers),
                  stack_verdict(stacks)]


def main(argv) -> int:
  if len(argv) > 1:
    cli.fail(PROG, f"unexpected arguments {argv[1:]}")
  if not _WORKDIR.value:
    cli.fail(PROG, "--workdir is required")
  workdir = pathlib.Path(_WORKDIR.value)
  preset = presets.sizes(_PRESET.value, presets.ALIASING)
  figures = common.Figures(workdir)
  grid, report = None, sweep.Report()
  shard = _SWEEP.resolve_shard()
  sharded = shard.count > 1 and not _SWEEP.collect.value
  if sharded and not _BAND_TASK.value:
    raise errors.SweepError(f"--shard={shard} splits only the band task; drop --noband_task")
  if _BAND_TASK.value:
    grid, chosen, settings = band_grid(preset)
    if not _SWEEP.collect.value:
      report = run_band_cells(preset, workdir, grid, chosen, settings, shard)
  if sharded:
    logging.info("aliasing: shard %s done (ran %d, left %d to other workers, %d failed); when "
                 "every worker has finished, write the report with the same flags and "
                 "--collect", shard, len(report.ran), len(report.left), len(report.failed))
    return _failures(grid, report)
  report_json, verdicts = signal_analyses(preset, figures)
  if _BAND_TASK.value:
    report_json["band_task"] = band_task_summary(workdir, grid, settings, figures)
    verdicts.append(report_json["band_task"]["verdict"])
  report_json["verdicts"] = verdicts
  report_json["figures"] = figures.paths
  path = common.write_json(workdir / "aliasing.json", report_json)
  for line in verdicts:
    print(line)
  print(f"Numbers: {path}")
  if figures.paths:
    print("Figures: " + ", ".join(p for p in figures.paths if p.endswith(".png")))
  return _failures(grid, report) if _BAND_TASK.value else 0


def _failures(grid: sweep.Grid, report: sweep.Report) -> int:
  for cell, message in report.failed:
    print(f"{PROG}: error: band task {grid.describe(cell)}: {message}", file=sys.stderr)
  return 1 if report.failed else 0


if __name__ == "__main__":
  cli.run(main, PROG)
