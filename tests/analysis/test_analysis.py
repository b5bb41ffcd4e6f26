"""Tests of wavejax.analysis (the paper's Sec. 2-4 claims as numbers) and its figures."""

import json
import math
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from helpers import REPO, tiny_config
from wavejax import errors, models
from wavejax.analysis import aliasing, band_task, equivalence, learned_filters, signals
from wavejax.models import create_model, filters
from wavejax.training import change_rate

# Compared with numpy or float32 references: float32 products on every backend.
pytestmark = pytest.mark.float32

FS = 16000.0


def rng(seed=0):
  return np.random.default_rng(seed)


# Sec. 2.2.2: stacked linear convolutions are one convolution ---------------------------------


def test_collapsed_kernel_is_the_numerical_composition():
  h1, h2, h3 = (rng(i).standard_normal(n) for i, n in enumerate((7, 5, 4)))
  kernel, bias, stride = equivalence.collapse(
      [equivalence.Layer(h1), equivalence.Layer(h2), equivalence.Layer(h3)])
  # Correlation after correlation is correlation with the convolution of the kernels.
  np.testing.assert_allclose(kernel[:, 0, 0], np.convolve(np.convolve(h1, h2), h3), atol=1e-12)
  assert stride == 1 and bias.shape == (1,)


@pytest.mark.parametrize("variant", ["linear", "stride", "avgpool", "stridepool"])
def test_linear_stacks_collapse_exactly(variant):
  r = rng(1)
  layers = [equivalence.Layer(r.standard_normal((6, 1, 3)), r.standard_normal(3)),
            equivalence.Layer(r.standard_normal((4, 3, 2)), r.standard_normal(2), stride=2,
                              pool="avg", pool_size=2),
            equivalence.Layer(r.standard_normal((3, 2, 2)), r.standard_normal(2))]
  layers = equivalence.with_nonlinearity(layers, variant)
  x = r.standard_normal(500)
  stacked = equivalence.apply_stack(x, layers)
  collapsed = equivalence.conv1d(x, *equivalence.collapse(layers))
  assert collapsed.shape == stacked.shape
  np.testing.assert_allclose(collapsed, stacked, atol=1e-10)


def test_conv1d_follows_flax_conv():
  r = rng(2)
  kernel, bias = r.standard_normal((5, 2, 3)), r.standard_normal(3)
  x = r.standard_normal((40, 2))
  conv = nn.Conv(3, (5,), strides=(2,), padding="VALID")
  params = {"params": {"kernel": jnp.asarray(kernel, jnp.float32),
                       "bias": jnp.asarray(bias, jnp.float32)}}
  expected = np.asarray(conv.apply(params, jnp.asarray(x, jnp.float32)[None]))[0]
  np.testing.assert_allclose(equivalence.conv1d(x, kernel, bias, stride=2), expected, atol=1e-4)


def test_nonlinear_stacks_have_no_single_kernel():
  x = signals.band_noise(0, FS / 2, FS, 2048, rng(3))
  report = equivalence.equivalence_report(x, equivalence.paper_stack(FS, taps=31), FS)
  for variant in ("linear", "stride", "avgpool", "stridepool"):
    assert report[variant]["equivalent"], variant
    assert report[variant]["collapsed_error"] < 1e-10
  for variant in ("relu", "maxpool"):
    assert not report[variant]["equivalent"]
    assert report[variant]["single_kernel_unexplained"] > 0.05, report[variant]
  assert report["verdict"].startswith("Sec. 2.2.2 holds")
  with pytest.raises(errors.ConfigError, match="not linear"):
    equivalence.collapse(equivalence.with_nonlinearity(equivalence.paper_stack(FS, 31), "relu"))


