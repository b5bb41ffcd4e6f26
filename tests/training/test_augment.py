"""Waveform augmentations: each one's measured effect equals its per-example draw, draws are
functions of the key, padding is never mixed into real examples, and everything runs under jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile

from wavejax import config as wavejax_config
from wavejax import errors
from wavejax.training import augment, parallel, steps

# Compared with numpy or float32 references: float32 products on every backend.
pytestmark = pytest.mark.float32

RATE = 16000


def key(seed=0):
  return jax.random.key(seed)


def noise_batch(batch_size=8, length=512, seed=0):
  return np.random.default_rng(seed).standard_normal((batch_size, length)).astype(np.float32)


def utterances(batch_size=6, length=4000, seed=0):
  """Tones and noise bursts followed by zero padding (as `fit_length` pads), one silent row."""
  rng = np.random.default_rng(seed)
  rows = np.zeros((batch_size, length), np.float32)
  t = np.arange(length) / RATE
  for b in range(batch_size - 1):
    active = rng.integers(length // 4, length)
    tone = np.sin(2 * np.pi * rng.uniform(100, 3000) * t)
    content = 0.3 * tone + 0.1 * rng.standard_normal(length)
    rows[b, :active] = content[:active] * rng.uniform(0.05, 2.0)
  return rows  # the last row stays silent


def active_span(row):
  loud = np.flatnonzero(np.abs(row) > augment.ACTIVE_LEVEL)
  return slice(loud[0], loud[-1] + 1)


def assert_key_decides(fn, *args):
  """The same key gives the same output bit for bit, under jit too (up to rounding); another key
  gives a different one."""
  first, again, other = fn(key(1), *args), fn(key(1), *args), fn(key(2), *args)
  jitted = jax.jit(lambda k: fn(k, *args))(key(1))
  for a, b, c in zip(jax.tree.leaves(first), jax.tree.leaves(again), jax.tree.leaves(jitted)):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-6)
  assert any(not np.array_equal(a, c)
             for a, c in zip(jax.tree.leaves(first), jax.tree.leaves(other)))


def test_gain_scales_each_example_by_its_drawn_db():
  x = noise_batch()
  out = np.asarray(augment.gain(key(), x, 6.0))
  drawn = np.asarray(augment.draw_gain_db(key(), len(x), 6.0))
  measured = 20 * np.log10(np.sqrt((out**2).mean(1) / (x**2).mean(1)))
  np.testing.assert_allclose(measured, drawn, atol=1e-4)
  assert np.all(np.abs(measured) <= 6.0) and np.ptp(measured) > 3.0
  # The waveform keeps its shape: only the level changes.
  np.testing.assert_allclose(out, x * 10 ** (drawn[:, None] / 20), rtol=1e-5)
  assert_key_decides(augment.gain, x, 6.0)


def test_shift_moves_a_click_and_zero_fills():
  batch_size, length, click = 16, 300, 120
  x = np.full((batch_size, length), 0.5, np.float32)
  x[:, click] = 1.0
  shifts = np.asarray(augment.draw_shift(key(), batch_size, 50))
  out = np.asarray(augment.time_shift(key(), x, 50))
  assert np.all(np.abs(shifts) <= 50) and shifts.min() < 0 < shifts.max()
  for row, shift in zip(out, shifts):
    expected = np.zeros(length, np.float32)
    kept = slice(max(shift, 0), length + min(shift, 0))
    expected[kept] = 0.5
    expected[click + shift] = 1.0
    np.testing.assert_array_equal(row, expected)  # no wrap-around: the vacated end is zeros
  np.testing.assert_array_equal(augment.apply_shift(x[:3], jnp.array([0, 3, -2])),
                                [x[0], np.r_[[0] * 3, x[1, :-3]], np.r_[x[2, 2:], [0, 0]]])
  assert_key_decides(augment.time_shift, x, 50)


def measured_snr_db(clean, noisy):
  """SNR over each example's active span, noise = noisy - clean; NaN for a silent example."""
  snrs = []
  for x, y in zip(clean, noisy):
    if not np.any(np.abs(x) > augment.ACTIVE_LEVEL):
      snrs.append(np.nan)
      continue
    span = active_span(x)
    noise = y[span].astype(np.float64) - x[span]
    snrs.append(10 * np.log10(np.sum(x[span].astype(np.float64)**2) / np.sum(noise**2)))
  return np.array(snrs)


