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
JAX's persistent compilation cache on (`wavejax.runtime`), so the seeds reuse compiled steps.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
from absl import app, flags

from wavejax import errors
from wavejax import plots, runtime
from wavejax.analysis import aliasing, band_task, common, equivalence, signals

PRESETS = {
    "full": {"num_samples": 16384, "seeds": (0, 1, 2), "per_class_per_session": 20,
             "clip_seconds": 0.5, "epochs": 6},
    "smoke": {"num_samples": 4096, "seeds": (0,), "per_class_per_session": 4,
              "clip_seconds": 0.25, "epochs": 1, "models": ("simplenet_cnn", "pool_first_stride")},
}
# Band-task contenders: zoo config name, and the pool-first twin's pooling (None: the zoo model).
CONTENDERS = {
    "simplenet_cnn": ("simplenet_cnn", None),
    "soundnet": ("soundnet", None),
    "pool_first_max": ("simplenet_cnn", "max"),
    "pool_first_stride": ("simplenet_cnn", "stride"),
}
SAMPLE_RATE = 16000

_WORKDIR = flags.DEFINE_string("workdir", None, "Where the JSON and the figures go.")
_PRESET = flags.DEFINE_enum("preset", "full", list(PRESETS), "Size preset.")
_BAND_TASK = flags.DEFINE_boolean("band_task", True, "Train the band-task models.")
_MODELS = flags.DEFINE_list("models", None, "Band-task contenders (default: all; the smoke "
                            f"preset: two). Choose from {', '.join(CONTENDERS)}.")
_SEEDS = flags.DEFINE_list("seeds", None, "Band-task seeds (default: the preset's).")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Band-task epochs (default: the preset's).")


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


def run_band_task(preset: dict, figures: common.Figures, workdir: pathlib.Path) -> dict:
  runtime.quiet_library_logs()
  runtime.enable_compilation_cache()
  seeds = [int(s) for s in (_SEEDS.value or preset["seeds"])]
  epochs = _EPOCHS.value or preset["epochs"]
  models = _MODELS.value or preset.get("models", list(CONTENDERS))
  summary = band_task.compare(contenders(models, epochs), seeds,
                              preset["per_class_per_session"], preset["clip_seconds"])
  if _PRESET.value == "smoke":
    summary["verdict"] = "[smoke preset: too little training to judge] " + summary["verdict"]
  figures.save(plots.band_task_figure, "band_task", summary)
  return summary


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  workdir = pathlib.Path(_WORKDIR.value)
  preset = PRESETS[_PRESET.value]
  figures = common.Figures(workdir)
  try:
    report = {"preset": _PRESET.value, "equivalence": run_equivalence(preset, figures)}
    sweep, stacks = run_pooling(preset, figures)
    report.update(pooling_sweep=sweep, stacks=stacks)
    verdicts = [report["equivalence"]["verdict"], aliasing.aliasing_verdict(sweep),
                stack_verdict(stacks)]
    if _BAND_TASK.value:
      report["band_task"] = run_band_task(preset, figures, workdir)
      verdicts.append(report["band_task"]["verdict"])
  except errors.WavejaxError as e:
    print(f"wavejax: error: {e}", file=sys.stderr)
    return 1
  report["verdicts"] = verdicts
  report["figures"] = figures.paths
  path = common.write_json(workdir / "aliasing.json", report)
  for line in verdicts:
    print(line)
  print(f"Numbers: {path}")
  if figures.paths:
    print("Figures: " + ", ".join(p for p in figures.paths if p.endswith(".png")))
  return 0


if __name__ == "__main__":
  app.run(main)
