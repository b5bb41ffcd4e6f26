r"""Fig. 6 (Sec. 4.3) measured: what SimpleNet's filters learned.

  python -m experiments.filters --workdir=runs/filters --run=runs/emotion   # a trained run
  python -m experiments.filters --workdir=runs/filters                      # trains one first
  python -m experiments.filters --workdir=runs/filters --preset=smoke       # seconds

With `--run`, analyses that run's best checkpoint (`--fold`, default the first fold that has
one) against the filters it started from (re-initialised exactly as the trainer did). Without it,
first trains SimpleNet-CNN (or `--model`) on one fold of the built-in corpus into
`<workdir>/run` (a rerun resumes or reuses it).

Reports, per filter, the centre-frequency, bandwidth and weight drift, the share of each filter's
response that moved below its initial band (Fig. 6: "adding more passbands at low frequency"),
the bank's cumulative frequency response, and the learned spectrogram of one utterance
(`--utterance`: an utterance id of the run's corpus or a wav path; default the first test
utterance of the fold). Writes `filters.json` and PNG/PDF figures into --workdir.

Fig. 6's claim "high-frequency filters change more than low ones" gets a verdict: the mean
relative weight change ||w - w0|| / ||w0|| of the upper half of the bank (by initial centroid)
minus that of the lower half, with a 95 % bootstrap interval over filters
(`learned_filters.high_low_difference`); printed on one line, under `claims` in filters.json and
drawn in `claims_forest.png` (with matplotlib).
"""

from __future__ import annotations

import pathlib

import numpy as np
from absl import flags

from wavejax import cli, errors, models, training
from wavejax.analysis import common, learned_filters
from wavejax.config import presets
from wavejax.data import audio
from wavejax.inference import model as loaded_model
from wavejax.reporting import forest_plot, plots, stats

PROG = "filters"

_WORKDIR = flags.DEFINE_string("workdir", None, "Where the JSON and the figures go.")
_RUN = flags.DEFINE_string("run", None, "A trained run's workdir (default: train one).")
_FOLD = flags.DEFINE_integer("fold", None, "Fold of --run (default: first with a checkpoint).")
_MODEL = flags.DEFINE_string("model", "simplenet_cnn", "Model to train when --run is not given.")
_PRESET = presets.define_flag(presets.FILTERS, "builtin")
_UTTERANCE = flags.DEFINE_string("utterance", None, "Utterance id or wav path for the learned "
                                 "spectrogram (default: the fold's first test utterance).")
_SELECTED = flags.DEFINE_integer("num_selected", 4, "Filters shown in time and frequency.")

HIGH_LOW_MEASURE = "relative weight change, high - low"


def train_run(workdir: pathlib.Path) -> pathlib.Path:
  """Trains fold 1 of the built-in corpus into `workdir/run` (resumes or reuses it)."""
  config = common.load_config(_MODEL.value, presets.fields(_PRESET.value, presets.FILTERS))
  run = workdir / "run"
  training.train_fold(config, 1, workdir=run)
  return run


def pick_utterance(loaded: loaded_model.LoadedModel, choice: str | None) -> tuple[str, np.ndarray]:
  """(name, waveform) of `choice` (a wav path or an utterance id), default the first test one."""
  if choice and pathlib.Path(choice).is_file():
    return choice, audio.load(choice, loaded.sample_rate, loaded.clip_seconds)
  data = training.load_fold_data(loaded.config, loaded.fold)
  if choice is None:
    index = int(data.split.test[0])
  else:
    ids = [u.utt_id for u in data.manifest]
    if choice not in ids:
      raise errors.ConfigError(f"--utterance={choice!r} is neither a file nor an utterance id of "
                               f"the run's corpus ({data.manifest.root})")
    index = ids.index(choice)
  utterance = data.manifest[index]
  label = utterance.label or utterance.emotion
  return f"{utterance.utt_id} ({label})", np.asarray(data.waveforms[index])


def claim_record(claim: str, measure: str, difference: stats.Difference) -> dict:
  """A claim's entry of `claims` in the JSON: its text, its measure and the difference."""
  return {"claim": claim, "measure": measure, **difference.to_json()}


def claim_line(record: dict) -> str:
  """One printed line: claim (measure): difference [interval] confidence -> verdict (filters)."""
  return (f"{record['claim']} ({record['measure']}): {record['difference']:+.3g} "
          f"[{record['low']:+.3g}, {record['high']:+.3g}] {100 * record['confidence']:g}% -> "
          f"{record['verdict']} ({sum(record['sizes'].values())} filters)")


