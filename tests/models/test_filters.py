"""Tests of wavejax.models.filters: band layouts, measured FIR responses and the Flax initialisers.

The response bounds below were measured on the configurations tested (kernel sizes 256 and 255, 64
and
8 filters, all scales, top edge at Nyquist and at 7600 Hz), with the worst case noted next to each
bound, and leave a margin of a few dB.
"""

import functools
import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from wavejax.errors import ConfigError
from wavejax.models import filters

# Compared with numpy or float32 references: float32 products on every backend.
pytestmark = pytest.mark.float32

FS = 16000.0
NYQUIST = FS / 2
GRID = 8193  # Response grid: 0.98 Hz steps from 0 to Nyquist inclusive.

CONFIGS = list(itertools.product(filters.SCALES, (256, 255), (64, 8), (None, 7600.0)))
CONFIG_IDS = [f"{s}-K{k}-F{f}-hi{h}" for s, k, f, h in CONFIGS]


def _db(x):
  return 20 * np.log10(np.maximum(np.abs(x), 1e-12))


@functools.cache
def _bank_response(scale, kernel_size, num_filters, high_hz):
  """(edges [F, 2], freqs [W], magnitude [W, F]) measured with freqz."""
  edges = filters.band_edges(num_filters, FS, scale, high_hz=high_hz)
  bank = filters.fir_filterbank(num_filters, kernel_size, FS, scale, high_hz=high_hz)
  freqs = signal.freqz(bank[:, 0], worN=GRID, include_nyquist=True, fs=FS)[0]
  mags = [np.abs(signal.freqz(bank[:, k], worN=GRID, include_nyquist=True, fs=FS)[1])
          for k in range(num_filters)]
  return edges, freqs, np.stack(mags, axis=1)


def _transition_hz(kernel_size):
  """Hamming window-method transition width, 3.3 fs / K (206 Hz at 256 taps)."""
  return 3.3 * FS / kernel_size


# band_edges
# ------------------------------------------------------------------------------------------


def test_linear_edges_are_the_papers_125_hz_bands():
  edges = filters.band_edges(64, FS)
  assert edges.shape == (64, 2) and edges.dtype == np.float64
  np.testing.assert_array_equal(edges[:, 0], 125.0 * np.arange(64))
  np.testing.assert_array_equal(edges[:, 1], 125.0 * np.arange(1, 65))


def test_linear_edges_at_095_nyquist_are_the_codes_118_75_hz_bands():
  edges = filters.band_edges(64, FS, high_hz=0.95 * 8000)
  np.testing.assert_allclose(np.diff(edges, axis=1), 118.75, rtol=0, atol=1e-9)
  assert edges[0, 0] == 0.0 and edges[-1, 1] == 7600.0


def test_mel_edges_are_equally_spaced_in_mel():
  edges = filters.band_edges(64, FS, "mel")
  assert edges[0, 0] == 0.0 and edges[-1, 1] == NYQUIST
  np.testing.assert_array_equal(edges[1:, 0], edges[:-1, 1])
  assert np.all(np.diff(edges, axis=1) > 0)
  mel = 2595 * np.log10(1 + np.append(edges[:, 0], edges[-1, 1]) / 700)
  np.testing.assert_allclose(np.diff(mel), mel[-1] / 64, rtol=1e-9)


def test_speech_edges_put_three_quarters_of_the_bands_below_4khz():
  edges = filters.band_edges(64, FS, "speech")
  assert np.sum(edges[:, 1] <= 4000.0 + 1e-9) == 48
  np.testing.assert_allclose(np.diff(edges[:48], axis=1), 4000 / 48)
  np.testing.assert_allclose(np.diff(edges[48:], axis=1), 250.0)
  assert edges[-1, 1] == NYQUIST


@pytest.mark.parametrize("scale", filters.SCALES)
def test_edges_tile_a_custom_range(scale):
  edges = filters.band_edges(10, 22050, scale, low_hz=50.0, high_hz=9000.0)
  assert edges[0, 0] == 50.0 and edges[-1, 1] == 9000.0
  np.testing.assert_array_equal(edges[1:, 0], edges[:-1, 1])
  assert np.all(np.diff(edges, axis=1) > 0)


@pytest.mark.parametrize("kwargs, name", [
    (dict(scale="bark"), "scale"),
    (dict(num_filters=0), "num_filters"),
    (dict(num_filters=2.5), "num_filters"),
    (dict(low_hz=-1.0), "low_hz"),
    (dict(high_hz=8000.5), "high_hz"),
    (dict(low_hz=4000.0, high_hz=4000.0), "low_hz"),
    (dict(low_hz=5000.0, high_hz=3000.0), "low_hz"),
    (dict(sample_rate=0), "sample_rate"),
])
def test_bad_arguments_raise_config_error_naming_them(kwargs, name):
  args = dict(num_filters=64, sample_rate=FS) | kwargs
  with pytest.raises(ConfigError, match=name) as err:
    filters.band_edges(**args)
  assert "\n" not in str(err.value)
  with pytest.raises(ConfigError, match=name):
    filters.fir_filterbank(kernel_size=256, **args)


