r"""Fig. 4 (Sec. 3) measured: how much each layer's weights change per epoch, per model.

  python -m experiments.change_rate --workdir=runs/change_rate                  # a few minutes
  python -m experiments.change_rate --workdir=runs/change_rate --preset=smoke   # seconds
  python -m experiments.change_rate --workdir=runs/cr --models=simplenet_cnn,soundnet,wavernn

Trains each model on one fold of the built-in corpus with the normal trainer, recording after
every epoch the paper's mean change rate mean |(w_i - w_{i-1}) / w_{i-1}| of every kernel
(`wavejax.training.change_rate.ChangeRateTracker`; the relative norm change beside it). The paper
plots it per iteration; here it is per epoch, i.e. over all the steps of an epoch. Fig. 4's claim:
SoundNet's convolutions change little, SimpleNet's filters change much more. Writes
`change_rate.json` and PNG/PDF figures into --workdir.

The claim gets a verdict with a 95 % bootstrap interval over filters (`filter_difference`): each
output filter's relative norm change ||dw_f|| / ||w_f|| per epoch, averaged over epochs, of
SimpleNet's front-end against SoundNet's first 6 convolutions (their filters pooled as one group);
printed on one line, under `claims` in change_rate.json and drawn in `claims_forest.png` (with
matplotlib). The JSON keeps each model's per-filter means (`mean_relative_norm_per_filter`, of
the front-end kernels), not the per-epoch per-filter numbers.
"""

from __future__ import annotations

import pathlib

import numpy as np
from absl import flags

from wavejax import cli, errors, runtime, training
from wavejax import config as wavejax_config
from wavejax.analysis import common
from wavejax.config import presets
from wavejax.reporting import forest_plot, plots, stats
from wavejax.training import change_rate, hooks

PROG = "change_rate"

_WORKDIR = flags.DEFINE_string("workdir", None, "Where the JSON and the figures go.")
_MODELS = flags.DEFINE_list("models", ["simplenet_cnn", "soundnet"], "Models (configs/<name>.py).")
_PRESET = presets.define_flag(presets.CHANGE_RATE, "builtin")
_FOLD = flags.DEFINE_integer("fold", 1, "Fold to train.")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Override train.num_epochs.")

SIMPLENET, SOUNDNET = "simplenet_cnn", "soundnet"
PER_FILTER = "mean_relative_norm_per_filter"
CLAIM = "Fig. 4: SimpleNet's filters change more per epoch than SoundNet's first convolutions"
MEASURE = "relative norm change per filter per epoch, SimpleNet - SoundNet"


def train_model(name: str) -> dict:
  overrides = presets.fields(_PRESET.value, presets.CHANGE_RATE)
  if _EPOCHS.value:
    overrides["train.num_epochs"] = _EPOCHS.value
  overrides["train.track_change_rate"] = True
  config = wavejax_config.resolve(common.load_config(name, overrides))
  tracking = hooks.ChangeRate()
  trainer = training.FoldTrainer(config, training.load_fold_data(config, _FOLD.value), None,
                                 hooks=[tracking])
  result = trainer.run()
  history = tracking.tracker.history
  per_filter = change_rate.mean_per_filter(history)
  return {"history": [{k: v for k, v in entry.items() if k != "relative_norm_per_filter"}
                      for entry in history],
          "mean_rate": change_rate.mean_rates(history),
          "mean_relative_norm": change_rate.mean_rates(history, "relative_norm"),
          PER_FILTER: {k: v for k, v in per_filter.items() if is_filter_layer(k)},
          "test_wa": result.test["wa"], "train_accuracy": result.train_accuracy}


def is_filter_layer(layer: str) -> bool:
  """The front-end's filters: SimpleNet's `frontend` kernel or a stack's `frontend/Conv_<k>`."""
  return layer == "frontend" or layer.startswith("frontend/")


def filter_rates(run: dict, key: str, count: int = 6) -> dict:
  """The front-end kernels' mean rates (`key`: "mean_rate", "mean_relative_norm" or
  `PER_FILTER`), at most `count` of them (Fig. 4 shows SoundNet's first 6 convolutions)."""
  return dict([(k, v) for k, v in run[key].items() if is_filter_layer(k)][:count])


def _filter_group(runs: dict, name: str) -> np.ndarray:
  """`name`'s per-filter rates: SimpleNet's `frontend` kernel, SoundNet's first 6 convolutions."""
  rates = filter_rates(runs[name], PER_FILTER, 1 if name == SIMPLENET else 6)
  values = np.concatenate([np.ravel(v) for v in rates.values()]) if rates else np.zeros(0)
  if values.size < 2:
    raise errors.ResultsError(f"Fig. 4 claim: {name} recorded {values.size} filter change rates; "
                              "train it for at least one epoch (--epochs) with a front-end of "
                              "two or more filters")
  return values