def test_paper_stack_output_21_is_one_two_band_filter():
  kernel, _, _ = equivalence.collapse(equivalence.paper_stack(FS, taps=51))
  bands = equivalence.passbands(kernel[:, 0, 0], FS)
  assert len(bands) == 2
  (lo1, hi1), (lo2, hi2) = bands
  assert abs(lo1 - 2000) < 200 and abs(hi1 - 4000) < 250
  assert abs(lo2 - 6000) < 200 and hi2 == FS / 2
  x = signals.band_noise(0, FS / 2, FS, 4096, rng(4))
  power = (equivalence.apply_stack(x, equivalence.paper_stack(FS, taps=51))**2).mean(axis=0)
  assert power[1] < 0.05 * power[0]  # Output (2,2): "almost no frequency components"


# Sec. 2.2.3: pooling aliases --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["max", "avg", "stride"])
def test_aliased_fraction_of_tones(kind):
  below = signals.tones([1000.0], FS, 8192)
  above = signals.tones([6000.0], FS, 8192)
  clean = aliasing.analyze_stack(below, FS, [aliasing.Stage(None, kind, 2)])[0]
  folded = aliasing.analyze_stack(above, FS, [aliasing.Stage(None, kind, 2)])[0]
  filtered = aliasing.analyze_stack(above, FS, [aliasing.Stage(None, kind, 2, antialias=True)])[0]
  assert clean["aliased_fraction"] < (0.1 if kind == "max" else 1e-6)
  assert folded["aliased_fraction"] > 0.9
  assert filtered["aliased_to_input"] < 1e-6


def test_strided_pooling_folds_a_tone_onto_its_image():
  stage = aliasing.analyze_stack(signals.tones([6000.0], FS, 8192), FS,
                                 [aliasing.Stage(None, "stride", 2)])[0]
  assert stage["rate_out"] == FS / 2
  assert abs(stage["freqs_post"][np.argmax(stage["power_post"])] - 2000.0) < 5.0


def test_chirp_aliasing_is_caught_frame_by_frame():
  # A chirp covers every frequency over time: only a time-frequency mask sees its folded copy.
  x = signals.chirp(0.0, FS / 2, FS, 8192)
  post = aliasing.pool(x, 2, "stride")
  assert 0.35 < aliasing.aliased_fraction(x, post, 2) < 0.65


def test_aliasing_accumulates_over_stages_and_antialiasing_removes_it():
  x = signals.chirp(0.0, FS / 2, FS, 8192)
  plain = aliasing.analyze_stack(x, FS, aliasing.demo_stages(FS, "stride"))
  clean = aliasing.analyze_stack(x, FS, aliasing.demo_stages(FS, "stride", antialias=True))
  assert plain[0]["aliased_fraction"] > 0.2
  assert plain[-1]["cumulative_aliased_fraction"] > 0.3
  assert all(s["cumulative_aliased_fraction"] < 1e-3 for s in clean)
  sweep = aliasing.pooling_sweep({"tone_low": signals.tones([1000.0], FS, 4096),
                                  "tone_high": signals.tones([6000.0], FS, 4096)}, FS)
  assert aliasing.aliasing_verdict(sweep).startswith("Sec. 2.2.3 holds")


# Band task ------------------------------------------------------------------------------------


def test_band_task_classes_coincide_after_decimation():
  _, waveforms, targets = band_task.make_corpus(6, clip_seconds=0.5, seed=0)
  assert waveforms.shape == (band_task.NUM_SESSIONS * 2 * 6, 8000)

  def mean_spectrum(x, factor):
    x = x / np.sqrt(np.mean(x**2, axis=1, keepdims=True))
    return np.mean([signals.power_spectrum(w[::factor], FS / factor)[1] for w in x], axis=0)

  full = [mean_spectrum(waveforms[targets == c], 1) for c in (0, 1)]
  half = [mean_spectrum(waveforms[targets == c], 2) for c in (0, 1)]
  freqs = np.fft.rfftfreq(8000, 1 / FS)
  band = (freqs > 1100) & (freqs < 1400)  # class 0 only, at the full rate
  assert full[0][band].sum() > 100 * full[1][band].sum()
  # After stride 2 both classes hold the same two bands with the same power, up to noise.
  assert np.abs(half[0] - half[1]).sum() < 0.25 * (half[0] + half[1]).sum()