def test_bad_kernel_size_raises():
  with pytest.raises(ConfigError, match="kernel_size"):
    filters.fir_filterbank(8, 1, FS)


# fir_filterbank: measured responses
# ------------------------------------------------------------------


def test_bank_shape_and_dtype():
  bank = filters.fir_filterbank(64, 256, FS)
  assert bank.shape == (256, 64) and bank.dtype == np.float32


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_peak_lies_in_its_band(config):
  # Worst measured: 28 Hz outside (mel, 64 bands: the 28 Hz-wide bands near DC are narrower than the
  # filter's resolution and peak at 0 Hz). A one-band shift of the linear bank would be 125 Hz off.
  edges, freqs, mags = _bank_response(*config)
  peaks = freqs[np.argmax(mags, axis=0)]
  tolerance = FS / config[1]  # One DFT bin of the kernel, 62.5 Hz at 256 taps.
  assert np.all(peaks >= edges[:, 0] - tolerance)
  assert np.all(peaks <= edges[:, 1] + tolerance)
  # Non-decreasing: several unresolved low mel bands all peak at DC.
  assert np.all(np.diff(peaks) >= 0)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_gain_is_about_unity_at_band_centre_and_nowhere_much_above(config):
  # Worst measured centre gain -1.28 dB (speech, 83 Hz low-pass scaled fir1-style at DC);
  # band-passes
  # are exactly 0 dB at their centre. Worst peak +1.31 dB (narrow low mel bands, scaled at the
  # centre).
  edges, freqs, mags = _bank_response(*config)
  for k, (low, high) in enumerate(edges):
    centre_db = _db(np.interp((low + high) / 2, freqs, mags[:, k]))
    assert abs(centre_db) < 1.5, (k, low, high, centre_db)
  assert _db(mags.max()) < 2.0


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_stop_band_beyond_two_transition_widths(config):
  # Worst measured: -41.1 dB (mel, 64 bands: bands narrower than the Hamming main lobe show the
  # window's
  # own -43 dB sidelobes); -55.1 dB for the linear banks, -46.1 dB for speech.
  edges, freqs, mags = _bank_response(*config)
  bound = -50.0 if config[0] == "linear" else -35.0
  margin = 2 * _transition_hz(config[1])
  for k, (low, high) in enumerate(edges):
    far = (freqs < low - margin) | (freqs > high + margin)
    if far.any():
      assert _db(mags[far, k].max()) < bound, (k, low, high)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_centroids_ascend(config):
  _, freqs, mags = _bank_response(*config)
  power = mags**2
  centroids = (freqs[:, None] * power).sum(0) / power.sum(0)
  assert np.all(np.diff(centroids) > 0)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_bank_covers_its_range_without_holes(config):
  # Summed power: about -3 dB where two bands cross, -6 dB at a top edge below Nyquist (one filter
  # at its
  # cutoff). Worst measured: -3.07 dB over 0-Nyquist, -6.02 dB over 0-7600 Hz.
  edges, freqs, mags = _bank_response(*config)
  in_range = (freqs >= edges[0, 0]) & (freqs <= edges[-1, 1])
  cover_db = 10 * np.log10((mags[in_range]**2).sum(axis=1))
  assert cover_db.min() > (-3.5 if edges[-1, 1] == NYQUIST else -6.5)


@pytest.mark.parametrize("kernel_size", [256, 255, 64])
@pytest.mark.parametrize("num_filters", [64, 8])
def test_edge_bands_reach_dc_and_nyquist(kernel_size, num_filters):
  # A type II (even-length symmetric) high-pass would have |H(Nyquist)| = 0.
  bank = filters.fir_filterbank(num_filters, kernel_size, FS)
  _, low = signal.freqz(bank[:, 0], worN=[0.0], fs=FS)
  _, top = signal.freqz(bank[:, -1], worN=[NYQUIST], fs=FS)
  np.testing.assert_allclose(np.abs(low), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.abs(top), 1.0, atol=1e-5)
  _, top_near = signal.freqz(bank[:, -1], worN=[NYQUIST - 30.0], fs=FS)
  assert abs(_db(top_near[0])) < 1.0


def test_even_top_band_is_an_antisymmetric_mirror_of_the_low_pass():
  bank = filters.fir_filterbank(64, 256, FS)
  top = bank[:, -1]
  np.testing.assert_allclose(top, -top[::-1], atol=1e-7)  # Type IV: same (K-1)/2 delay as the rest.
  _, low = signal.freqz(bank[:, 0], worN=GRID, include_nyquist=True, fs=FS)
  _, high = signal.freqz(top, worN=GRID, include_nyquist=True, fs=FS)
  np.testing.assert_allclose(np.abs(high), np.abs(low)[::-1], atol=1e-6)