@pytest.mark.parametrize("with_clips", [False, True])
def test_noise_is_added_at_the_drawn_snr_of_each_example(with_clips):
  x = utterances()
  clips = noise_batch(3, 700, seed=5) if with_clips else None  # shorter than T: tiled
  out = np.asarray(augment.add_noise(key(), x, (-5.0, 25.0), clips))
  noise, drawn = augment.draw_noise(key(), x.shape, (-5.0, 25.0), clips)
  drawn = np.asarray(drawn)
  measured = measured_snr_db(x, out)
  np.testing.assert_allclose(measured[:-1], drawn[:-1], atol=0.1)
  assert np.all((drawn >= -5.0) & (drawn <= 25.0)) and np.ptp(drawn) > 5.0
  # The noise covers the padding too; a silent example gets none and stays finite.
  first_padded = active_span(x[0]).stop
  assert np.all(out[0, first_padded:] != 0)
  assert np.all(np.isfinite(out)) and np.array_equal(out[-1], x[-1])
  if with_clips:
    # Each example reads one clip circularly from a random offset (tiled past its end).
    reads = set()
    for row in np.asarray(noise):
      matches = [(m, o) for m in range(3) for o in range(700)
                 if np.array_equal(row, clips[m, (o + np.arange(x.shape[1])) % 700])]
      assert len(matches) == 1
      reads.add(matches[0])
    assert len(reads) > 1
  assert_key_decides(augment.add_noise, x, (-5.0, 25.0), clips)


def test_noise_on_a_silent_batch_or_with_silent_clips_is_finite():
  silent = np.zeros((2, 100), np.float32)
  np.testing.assert_array_equal(augment.add_noise(key(), silent, (0.0, 10.0)), silent)
  x = noise_batch(2, 100)
  out = augment.add_noise(key(), x, (0.0, 10.0), np.zeros((1, 50), np.float32))
  np.testing.assert_array_equal(out, x)


def reference_resample(x, factor, half=augment.SPEED_HALF_TAPS, rolloff=augment.SPEED_ROLLOFF):
  """`resample_by`'s documented filter in float64 numpy, one tap at a time."""
  length = len(x)
  position = np.arange(length) * np.float64(factor)
  base = np.floor(position).astype(int)
  fraction = position - base
  cutoff = rolloff * min(1.0, 1.0 / factor)
  total, norm = np.zeros(length), np.zeros(length)
  for tap in range(1 - half, half + 1):
    d = fraction - tap
    weight = cutoff * np.sinc(cutoff * d) * (
        0.42 + 0.5 * np.cos(np.pi * d / half) + 0.08 * np.cos(2 * np.pi * d / half))
    index = base + tap
    total += weight * np.where((index >= 0) & (index < length), x[np.clip(index, 0, length - 1)],
                               0.0)
    norm += weight
  return total / norm


def test_resampling_matches_the_windowed_sinc_filter():
  x = noise_batch(4, 3000, seed=3)
  factors = np.array([0.9, 0.97, 1.0, 1.1], np.float32)
  out = np.asarray(jax.jit(augment.resample_by)(x, factors))
  for row, signal, factor in zip(out, x, factors):
    np.testing.assert_allclose(row, reference_resample(signal.astype(np.float64), factor),
                               atol=2e-3)