def test_pool_first_twin_runs_at_half_rate(tmp_path):
  config = tiny_config(tmp_path)
  config.model.frontend.num_filters = 8
  config.model.frontend.kernel_size = 32
  model = band_task.pool_first_model(config, num_classes=2, kind="stride")
  waveforms = jnp.asarray(band_task.make_corpus(1, clip_seconds=0.25)[1][:2])
  variables = model.init(jax.random.key(0), waveforms)
  assert model.apply(variables, waveforms).shape == (2, 2)
  kernel = variables["params"]["inner"]["frontend"]["kernel"]
  np.testing.assert_allclose(kernel, filters.fir_filterbank(8, 32, 8000), atol=1e-6)
  # The twin sees every second sample: its front-end output is SimpleNet's on x[::2] at 8 kHz.
  inner = model.inner.clone(parent=None)
  direct = inner.apply({name: tree["inner"] for name, tree in variables.items()},
                       waveforms[:, ::2])
  np.testing.assert_allclose(model.apply(variables, waveforms), direct, atol=1e-5)


# Fig. 6: filters ------------------------------------------------------------------------------


def test_a_kernel_initialised_as_band_k_peaks_in_band_k():
  edges = filters.band_edges(16, FS)
  bank = filters.fir_filterbank(16, 256, FS)
  stats = learned_filters.filter_stats(bank, FS)
  for k, (lo, hi) in enumerate(edges):
    assert lo - 1 <= stats["peak_hz"][k] <= hi + 1, (k, stats["peak_hz"][k])
    assert lo - 60 <= stats["centroid_hz"][k] <= hi + 60
  freqs, magnitude = learned_filters.frequency_response(bank, FS, 513)
  _, reference = signal.freqz(bank[:, 5], worN=513, include_nyquist=True, fs=FS)
  np.testing.assert_allclose(magnitude[:, 5], np.abs(reference), atol=1e-5)
  assert freqs[-1] == FS / 2


def test_drift_measures_added_low_passbands():
  initial = filters.fir_filterbank(8, 128, FS).astype(np.float64)
  same = learned_filters.drift(initial, initial, FS, filters.band_edges(8, FS))
  assert same["summary"]["mean_relative_change"] == 0.0
  assert np.allclose(same["per_filter"]["centroid_shift_hz"], 0.0)
  trained = initial.copy()
  trained[:, 4:] += 0.5 * filters.fir_filterbank(1, 128, FS, high_hz=500.0)  # upper half
  moved = learned_filters.drift(initial, trained, FS, filters.band_edges(8, FS))
  summary = moved["summary"]
  assert summary["relative_change_high_half"] > 0.1 > summary["relative_change_low_half"]
  assert summary["low_share_gain_high_half"] > 0.1
  assert summary["mean_centroid_shift_hz"] < 0
  assert moved["verdict"].startswith("Fig. 6, low passbands added")
  assert same["verdict"].startswith("Fig. 6, low passbands not added")
  freqs, total = learned_filters.cumulative_response(initial, FS)
  assert total.shape == freqs.shape and total.min() > 0.5  # the bank covers 0-8 kHz


def _moved(bank, columns, amounts, seed=0):
  """`bank` with each filter in `columns` moved by `amounts[i]` x its norm in a random direction:
  its relative weight change ||w - w0|| / ||w0|| is exactly `amounts[i]`."""
  moved = bank.copy()
  directions = rng(seed).standard_normal((bank.shape[0], len(columns)))
  directions /= np.linalg.norm(directions, axis=0)
  moved[:, columns] += directions * np.asarray(amounts) * np.linalg.norm(bank[:, columns], axis=0)
  return moved


