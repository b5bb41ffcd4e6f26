"""SimpleNet front-end against a numpy reference, and the SimpleNet-CNN model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import configs.simplenet_cnn as simplenet_cnn_config
from helpers import frontend
from wavejax import errors
from wavejax.models import create_model, filters
from wavejax.models.frontends import SimpleNetFrontend, WaveRNNFrontend

# Compared with numpy or float32 references: float32 products on every backend.
pytestmark = pytest.mark.float32


def reference_frontend(waveforms, kernel, bias, window, padding, activation="none"):
  """Loops over windows with np.correlate: per-window 'same' padding or whole-signal filtering."""
  taps = kernel.shape[0]
  before, after = (taps - 1) // 2, taps - 1 - (taps - 1) // 2
  batch, samples = waveforms.shape
  num_windows = samples // window
  out = np.zeros((batch, num_windows, kernel.shape[1]))
  for b in range(batch):
    signal_padded = np.pad(waveforms[b, :num_windows * window], (before, after))
    for w in range(num_windows):
      if padding == "window":
        frame = np.pad(waveforms[b, w * window:(w + 1) * window], (before, after))
      else:
        frame = signal_padded[w * window:w * window + window + taps - 1]
      for f in range(kernel.shape[1]):
        y = np.correlate(frame, kernel[:, f], mode="valid") + bias[f]
        if activation == "relu":
          y = np.maximum(y, 0)
        out[b, w, f] = np.abs(y).mean()
  return out


@pytest.mark.parametrize("padding", ["window", "signal"])
@pytest.mark.parametrize("activation", ["none", "relu"])
def test_frontend_matches_numpy_reference(padding, activation):
  rng = np.random.default_rng(0)
  waveforms = rng.uniform(-1, 1, (2, 1000)).astype(np.float32)  # 6 windows of 160, tail cut
  module = frontend(SimpleNetFrontend, compression="none", num_filters=5, kernel_size=32,
                    window_ms=10.0, sample_rate=16000,
                             padding=padding, activation=activation)
  params = module.init(jax.random.key(0), waveforms)["params"]
  params = {"kernel": jnp.asarray(rng.normal(size=(32, 5)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=5) * 0.1, jnp.float32)}
  out = jax.jit(module.apply)({"params": params}, waveforms)
  assert out.shape == (2, 6, 5)
  expected = reference_frontend(waveforms, np.asarray(params["kernel"]),
                                np.asarray(params["bias"]), 160, padding, activation)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_frontend_paper_shape_and_fir_init():
  module = frontend(SimpleNetFrontend, compression="none")
  waveforms = jnp.zeros((1, 96000))
  params = module.init(jax.random.key(0), waveforms)["params"]
  np.testing.assert_array_equal(params["kernel"], filters.fir_filterbank(64, 256, 16000))
  assert module.apply({"params": params}, waveforms).shape == (1, 150, 64)


def test_frontend_output_is_a_band_energy():
  """A tone inside band k gives the largest energy in filter k (the 'learned spectrogram')."""
  rate, freq = 16000, 1000.0 + 62.5  # centre of band 8 of 64 x 125 Hz
  t = np.arange(rate) / rate
  tone = np.sin(2 * np.pi * freq * t)[None].astype(np.float32)
  module = frontend(SimpleNetFrontend, compression="none", padding="signal")
  params = module.init(jax.random.key(0), tone)["params"]
  energy = np.asarray(module.apply({"params": params}, tone))[0]
  assert np.all(energy.argmax(axis=1) == 8)
  # unit-gain band-pass: mean |sin| = 2 / pi
  np.testing.assert_allclose(energy[2:-2, 8], 2 / np.pi, rtol=0.02)


def test_frozen_frontend_gets_no_gradient():
  module = frontend(SimpleNetFrontend, compression="none", num_filters=4, kernel_size=16,
                    window_ms=2.0, trainable=False)
  x = jnp.ones((1, 320))
  params = module.init(jax.random.key(0), x)["params"]
  grads = jax.grad(lambda p: module.apply({"params": p}, x).sum())(params)
  assert float(jnp.abs(grads["kernel"]).max()) == 0.0


def test_simplenet_cnn_shapes_params_and_gradient():
  config = simplenet_cnn_config.get_config()
  model = create_model(config.model, num_classes=4)
  x = jnp.asarray(np.random.default_rng(1).uniform(-0.5, 0.5, (2, 96000)), jnp.float32)
  variables = model.init(jax.random.key(0), x)
  logits = model.apply(variables, x)
  assert logits.shape == (2, 4)
  counts = {name: sum(int(np.prod(v.shape)) for v in jax.tree.leaves(tree))
            for name, tree in variables["params"].items()}
  # front-end 256*64 + 64; four 2x2 convs (1->32, then 32->32); dense 10*4*32 -> 64 -> 4;
  # batch norm (scale, bias) over the 64 filters, then before each later conv over 32 channels.
  conv = (2 * 2 * 1 * 32 + 32) + 3 * (2 * 2 * 32 * 32 + 32)
  dense = (10 * 4 * 32 * 64 + 64) + (64 * 4 + 4)
  norm = 2 * 64 + 3 * 2 * 32
  assert counts["frontend"] == 256 * 64 + 64
  assert counts["head"] == conv + dense + norm
  stats = variables["batch_stats"]
  grads = jax.grad(lambda p: model.apply({"params": p, "batch_stats": stats}, x).sum())(
      variables["params"])
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert float(jnp.abs(grads["frontend"]["kernel"]).max()) > 0


def test_unknown_model_and_bad_options():
  config = simplenet_cnn_config.get_config()
  config.model.name = "nope"
  with pytest.raises(errors.ConfigError, match="config.model.name"):
    create_model(config.model, num_classes=4)
  with pytest.raises(errors.ConfigError, match="padding"):
    module = frontend(SimpleNetFrontend, compression="none", padding="zero")
    module.init(jax.random.key(0), jnp.zeros((1, 1280)))


@pytest.mark.parametrize("cls, window_ms", [(SimpleNetFrontend, 0.0), (SimpleNetFrontend, 0.01),
                                            (WaveRNNFrontend, 0.0)])
def test_window_of_no_samples_is_a_config_error(cls, window_ms):
  """0 ms, or less than half a sample at 16 kHz: a one-line error, not a ZeroDivisionError."""
  module = frontend(cls, window_ms=window_ms)
  with pytest.raises(errors.ConfigError, match="config.model.frontend.window_ms") as raised:
    module.init(jax.random.key(0), jnp.zeros((1, 1600)))
  assert "\n" not in str(raised.value)


def test_kernel_longer_than_the_window_warns_once(caplog):
  """Legal but odd with per-window padding: the kernel mostly sees zeros. One warning, no error."""
  module = frontend(SimpleNetFrontend, compression="none", num_filters=3, kernel_size=200,
                    window_ms=10.0)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 1600)), jnp.float32)
  with caplog.at_level("WARNING"):
    params = module.init(jax.random.key(0), x)["params"]
    out = module.apply({"params": params}, x)
    jax.jit(module.apply)({"params": params}, x)
  assert out.shape == (1, 10, 3) and bool(jnp.all(jnp.isfinite(out)))
  warnings = [r.getMessage() for r in caplog.records if "kernel_size" in r.getMessage()]
  assert len(warnings) == 1
  assert "config.model.frontend.kernel_size=200" in warnings[0] and "160 samples" in warnings[0]
  caplog.clear()
  signal = frontend(SimpleNetFrontend, compression="none", num_filters=3, kernel_size=200,
                    window_ms=10.0, padding="signal")
  with caplog.at_level("WARNING"):
    signal.init(jax.random.key(0), x)
  assert not [r for r in caplog.records if "kernel_size" in r.getMessage()]