def test_odd_top_band_is_firwins_high_pass():
  top = filters.fir_filterbank(8, 255, FS)[:, -1]
  expected = signal.firwin(255, 7000.0, pass_zero=False, fs=FS)
  sign = np.sign(top[127] * expected[127])
  np.testing.assert_allclose(top, sign * expected, atol=1e-7)


def test_reproduces_the_paper_codes_bank():
  # myFilterForTest.m: fir1(255, [lo, lo + 0.95/64]) for lo = 0.0001 : 0.95/64 : 0.95 (Nyquist = 1).
  bank = filters.fir_filterbank(64, 256, FS, low_hz=0.8, high_hz=7600.8)
  for k in range(64):
    lo = 0.0001 + k * 0.95 / 64
    expected = signal.firwin(256, [lo, lo + 0.95 / 64], pass_zero=False, window="hamming", fs=2.0)
    np.testing.assert_allclose(bank[:, k], expected, atol=1e-6)


def test_single_full_band_filter_is_an_impulse():
  bank = filters.fir_filterbank(1, 256, FS)
  expected = np.zeros((256, 1), np.float32)
  expected[127, 0] = 1.0
  np.testing.assert_array_equal(bank, expected)


# Initialisers
# -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(256, 64), (256, 1, 64), (255, 8)])
def test_fir_init_returns_the_bank(shape):
  init = filters.fir_init("mel", high_hz=7600.0)
  kernel = init(jax.random.key(0), shape)
  assert kernel.shape == shape and kernel.dtype == jnp.float32
  expected = filters.fir_filterbank(shape[-1], shape[0], FS, "mel", high_hz=7600.0)
  np.testing.assert_array_equal(np.asarray(kernel).reshape(expected.shape), expected)


@pytest.mark.parametrize("make_init", [filters.fir_init, filters.sine_init])
@pytest.mark.parametrize("shape", [(256,), (256, 2, 64), (1, 256, 1, 64)])
def test_init_rejects_non_1d_conv_shapes(make_init, shape):
  with pytest.raises(ConfigError, match="kernel shape"):
    make_init()(jax.random.key(0), shape)


def test_fir_init_checks_its_arguments_up_front():
  with pytest.raises(ConfigError, match="scale"):
    filters.fir_init("log")
  with pytest.raises(ConfigError, match="high_hz"):
    filters.fir_init(high_hz=9000.0)


def test_fir_init_in_a_flax_conv():
  conv = nn.Conv(features=64, kernel_size=(256,), padding="SAME", kernel_init=filters.fir_init())
  params = conv.init(jax.random.key(0), jnp.zeros((1, 640, 1)))
  kernel = params["params"]["kernel"]
  assert kernel.shape == (256, 1, 64)
  np.testing.assert_array_equal(kernel[:, 0, :], filters.fir_filterbank(64, 256, FS))


def test_sine_init_values():
  kernel = np.asarray(filters.sine_init()(jax.random.key(0), (256, 1, 64)))[:, 0, :]
  # Tap n of filter k is sin(2 pi 150 k (n - 127.5) / 16000) / 256.
  assert kernel[255, 1] == pytest.approx(math.sin(2 * math.pi * 150 * 127.5 / 16000) / 256,
                                         rel=1e-6)
  assert kernel[0, 10] == pytest.approx(math.sin(-2 * math.pi * 1500 * 127.5 / 16000) / 256,
                                        rel=1e-6)
  np.testing.assert_allclose(kernel[:, 1:], -kernel[::-1, 1:], atol=1e-7)  # Odd about the centre.
  impulse = np.zeros(256, np.float32)
  impulse[127] = 1.0
  np.testing.assert_array_equal(kernel[:, 0], impulse)


def test_sine_init_faithful_to_original():
  kernel = np.asarray(filters.sine_init(faithful_to_original=True)(jax.random.key(0), (256, 8)))
  # sineInit: t = linspace(-K/2, K/2, K) / fs; the impulse at tap 0.
  assert kernel[255, 1] == pytest.approx(math.sin(2 * math.pi * 150 * 128 / 16000) / 256, rel=1e-6)
  assert kernel[0, 0] == 1.0 and not kernel[1:, 0].any()


def test_sine_init_impulse_is_the_identity_under_same_padding():
  for kernel_size in (256, 255):
    conv = nn.Conv(features=4, kernel_size=(kernel_size,), padding="SAME", use_bias=False,
                   kernel_init=filters.sine_init())
    x = jax.random.normal(jax.random.key(1), (1, 640, 1))
    y, _ = conv.init_with_output(jax.random.key(0), x)
    np.testing.assert_allclose(y[0, :, 0], x[0, :, 0], atol=1e-6)