def test_high_low_difference_has_the_moved_amount_in_its_interval():
  initial = filters.fir_filterbank(16, 128, FS).astype(np.float64)  # band k = k-th lowest
  amounts = np.linspace(0.2, 0.4, 8)  # mean 0.3
  high = learned_filters.drift(initial, _moved(initial, range(8, 16), amounts), FS)
  result = learned_filters.high_low_difference(high["per_filter"], num_resamples=2000)
  assert result.difference == pytest.approx(0.3)
  assert result.value_b == pytest.approx(0.0, abs=1e-12)
  assert result.low < 0.3 < result.high and result.half_width < 0.1
  assert result.verdict == "supported" and result.sizes == {"a": 8, "b": 8}
  assert result.value_a == pytest.approx(high["summary"]["relative_change_high_half"])
  low = learned_filters.drift(initial, _moved(initial, range(8), amounts), FS)
  result = learned_filters.high_low_difference(low["per_filter"], num_resamples=2000)
  assert result.difference == pytest.approx(-0.3) and result.high < 0
  assert result.verdict == "contradicted"
  same = learned_filters.drift(initial, initial, FS)
  result = learned_filters.high_low_difference(same["per_filter"], num_resamples=200)
  assert (result.difference, result.low, result.high) == (0.0, 0.0, 0.0)
  assert result.verdict == "undecided"


def test_high_low_difference_splits_by_initial_centre_not_by_index():
  initial = filters.fir_filterbank(8, 128, FS).astype(np.float64)[:, ::-1]  # high bands first
  moved = learned_filters.drift(initial, _moved(initial, range(4), [0.5] * 4), FS)
  result = learned_filters.high_low_difference(moved["per_filter"], num_resamples=200)
  assert result.difference == pytest.approx(0.5) and result.verdict == "supported"
  low, high = learned_filters.frequency_halves([5.0, 1.0, 3.0, 2.0, 4.0])
  assert low.tolist() == [1, 3] and high.tolist() == [2, 4, 0]  # odd: the median goes up
  with pytest.raises(errors.ConfigError, match="4 or more filters"):
    learned_filters.high_low_difference(
        learned_filters.drift(initial[:, :3], initial[:, :3], FS)["per_filter"])


def test_frontend_kernel_and_learned_spectrogram(tmp_path):
  config = tiny_config(tmp_path)
  config.model.frontend.num_filters = 8
  config.model.frontend.kernel_size = 64
  model = create_model(config.model, num_classes=4)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 16000)))
  kernel = models.frontend_kernel(model, variables["params"])
  np.testing.assert_allclose(kernel, filters.fir_filterbank(8, 64, FS), atol=1e-6)
  tone = signals.tones([5500.0], FS, 16000).astype(np.float32)
  spectrogram = learned_filters.learned_spectrogram(model, variables, tone)
  assert spectrogram.shape == (25, 8)
  assert np.all(np.argmax(spectrogram, axis=1) == 5)  # band 5 = 5-6 kHz
  stack = {"frontend": {"Conv_1": {"kernel": np.ones((3, 4, 4))},
                        "Conv_0": {"kernel": np.arange(10.0).reshape(5, 1, 2)}}}
  np.testing.assert_array_equal(models.frontend_kernel(model, stack),
                                np.arange(10.0).reshape(5, 2))  # a stack's first convolution
  with pytest.raises(errors.ConfigError, match="filter bank"):
    models.frontend_kernel(model, {"frontend": {"scale": np.ones(3)}})


@pytest.mark.parametrize("name,overrides,shape", [
    ("sincnet", {"model.frontend.num_filters": 4, "model.frontend.kernel_size": 31}, (31, 4)),
    ("leaf", {"model.frontend.num_filters": 4, "model.frontend.kernel_size": 33}, (33, 4)),
])
def test_frontend_kernel_of_parametric_frontends(name, overrides, shape):
  from wavejax.analysis import common
  config = common.load_config(name, overrides)
  model = create_model(config.model, num_classes=2)
  frontend = model.frontend.clone(parent=None)
  variables = frontend.init(jax.random.key(0), jnp.zeros((1, 1000)))  # the front-end alone
  kernel = models.frontend_kernel(model, {"frontend": variables["params"]})
  assert kernel.shape == shape and np.all(np.isfinite(kernel)) and np.abs(kernel).max() > 0


# Fig. 4: change rate --------------------------------------------------------------------------