def draw_claims(figures: common.Figures, claims: list[tuple[str, stats.Difference]],
                title: str, xlabel: str) -> None:
  """`claims_forest.png` in the figures' folder, when matplotlib is installed."""
  if claims and plots.available():
    path = forest_plot.forest_plot(claims, figures.directory / "claims_forest.png", title, xlabel)
    figures.paths.append(str(path))


def high_low_claim(drift: dict, figures: common.Figures) -> list[dict]:
  """Fig. 6's claim with its interval, as `claims` records; draws `claims_forest.png`."""
  difference = learned_filters.high_low_difference(drift["per_filter"])
  draw_claims(figures, [("high - low filters", difference)],
              f"Fig. 6: relative weight change with {100 * difference.confidence:g}% interval",
              "difference of mean ||w - w0|| / ||w0|| (high - low)")
  return [claim_record(learned_filters.HIGH_LOW_CLAIM, HIGH_LOW_MEASURE, difference)]


def analyse(loaded: loaded_model.LoadedModel, figures: common.Figures) -> dict:
  initial_vars = loaded_model.init_variables(loaded.model, loaded.config, loaded.num_samples,
                                        loaded.fold)
  initial = models.frontend_kernel(loaded.model, initial_vars["params"])
  trained = models.frontend_kernel(loaded.model, loaded.variables["params"])
  rate = loaded.sample_rate
  edges = learned_filters.initial_band_edges(loaded.config.model)
  drift = learned_filters.drift(initial, trained, rate, edges)
  order = np.argsort(drift["per_filter"]["centroid_initial_hz"])
  selected = [int(order[i]) for i in learned_filters.select_filters(len(order),
                                                                      _SELECTED.value)]
  freqs, cumulative_initial = learned_filters.cumulative_response(initial, rate)
  _, cumulative_trained = learned_filters.cumulative_response(trained, rate)
  gains = learned_filters.cumulative_gain_by_band(
      initial, trained, rate, tuple(np.array([0, 1, 2, 4, 8]) * rate / 16))
  name, waveform = pick_utterance(loaded, _UTTERANCE.value)
  initial_model_vars = {k: v for k, v in initial_vars.items() if k == "params" or v}
  spec_initial = learned_filters.learned_spectrogram(loaded.model, initial_model_vars, waveform)
  spec_trained = learned_filters.learned_spectrogram(loaded.model, loaded.variables, waveform)
  window_ms = loaded.config.model.frontend.get("window_ms", 40.0)
  figures.save(plots.filters_figure, "fig6_filters", initial, trained, rate, selected)
  figures.save(plots.drift_figure, "filter_drift", drift)
  figures.save(plots.cumulative_response_figure, "cumulative_response", freqs,
               cumulative_initial, cumulative_trained)
  figures.save(plots.learned_spectrogram_figure, "learned_spectrogram", spec_initial,
               spec_trained, window_ms, f"{name}, {loaded.config.model.name}")
  claims = high_low_claim(drift, figures)
  step = max(1, len(freqs) // 256)
  return {
      "run": str(loaded.workdir), "fold": loaded.fold, "epoch": loaded.epoch,
      "model": loaded.config.model.name, "sample_rate": rate, "kernel_shape": list(trained.shape),
      "selected_filters": selected, "drift": drift, "claims": claims,
      "cumulative_response": {"freqs_hz": freqs[::step],
                              "initial_db": 10 * np.log10(cumulative_initial[::step] + 1e-20),
                              "trained_db": 10 * np.log10(cumulative_trained[::step] + 1e-20)},
      "cumulative_gain_db": gains,
      "utterance": name,
      "learned_spectrogram": {"initial": spec_initial, "trained": spec_trained},
      "verdicts": [drift["verdict"], learned_filters.cumulative_verdict(gains)],
  }


def main(argv) -> int:
  if len(argv) > 1:
    cli.fail(PROG, f"unexpected arguments {argv[1:]}")
  if not _WORKDIR.value:
    cli.fail(PROG, "--workdir is required")
  workdir = pathlib.Path(_WORKDIR.value)
  figures = common.Figures(workdir)
  run = pathlib.Path(_RUN.value) if _RUN.value else train_run(workdir)
  loaded = loaded_model.load_model(run, _FOLD.value)
  report = analyse(loaded, figures)
  report["figures"] = figures.paths
  path = common.write_json(workdir / "filters.json", report)
  for line in report["verdicts"]:
    print(line)
  for record in report["claims"]:
    print(claim_line(record))
  print(f"Numbers: {path}")
  if figures.paths:
    print("Figures: " + ", ".join(p for p in figures.paths if p.endswith(".png")))
  return 0


if __name__ == "__main__":
  cli.run(main, PROG)