def test_speed_moves_a_tone_by_the_drawn_factor_and_keeps_the_length():
  t = np.arange(RATE) / RATE
  x = np.tile(np.sin(2 * np.pi * 1000.0 * t).astype(np.float32), (6, 1))
  out = np.asarray(augment.speed(key(), x, 0.1))
  factors = np.asarray(augment.draw_speed(key(), len(x), 0.1))
  assert out.shape == x.shape
  assert np.all(np.abs(factors - 1) <= 0.1) and np.ptp(factors) > 0.05
  for row, factor in zip(out, factors):
    peak = np.argmax(np.abs(np.fft.rfft(row * np.hanning(len(row)))))  # 1 Hz bins
    assert abs(peak - 1000 * factor) <= 1.0, (peak, factor)
    content = int(len(row) / factor)  # samples that read inside the input; zeros after them
    assert np.all(row[content + augment.SPEED_HALF_TAPS:] == 0)
    assert np.sqrt(np.mean(row[100:min(content, len(row)) - 100]**2)) == pytest.approx(
        np.sqrt(0.5), rel=1e-3)
  assert_key_decides(augment.speed, x, 0.1)


def test_speeding_up_removes_content_above_the_new_nyquist_frequency():
  t = np.arange(RATE) / RATE
  high = np.sin(2 * np.pi * 7600.0 * t).astype(np.float32)  # x 1.1 = 8360 Hz: above Nyquist
  out = np.asarray(augment.resample_by(high[None], jnp.array([1.1])))[0]
  assert 10 * np.log10(np.mean(out[100:-2000]**2) / 0.5) < -35


def test_mixup_mixes_real_examples_with_each_other_only():
  batch_size, classes = 8, 4
  x = noise_batch(batch_size, 64)
  labels = np.arange(batch_size) % classes
  targets = np.eye(classes, dtype=np.float32)[labels]
  weights = np.array([1, 1, 1, 1, 1, 1, 0, 0], np.float32)
  mixed, soft = map(np.asarray, augment.mixup(key(), x, targets, 0.4, weights))
  lam, partner = map(np.asarray, augment.draw_mixup(key(), weights, 0.4))
  np.testing.assert_allclose(mixed, lam[:, None] * x + (1 - lam[:, None]) * x[partner], atol=1e-6)
  np.testing.assert_allclose(soft, lam[:, None] * targets + (1 - lam[:, None]) * targets[partner],
                             atol=1e-6)
  np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-6)
  assert sorted(partner[:6]) == list(range(6)) and np.any(partner[:6] != np.arange(6))
  assert np.all((lam >= 0) & (lam <= 1)) and np.ptp(lam[:6]) > 0.1
  # Padded examples stay as they are, and changing them changes no real example.
  np.testing.assert_array_equal(partner[6:], [6, 7])
  np.testing.assert_array_equal(lam[6:], [1, 1])
  np.testing.assert_array_equal(mixed[6:], x[6:])
  np.testing.assert_array_equal(soft[6:], targets[6:])
  other = x.copy()
  other[6:] = 100.0
  np.testing.assert_array_equal(augment.mixup(key(), other, targets, 0.4, weights)[0][:6],
                                mixed[:6])
  assert_key_decides(augment.mixup, x, targets, 0.4, weights)


def test_soft_cross_entropy_equals_the_hard_one_on_one_hot_targets():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((6, 5)).astype(np.float32)
  labels = np.array([0, 4, 2, 2, 1, 3])
  weights = np.array([1, 1, 1, 1, 0, 0], np.float32)
  one_hot = np.eye(5, dtype=np.float32)[labels]
  for double in (False, True):
    np.testing.assert_allclose(augment.soft_cross_entropy(logits, one_hot, weights, double),
                               steps.cross_entropy(logits, labels, weights, double), rtol=1e-6)
  soft = rng.dirichlet(np.ones(5), 6).astype(np.float32)
  log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  expected = np.sum(-(soft * log_probs).sum(1) * weights) / weights.sum()
  np.testing.assert_allclose(augment.soft_cross_entropy(logits, soft, weights), expected,
                             rtol=1e-5)