def test_change_rate_is_the_papers_mean_relative_change():
  previous = np.array([1.0, 2.0, -4.0, 0.0])
  current = np.array([2.0, 2.0, -2.0, 5.0])
  assert change_rate.change_rate(previous, current) == pytest.approx((1.0 + 0.0 + 0.5) / 3)
  assert change_rate.relative_norm_change(previous, current) == pytest.approx(
      np.linalg.norm(current - previous) / np.linalg.norm(previous))


def test_tracker_reports_every_kernel_per_epoch():
  params = {"frontend": {"kernel": np.ones((4, 2)), "bias": np.zeros(2)},
            "head": {"Dense_0": {"kernel": np.full((2, 3), 2.0), "bias": np.zeros(3)}}}
  tracker = change_rate.ChangeRateTracker()
  assert tracker.update(0, params) == {}
  moved = jax.tree.map(lambda x: x * 1.5, params)
  rates = tracker.update(1, moved)
  assert rates == {"frontend": pytest.approx(0.5), "head/Dense_0": pytest.approx(0.5)}
  assert tracker.update(2, moved) == {"frontend": 0.0, "head/Dense_0": 0.0}
  assert [h["epoch"] for h in tracker.history] == [1, 2]
  assert change_rate.mean_rates(tracker.history) == {"frontend": 0.25, "head/Dense_0": 0.25}


@pytest.mark.parametrize("shape", [(6, 4), (5, 3, 4)], ids=["taps_filters", "taps_in_out"])
def test_per_filter_change_is_the_numpy_norm_ratio(shape):
  r = rng(7)
  previous = r.standard_normal(shape)
  current = previous + r.standard_normal(shape) * np.arange(1, 5)  # filter f moves ~ f + 1
  previous[..., 2] = 0.0  # a filter that was all 0: no rate, as relative_norm_change
  expected = [np.linalg.norm(current[..., f] - previous[..., f]) / np.linalg.norm(previous[..., f])
              if f != 2 else 0.0 for f in range(4)]
  got = change_rate.relative_norm_change_per_filter(previous, current)
  assert got.shape == (4,)
  np.testing.assert_allclose(got, expected, rtol=1e-12)
  second = current * np.array([1.0, 2.0, 1.0, 0.5])  # filter 1 doubles, filter 3 halves
  tracker = change_rate.ChangeRateTracker()
  tracker.update(0, {"frontend": {"kernel": previous}})
  tracker.update(1, {"frontend": {"kernel": current}})
  tracker.update(2, {"frontend": {"kernel": second}})
  np.testing.assert_allclose(tracker.history[0]["relative_norm_per_filter"]["frontend"], expected,
                             rtol=1e-6)  # the tracker keeps float32 copies
  np.testing.assert_allclose(tracker.history[1]["relative_norm_per_filter"]["frontend"],
                             [0.0, 1.0, 0.0, 0.5], atol=1e-6)
  means = change_rate.mean_per_filter(tracker.history)
  np.testing.assert_allclose(means["frontend"], (np.array(expected) + [0.0, 1.0, 0.0, 0.5]) / 2,
                             rtol=1e-6)
  assert change_rate.mean_per_filter(tracker.history, ["frontend", "other"]).keys() == {
      "frontend"}


# Figures ---------------------------------------------------------------------------------------


