"""Every model of the zoo: output shapes, exact parameter counts, gradients, one epoch of training.

Parameter counts are computed by hand from each architecture (paper Sec. 4.1;
docs/reference.md#the-papers-code-and-where-it-departs-from-the-text), for a 6 s clip at 16 kHz
(150 windows of 40 ms) and a short one (0.5 s, 12 windows).
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import TINY, frontend
from wavejax import config as wavejax_config
from wavejax import errors, training
from wavejax.models import MODELS, create_model, filters, frontends, leaf, sincnet

# Compared with numpy or float32 references: float32 products on every backend.
pytestmark = pytest.mark.float32

RATE = 16000
LONG, SHORT = 6 * RATE, RATE // 2
CLASSES = 4


def model_config(name, **overrides):
  config = importlib.import_module(f"configs.{name}").get_config()
  for dotted, value in overrides.items():
    wavejax_config.set_field(config, dotted, value)
  return config


def init(model, samples, batch=2, seed=0):
  x = jnp.asarray(np.random.default_rng(seed).uniform(-0.5, 0.5, (batch, samples)), jnp.float32)
  return jax.jit(model.init)(jax.random.key(0), x), x


def count(tree):
  return sum(int(np.prod(leaf_.shape)) for leaf_ in jax.tree.leaves(tree))


def ceil_div(a, b):
  return -(-a // b)


# ---- parameter counts by hand ----------------------------------------------------------------


def cnn_head_params(windows, filters_, kernel=(2, 2), hidden=(64,), norm="batch"):
  """Norm before each conv, 4 convs of 32 (1 -> 32 -> 32...), 2x2 'same' pools, dense layers."""
  conv = (kernel[0] * kernel[1] * 1 * 32 + 32) + 3 * (kernel[0] * kernel[1] * 32 * 32 + 32)
  norm_params = {"batch": 2 * filters_ + 3 * 2 * 32, "affine": 2 + 3 * 2 * 32, "none": 0}[norm]
  for _ in range(4):
    windows, filters_ = ceil_div(windows, 2), ceil_div(filters_, 2)
  return conv + norm_params + dense_params(windows * filters_ * 32, hidden)


def dense_params(inputs, hidden):
  total = 0
  for units in hidden:
    total += inputs * units + units
    inputs = units
  return total + inputs * CLASSES + CLASSES


def lstm_params(inputs, units):
  """4 gates: input kernel (no bias) + recurrent kernel with bias."""
  return 4 * units * (inputs + units + 1)


def lstm_head_params(features, hidden=(64,), norm="batch"):
  norm_params = {"batch": 2 * features, "affine": 2 * features, "none": 0}[norm]
  return norm_params + lstm_params(features, 64) + lstm_params(64, 64) + dense_params(64, hidden)


SIMPLENET_FRONTEND = 256 * 64 + 64


def soundnet_params(samples):
  features = (16, 32, 64, 128, 256, 512, 1024, 1401)
  kernels = (64, 32, 16, 8, 4, 4, 4, 8)
  pools = (8, 8, 1, 1, 4, 1, 1, 1)
  inputs, convs, steps = 1, 0, samples
  for out, kernel, pool in zip(features, kernels, pools):
    convs += kernel * inputs * out + 2 * out  # no conv bias; batch-norm scale and offset
    inputs = out
    steps = ceil_div(ceil_div(steps, 2), pool)
  return convs + dense_params(steps * 1401, (64,))


def expected_params(name, samples):
  windows = samples // 640
  wavernn = (40 * 1 * 32 + 32) + 7 * (40 * 32 * 32 + 32)
  trigeorgis = (20 * 1 * 40 + 40) + (40 * 40 * 40 + 40)
  return {
      "simplenet_cnn": SIMPLENET_FRONTEND + cnn_head_params(windows, 64),
      "specnet": SIMPLENET_FRONTEND + cnn_head_params(windows, 64),
      "simplenet_rnn": SIMPLENET_FRONTEND + lstm_head_params(64),
      "wavernn": wavernn + lstm_head_params(2 * 32),  # 640 -> 2 after 8 pools, x 32 filters
      "wavernn_trigeorgis": trigeorgis + lstm_head_params(320 * 4),  # 320 steps x 40 / 10
      "soundnet": soundnet_params(samples),
      "sincnet": 2 * 64 + cnn_head_params(windows, 64),  # low cut-off and band width
      "leaf": 7 * 64 + cnn_head_params(windows, 64),  # centre, width, pool width, 4 x PCEN
  }[name]


# ---- every model -----------------------------------------------------------------------------


def abstract_init(model, samples, batch=2):
  """Shapes of the variables and of the logits, by tracing only (no compilation, no compute)."""
  x = jax.ShapeDtypeStruct((batch, samples), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  return variables, jax.eval_shape(model.apply, variables, x)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shapes_and_parameter_counts(name):
  model = create_model(model_config(name).model, num_classes=CLASSES)
  for samples in (LONG, SHORT):
    variables, logits = abstract_init(model, samples)
    assert logits.shape == (2, CLASSES)
    assert count(variables["params"]) == expected_params(name, samples), (name, samples)


def ce_grads(model, variables, x):
  labels = jnp.arange(x.shape[0]) % CLASSES

  def loss(params):
    logits, _ = model.apply({**variables, "params": params}, x, train=True,
                            rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  return jax.jit(jax.grad(loss))(variables["params"])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_parameter_gets_a_finite_nonzero_gradient(name):
  model = create_model(model_config(name).model, num_classes=CLASSES)
  variables, x = init(model, SHORT, batch=4)
  logits = jax.jit(model.apply)(variables, x)
  assert logits.shape == (4, CLASSES) and bool(jnp.all(jnp.isfinite(logits)))
  grads = ce_grads(model, variables, x)
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    where = f"{name} {jax.tree_util.keystr(path)}"
    assert bool(jnp.all(jnp.isfinite(grad))), where
    largest = float(jnp.abs(grad).max())
    frozen = name == "specnet" and path[0].key == "frontend"
    assert (largest == 0.0) if frozen else (largest > 0.0), where


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_one_epoch_of_train_fold(name, cache_dir):
  overrides = {**TINY, "data.cache_dir": str(cache_dir), "data.builtin.clip_seconds": 0.5,
               "train.num_epochs": 1, "train.checkpoint": False}
  result = training.train_fold(model_config(name, **overrides), fold=1)
  assert result.model == name and len(result.history) == 1
  assert np.isfinite(result.history[0]["train_loss"])
  assert 0.0 <= result.test["wa"] <= 1.0


# ---- model-specific behaviour ----------------------------------------------------------------


def test_specnet_is_simplenet_cnn_with_frozen_filters():
  cnn = create_model(model_config("simplenet_cnn").model, num_classes=CLASSES)
  spec = create_model(model_config("specnet").model, num_classes=CLASSES)
  cnn_vars, x = init(cnn, SHORT, batch=4)
  spec_vars, _ = init(spec, SHORT, batch=4)
  # Same initial parameters (the FIR bank, and the head from the same key), same structure.
  jax.tree.map(np.testing.assert_array_equal, cnn_vars, spec_vars)
  np.testing.assert_array_equal(spec_vars["params"]["frontend"]["kernel"],
                                filters.fir_filterbank(64, 256, RATE))
  np.testing.assert_allclose(spec.apply(spec_vars, x), cnn.apply(cnn_vars, x), rtol=1e-6)
  cnn_grads, spec_grads = ce_grads(cnn, cnn_vars, x), ce_grads(spec, spec_vars, x)
  assert float(jnp.abs(spec_grads["frontend"]["kernel"]).max()) == 0.0
  assert float(jnp.abs(cnn_grads["frontend"]["kernel"]).max()) > 0.0
  # The same head gradients, up to float rounding (XLA fuses the two programs differently).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-4),
               cnn_grads["head"], spec_grads["head"])
  with pytest.raises(errors.ConfigError, match="trainable"):
    create_model(model_config("specnet", **{"model.frontend.trainable": True}).model, CLASSES)


def test_lstm_scan_over_filters_uses_time_frames_as_features():
  config = model_config("simplenet_rnn", **{"model.head.scan_over": "filters"})
  model = create_model(config.model, num_classes=CLASSES)
  variables, x = init(model, SHORT)
  windows = SHORT // 640
  assert model.apply(variables, x).shape == (2, CLASSES)
  assert count(variables["params"]) == SIMPLENET_FRONTEND + lstm_head_params(windows)
  with pytest.raises(errors.ConfigError, match="scan_over"):
    bad = model_config("simplenet_rnn", **{"model.head.scan_over": "channels"})
    init(create_model(bad.model, CLASSES), SHORT)


@pytest.mark.parametrize("name", ["simplenet_cnn", "simplenet_rnn", "specnet"])
def test_faithful_model_overrides_build_the_original_code(name):
  overrides = wavejax_config.models.faithful_model_overrides(name)
  assert overrides["model.head.norm"] == "affine"
  config = model_config(name, **overrides)
  model = create_model(config.model, num_classes=CLASSES)
  variables, logits = abstract_init(model, LONG)
  assert "batch_stats" not in variables  # inference-mode BN: no statistics, an affine map
  assert logits.shape == (2, CLASSES)
  frontend = SIMPLENET_FRONTEND + 2  # + the waveform's scale and offset
  if name == "simplenet_rnn":
    # scans the 64 filters, each step's features the 150 frames; no hidden dense layer
    head = 2 * 150 + lstm_params(150, 64) + lstm_params(64, 64) + dense_params(64, ())
  else:
    head = cnn_head_params(150, 64, kernel=(3, 3), hidden=(64,), norm="affine")
  assert count(variables["params"]) == frontend + head
  short_variables, x = init(model, SHORT)
  assert bool(jnp.all(jnp.isfinite(jax.jit(model.apply)(short_variables, x))))
  assert wavejax_config.models.faithful_model_overrides("leaf") == {}


def test_wavernn_and_soundnet_feature_shapes():
  def features(module, samples):
    x = jax.ShapeDtypeStruct((2, samples), jnp.float32)
    return jax.eval_shape(module.apply, jax.eval_shape(module.init, jax.random.key(0), x), x)

  assert features(frontend(frontends.WaveRNNFrontend), LONG).shape == (2, 150, 64)
  assert features(frontend(frontends.TrigeorgisFrontend), LONG).shape == (2, 150, 1280)
  assert features(frontend(frontends.SoundNetFrontend), LONG).shape == (2, 2, 1401)
  # 'same' padding everywhere: even a clip of 100 samples keeps one step, and computes.
  soundnet = frontend(frontends.SoundNetFrontend)
  tiny = jnp.asarray(np.random.default_rng(0).normal(size=(2, 100)), jnp.float32)
  out = soundnet.apply(soundnet.init(jax.random.key(0), tiny), tiny)
  assert out.shape == (2, 1, 1401) and bool(jnp.all(jnp.isfinite(out)))


def test_too_short_windows_are_config_errors():
  with pytest.raises(errors.ConfigError, match="max-poolings"):
    module = frontend(frontends.WaveRNNFrontend, window_ms=10.0)  # 160 samples < 2^8
    module.init(jax.random.key(0), jnp.zeros((1, 1600)))
  with pytest.raises(errors.ConfigError, match="shorter than one window"):
    module = frontend(leaf.LEAFFrontend)
    module.init(jax.random.key(0), jnp.zeros((1, 600)))


def test_first_convolution_takes_the_fir_initialiser():
  config = model_config("wavernn", **{"model.frontend.init": "fir",
                                      "model.frontend.fir_scale": "mel"})
  variables, _ = init(create_model(config.model, CLASSES), SHORT)
  kernel = variables["params"]["frontend"]["Conv_0"]["kernel"]
  np.testing.assert_array_equal(kernel[:, 0, :], filters.fir_filterbank(32, 40, RATE, "mel"))


def tone(freq, samples=RATE):
  t = np.arange(samples) / RATE
  return jnp.asarray(np.sin(2 * np.pi * freq * t)[None], jnp.float32)


def test_sincnet_filters_start_as_the_mel_bands():
  module = frontend(sincnet.SincNetFrontend, compression="none", padding="signal")
  x = tone(1000.0)
  params = module.init(jax.random.key(0), x)["params"]
  low, high = (np.asarray(f) * RATE for f in module.cutoffs(params["low"], params["band"]))
  edges = filters.band_edges(64, RATE, "mel", 30.0, RATE / 2 - 100)
  # SincNet's parameterisation: f1 = 50 Hz + |low|, f2 = f1 + 50 Hz + |band|, capped at Nyquist.
  np.testing.assert_allclose(low, edges[:, 0] + 50, rtol=1e-5)
  np.testing.assert_allclose(high, np.minimum(edges[:, 1] + 100, RATE / 2), rtol=1e-5)
  band = 40
  x = tone((low[band] + high[band]) / 2)
  energy = np.asarray(module.apply({"params": params}, x))[0]
  assert np.all(energy[2:-2].argmax(axis=1) == band)
  np.testing.assert_allclose(energy[2:-2, band], 2 / np.pi, rtol=0.05)  # unit pass-band gain


def test_leaf_gabor_filters_peak_at_the_mel_centres():
  module = frontend(leaf.LEAFFrontend, compression="none")
  mu, sigma = leaf.gabor_init_params(64, 401, RATE, "mel", 60.0, 7800.0)
  kernel = np.asarray(leaf.gabor_kernel(jnp.asarray(mu), jnp.asarray(sigma), 401))
  response = np.abs(np.fft.fft(kernel[:, :64] + 1j * kernel[:, 64:], n=8192, axis=0))
  peak_hz = response.argmax(axis=0) * RATE / 8192
  np.testing.assert_allclose(peak_hz[8:], mu[8:] * RATE / (2 * np.pi), atol=3.0)
  band = 40
  x = tone(float(mu[band]) * RATE / (2 * np.pi))
  energy = np.asarray(module.apply(module.init(jax.random.key(0), x), x))[0]
  assert energy.shape == (25, 64)
  assert np.all(energy[3:-3].argmax(axis=1) == band)
  pcen = frontend(leaf.LEAFFrontend)
  out = pcen.apply(pcen.init(jax.random.key(0), x), x)
  assert bool(jnp.all(jnp.isfinite(out)))