def train_batch(batch_size=8, length=2000):
  x = utterances(batch_size, length, seed=1)
  return {"waveforms": x, "labels": (np.arange(batch_size) % 3).astype(np.int32),
          "weights": np.array([1] * (batch_size - 2) + [0, 0], np.float32)}


EVERYTHING = augment.Settings(gain_db=6.0, shift_samples=80, noise_snr_db=(5.0, 20.0), speed=0.1,
                              mixup_alpha=0.4, num_classes=3)


def test_augment_with_everything_off_returns_the_batch_unchanged():
  batch = train_batch()
  defaults = augment.settings_from_config(wavejax_config.augment_config(), 3, RATE)
  for settings in (augment.Settings(), defaults):
    assert not settings.enabled
    out = jax.jit(functools.partial(augment.augment, settings=settings))(key(), batch)
    assert set(out) == set(batch)
    for name in batch:
      np.testing.assert_array_equal(out[name], batch[name])
      assert np.asarray(out[name]).dtype == batch[name].dtype


def test_augment_applies_everything_from_one_key_under_jit_on_a_sharded_batch():
  batch = train_batch()
  mesh = parallel.data_mesh()
  run = jax.jit(functools.partial(augment.augment, settings=EVERYTHING),
                in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)))
  placed = parallel.put_batch(batch, mesh)
  out = run(key(3), placed)
  assert out["waveforms"].shape == batch["waveforms"].shape
  assert out["targets"].shape == (8, 3)
  np.testing.assert_allclose(np.asarray(out["targets"]).sum(1), 1.0, atol=1e-6)
  np.testing.assert_array_equal(out["labels"], batch["labels"])
  np.testing.assert_array_equal(out["weights"], batch["weights"])
  assert np.all(np.isfinite(out["waveforms"]))
  assert not np.allclose(out["waveforms"], batch["waveforms"])
  again, other = run(key(3), placed), run(key(4), placed)
  for name in out:
    np.testing.assert_array_equal(again[name], out[name])
  assert not np.array_equal(other["waveforms"], out["waveforms"])
  assert not np.array_equal(other["targets"], out["targets"])


def test_each_augmentation_uses_its_own_key():
  batch = train_batch()
  _, shift_key, gain_key, noise_key, _ = jax.random.split(key(4), 5)
  np.testing.assert_array_equal(
      augment.augment(key(4), batch, augment.Settings(gain_db=3.0))["waveforms"],
      augment.gain(gain_key, batch["waveforms"], 3.0))
  clips = noise_batch(2, 500)
  settings = augment.Settings(shift_samples=40, noise_snr_db=(0.0, 10.0), noise_dir="noise")
  expected = augment.add_noise(noise_key, augment.time_shift(shift_key, batch["waveforms"], 40),
                               (0.0, 10.0), clips)
  np.testing.assert_array_equal(augment.augment(key(4), batch, settings, clips)["waveforms"],
                                expected)
  with pytest.raises(ValueError, match="load_noise_clips"):
    augment.augment(key(4), batch, settings)


def test_step_keys_are_distinct_from_the_dropout_keys_and_from_each_other():
  base = key(7)
  keys = [jax.random.key_data(augment.step_key(base, step)) for step in range(3)]
  dropout = [jax.random.key_data(jax.random.fold_in(base, step)) for step in range(3)]
  assert len({np.asarray(k).tobytes() for k in keys + dropout}) == 6
  np.testing.assert_array_equal(jax.random.key_data(jax.jit(augment.step_key)(base, 2)), keys[2])