def test_figures_are_written(tmp_path):
  pytest.importorskip("matplotlib")
  from wavejax.reporting import plots
  x = signals.chirp(0, FS / 2, FS, 4096)
  stages = aliasing.analyze_stack(x, FS, aliasing.demo_stages(FS, "max"))
  sweep = aliasing.pooling_sweep({"tone": signals.tones([6000.0], FS, 4096)}, FS)
  layers = equivalence.paper_stack(FS, taps=31)
  report = equivalence.equivalence_report(x[:1024], layers, FS, variants=("linear", "relu"))
  initial = filters.fir_filterbank(8, 64, FS)
  trained = initial + 0.01 * rng(5).standard_normal(initial.shape)
  drift = learned_filters.drift(initial, trained, FS)
  history = [{"epoch": 1, "rate": {"frontend": 0.1}}, {"epoch": 2, "rate": {"frontend": 0.05}}]
  summary = {"models": {"a": {"mean": 0.9, "std": 0.1, "test_wa": [0.8, 1.0]}}, "chance": 0.5}
  figures = {
      "equivalence": plots.equivalence_figure(report, layers, FS),
      "stack": plots.aliasing_stack_figure(stages, "chirp"),
      "sweep": plots.pooling_sweep_figure(sweep),
      "band": plots.band_task_figure(summary),
      "fig6": plots.filters_figure(initial, trained, FS, [1, 6]),
      "drift": plots.drift_figure(drift),
      "cumulative": plots.cumulative_response_figure(
          *learned_filters.cumulative_response(initial, FS),
          learned_filters.cumulative_response(trained, FS)[1]),
      "spectrogram": plots.learned_spectrogram_figure(np.ones((10, 8)), np.ones((10, 8)), 40.0),
      "change_rate": plots.change_rate_figure({"simplenet": history}),
  }
  for name, figure in figures.items():
    written = plots.save(figure, tmp_path / name)
    assert [p.rsplit(".", 1)[1] for p in written] == ["png", "pdf"]
    assert all((tmp_path / f"{name}.{ext}").stat().st_size > 1000 for ext in ("png", "pdf"))


def test_figures_without_matplotlib_raise_one_line(monkeypatch):
  from wavejax.reporting import plots
  monkeypatch.setattr(plots, "available", lambda: False)
  with pytest.raises(plots.PlotsUnavailableError, match=r"pip install 'wavejax\[plots\]'"):
    plots.pooling_sweep_figure({})


@pytest.mark.slow
def test_aliasing_experiment_without_training(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.aliasing", f"--workdir={tmp_path}", "--preset=smoke",
       "--noband_task"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "Sec. 2.2.2 holds" in out.stdout and "Sec. 2.2.3 holds" in out.stdout
  assert (tmp_path / "aliasing.json").exists()


CLAIM_LINES = {"filters": "Fig. 6: high-frequency filters change more than low ones",
               "change_rate": "Fig. 4: SimpleNet's filters change more per epoch than SoundNet's"}


@pytest.mark.slow
@pytest.mark.parametrize("script,args", [
    ("aliasing", []), ("filters", []), ("change_rate", [])])
def test_experiments_smoke(tmp_path, script, args):
  out = subprocess.run(
      [sys.executable, "-m", f"experiments.{script}", f"--workdir={tmp_path}", "--preset=smoke",
       *args], cwd=REPO, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  assert (tmp_path / f"{script}.json").exists()
  if script not in CLAIM_LINES:
    return
  claims = json.loads((tmp_path / f"{script}.json").read_text())["claims"]
  assert len(claims) == 1
  for claim in claims:
    assert claim["verdict"] in ("supported", "contradicted", "undecided")
    numbers = (claim["difference"], claim["low"], claim["high"], claim["value_a"],
               claim["value_b"], claim["half_width"])
    assert all(math.isfinite(x) for x in numbers), claim
    assert claim["low"] <= claim["difference"] <= claim["high"] and claim["confidence"] == 0.95
    assert claim["claim"].startswith(CLAIM_LINES[script]) and claim["measure"]
  line = next(x for x in out.stdout.splitlines() if x.startswith(CLAIM_LINES[script]))
  assert f"95% -> {claims[0]['verdict']} (" in line and line.endswith(" filters)"), line
  from wavejax.reporting import plots
  if plots.available():
    assert (tmp_path / "claims_forest.png").stat().st_size > 1000


@pytest.mark.slow
def test_change_rate_without_soundnet_has_no_claim(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.change_rate", f"--workdir={tmp_path}", "--preset=smoke",
       "--models=simplenet_cnn"], cwd=REPO, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"{CLAIM_LINES['change_rate']} first convolutions: no claim" in out.stdout
  report = json.loads((tmp_path / "change_rate.json").read_text())
  assert report["claims"] == [] and not (tmp_path / "claims_forest.png").exists()
  assert len(report["models"]["simplenet_cnn"]["mean_relative_norm_per_filter"]["frontend"]) > 1
