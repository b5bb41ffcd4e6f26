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
"""

from __future__ import annotations

import pathlib

from absl import flags

from wavejax import cli, runtime, training
from wavejax import config as wavejax_config
from wavejax.analysis import common
from wavejax.config import presets
from wavejax.reporting import plots
from wavejax.training import change_rate, hooks

PROG = "change_rate"

_WORKDIR = flags.DEFINE_string("workdir", None, "Where the JSON and the figures go.")
_MODELS = flags.DEFINE_list("models", ["simplenet_cnn", "soundnet"], "Models (configs/<name>.py).")
_PRESET = presets.define_flag(presets.CHANGE_RATE, "builtin")
_FOLD = flags.DEFINE_integer("fold", 1, "Fold to train.")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Override train.num_epochs.")


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
  return {"history": history, "mean_rate": change_rate.mean_rates(history),
          "mean_relative_norm": change_rate.mean_rates(history, "relative_norm"),
          "test_wa": result.test["wa"], "train_accuracy": result.train_accuracy}


def is_filter_layer(layer: str) -> bool:
  """The front-end's filters: SimpleNet's `frontend` kernel or a stack's `frontend/Conv_<k>`."""
  return layer == "frontend" or layer.startswith("frontend/")


def filter_rates(run: dict, key: str, count: int = 6) -> dict:
  """The front-end kernels' mean rates (`key`: "mean_rate" or "mean_relative_norm"), at most
  `count` of them (Fig. 4 shows SoundNet's first 6 convolutions)."""
  return dict([(k, v) for k, v in run[key].items() if is_filter_layer(k)][:count])


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
  report = {"preset": _PRESET.value, "fold": _FOLD.value, "models": runs, "verdict": line,
            "figures": figures.paths}
  path = common.write_json(workdir / "change_rate.json", report)
  print(line)
  print(f"Numbers: {path}")
  if figures.paths:
    print("Figures: " + ", ".join(p for p in figures.paths if p.endswith(".png")))
  return 0


if __name__ == "__main__":
  cli.run(main, PROG)