def filter_difference(runs: dict, num_resamples: int = 10000, seed: int = 0,
                      confidence: float = 0.95) -> stats.Difference | None:
  """Fig. 4 with an interval over filters: SimpleNet's minus SoundNet's mean per-filter change.

  Per filter, ||dw_f|| / ||w_f|| per epoch averaged over the epochs (`PER_FILTER`); A is
  SimpleNet-CNN's front-end filters, B SoundNet's first 6 convolutions' output filters (as
  `filter_rates` picks them), the filters of those different layers pooled as one group;
  `stats.group_difference(A, B)`. None when either model is not in `runs`.
  """
  if SIMPLENET not in runs or SOUNDNET not in runs:
    return None
  return stats.group_difference(_filter_group(runs, SIMPLENET), _filter_group(runs, SOUNDNET),
                                num_resamples, seed, confidence)


def claim_line(difference: stats.Difference | None, models) -> str:
  """The claim's printed line: difference [interval] confidence -> verdict (filters), or why
  there is no claim."""
  if difference is None:
    return (f"{CLAIM}: no claim (needs both {SIMPLENET} and {SOUNDNET} in --models; got "
            f"{','.join(models)})")
  return (f"{CLAIM} ({MEASURE}): {difference.difference:+.3g} [{difference.low:+.3g}, "
          f"{difference.high:+.3g}] {100 * difference.confidence:g}% -> {difference.verdict} "
          f"({difference.sizes['a']} vs {difference.sizes['b']} filters)")


def draw_claims(figures: common.Figures, difference: stats.Difference | None) -> None:
  """`claims_forest.png` in the figures' folder, when there is a claim and matplotlib."""
  if difference is None or not plots.available():
    return
  path = forest_plot.forest_plot(
      [("SimpleNet - SoundNet filters", difference)], figures.directory / "claims_forest.png",
      f"Fig. 4: change per epoch with {100 * difference.confidence:g}% interval",
      "difference of mean ||dw_f|| / ||w_f|| per epoch (SimpleNet - SoundNet)")
  figures.paths.append(str(path))


def verdict(runs: dict) -> str:
  """Fig. 4: SimpleNet's filters change more per epoch than SoundNet's first 6 convolutions, by
  the paper's mean |dw / w| and by the relative norm change ||dw|| / ||w|| (robust to weights
  near 0, which dominate the paper's mean of ratios)."""
  if "simplenet_cnn" not in runs or "soundnet" not in runs:
    return "change rate per epoch of the front-end kernels: " + "; ".join(
        f"{name} " + ", ".join(f"{k} {v:.3g}" for k, v in filter_rates(run, "mean_rate").items())
        for name, run in runs.items())
  parts, held = [], []
  for key, label in (("mean_rate", "mean |dw/w|"), ("mean_relative_norm", "||dw||/||w||")):
    simple = runs["simplenet_cnn"][key].get("frontend", 0.0)
    sound = list(filter_rates(runs["soundnet"], key).values())
    held.append(bool(sound) and simple > max(sound))
    parts.append(f"{label}: SimpleNet's filters {simple:.3g} vs SoundNet's first {len(sound)} "
                 f"convolutions {min(sound, default=0):.3g}-{max(sound, default=0):.3g}")
  state = "holds" if all(held) else ("partly holds" if any(held) else "does not hold")
  return f"Fig. 4 {state} (mean per epoch): " + "; ".join(parts)


def main(argv) -> int:
  if len(argv) > 1:
    cli.fail(PROG, f"unexpected arguments {argv[1:]}")
  if not _WORKDIR.value:
    cli.fail(PROG, "--workdir is required")
  workdir = pathlib.Path(_WORKDIR.value)
  figures = common.Figures(workdir)
  runtime.enable_compilation_cache()
  runs = {name: train_model(name) for name in _MODELS.value}
  figures.save(plots.change_rate_figure, "change_rate",
               {name: run["history"] for name, run in runs.items()})
  figures.save(plots.change_rate_figure, "change_rate_relative_norm",
               {name: run["history"] for name, run in runs.items()}, "relative_norm")
  line = verdict(runs)
  difference = filter_difference(runs)
  draw_claims(figures, difference)
  claims = [] if difference is None else [
      {"claim": CLAIM, "measure": MEASURE, **difference.to_json()}]
  report = {"preset": _PRESET.value, "fold": _FOLD.value, "models": runs, "verdict": line,
            "claims": claims, "figures": figures.paths}
  path = common.write_json(workdir / "change_rate.json", report)
  print(line)
  print(claim_line(difference, runs))
  print(f"Numbers: {path}")
  if figures.paths:
    print("Figures: " + ", ".join(p for p in figures.paths if p.endswith(".png")))
  return 0


if __name__ == "__main__":
  cli.run(main, PROG)