def test_settings_from_config_reads_and_checks_the_section():
  section = wavejax_config.augment_config()
  section.gain_db = 6
  section.shift_seconds = 0.1
  section.noise_snr_db = (5.0, 20.0)
  section.noise_dir = "/data/noise"
  section.speed = 0.1
  section.mixup_alpha = 0.2
  assert augment.settings_from_config(section, 4, RATE) == augment.Settings(
      gain_db=6.0, shift_samples=1600, noise_snr_db=(5.0, 20.0), noise_dir="/data/noise",
      speed=0.1, mixup_alpha=0.2, num_classes=4)
  assert augment.settings_from_config(None, 4, RATE) == augment.Settings(num_classes=4)
  assert augment.settings_from_config({"noise_snr_db": [-5, 5]}, 4, RATE).noise_snr_db == (-5, 5)


@pytest.mark.parametrize("field, value", [
    ("gain_db", -1.0), ("gain_db", float("nan")), ("gain_db", "6"), ("shift_seconds", -0.1),
    ("shift_seconds", float("inf")), ("speed", 1.0), ("speed", -0.1), ("speed", True),
    ("mixup_alpha", -0.2), ("noise_snr_db", (20.0, 5.0)), ("noise_snr_db", (5.0,)),
    ("noise_snr_db", (0.0, float("nan"))), ("noise_snr_db", 10.0), ("noise_dir", ""),
    ("noise_dir", "/data/noise"), ("loudness", 1.0)])
def test_bad_settings_raise_one_line_naming_the_field(field, value):
  with pytest.raises(errors.ConfigError) as raised:
    augment.settings_from_config({field: value}, 4, RATE)
  message = str(raised.value)
  assert f"config.train.augment.{field}" in message and "\n" not in message


def write(path, samples, rate=RATE):
  path.parent.mkdir(parents=True, exist_ok=True)
  soundfile.write(path, samples, rate)


def test_load_noise_clips_cuts_tiles_and_resamples_every_file(tmp_path):
  rng = np.random.default_rng(0)
  long = (0.1 * rng.standard_normal(2500)).astype(np.float32)   # 2 whole clips of 1000
  short = (0.1 * rng.standard_normal(300)).astype(np.float32)   # tiled to one clip
  low_rate = np.sin(2 * np.pi * 440 * np.arange(800) / 8000).astype(np.float32)  # 8 kHz, 1600
  write(tmp_path / "a_long.wav", long)
  write(tmp_path / "nested" / "b_short.flac", short)
  write(tmp_path / "nested" / "c_8k.wav", low_rate, rate=8000)
  (tmp_path / "README.txt").write_text("not audio")
  clips = augment.load_noise_clips(tmp_path, RATE, 1000)
  assert clips.dtype == np.float32 and clips.shape == (4, 1000)
  np.testing.assert_allclose(clips[0], long[:1000], atol=1e-4)  # 16-bit PCM
  np.testing.assert_allclose(clips[1], long[1000:2000], atol=1e-4)
  np.testing.assert_allclose(clips[2], np.resize(short, 1000), atol=1e-4)
  spectrum = np.abs(np.fft.rfft(clips[3]))
  assert abs(np.argmax(spectrum) * RATE / 1000 - 440) <= 16  # 16 Hz bins


def test_load_noise_clips_rejects_empty_folders_and_bad_files(tmp_path):
  with pytest.raises(errors.DatasetError, match="noise_dir"):
    augment.load_noise_clips(tmp_path / "missing", RATE, 100)
  (tmp_path / "notes.txt").write_text("no audio here")
  with pytest.raises(errors.DatasetError, match="no audio files"):
    augment.load_noise_clips(tmp_path, RATE, 100)
  write(tmp_path / "good.wav", np.full(200, 0.1, np.float32))
  (tmp_path / "broken.wav").write_text("not audio")
  with pytest.raises(errors.DatasetError) as raised:
    augment.load_noise_clips(tmp_path, RATE, 100)
  assert "broken.wav" in str(raised.value) and "\n" not in str(raised.value)
  (tmp_path / "broken.wav").unlink()
  write(tmp_path / "quiet.wav", np.zeros(200, np.float32))
  with pytest.raises(errors.DatasetError, match="quiet.wav: silent"):
    augment.load_noise_clips(tmp_path, RATE, 100)
