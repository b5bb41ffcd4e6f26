"""Tests of `wavejax.models.layers.conv_general_dilated` (short 1-D convolutions as a matmul)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from wavejax.models import layers

# Compared with numpy or float32 references: float32 products on every backend.
pytestmark = pytest.mark.float32

NWC = ("NWC", "WIO", "NWC")


def numpy_conv(x, kernel, stride, before, after):
  """out[b, t, o] = sum_{j, c} xpad[b, t * stride + j, c] kernel[j, c, o], in float64."""
  x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
  x = np.pad(x, ((0, 0), (max(before, 0), max(after, 0)), (0, 0)))
  x = x[:, max(-before, 0):x.shape[1] - max(-after, 0)]
  taps = kernel.shape[0]
  steps = (x.shape[1] - taps) // stride + 1
  return np.stack([np.einsum("bjc,jco->bo", x[:, t * stride:t * stride + taps], kernel)
                   for t in range(steps)], axis=1)


# (batch, length, channels, features, taps, stride, padding): padding longer than the input
# (WaveRNN's deep layers), a kernel longer than the input at stride 2 (SoundNet's last layer), a
# few steps at stride 2, VALID, explicit and negative padding; the last one is too large for the
# patch matrix and takes lax's path.
CASES = [
    (3, 20, 4, 5, 40, 1, "SAME"),
    (3, 3, 8, 6, 8, 2, "SAME"),
    (3, 6, 8, 16, 4, 2, "SAME"),
    (2, 7, 3, 4, 3, 1, "VALID"),
    (2, 9, 3, 4, 5, 2, ((1, -1),)),
    (2, 9, 3, 4, 5, 3, ((-2, 4),)),
    (4096, 80, 3, 4, 5, 1, "SAME"),
]


def _inputs(batch, length, channels, features, taps, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((batch, length, channels)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((taps, channels, features)) / np.sqrt(taps * channels),
                       jnp.float32)
  return x, kernel


def _ours(x, kernel, stride, padding):
  numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, NWC)
  return layers.conv_general_dilated(x, kernel, (stride,), padding, lhs_dilation=(1,),
                                     rhs_dilation=(1,), dimension_numbers=numbers)


@pytest.mark.parametrize("case", CASES)
def test_matches_numpy_and_lax(case):
  batch, length, channels, features, taps, stride, padding = case
  x, kernel = _inputs(batch, length, channels, features, taps)
  pads = (lax.padtype_to_pads((length,), (taps,), (stride,), padding)
          if isinstance(padding, str) else padding)
  expected = numpy_conv(x, kernel, stride, *pads[0])
  got = _ours(x, kernel, stride, padding)
  assert got.shape == expected.shape and got.dtype == jnp.float32
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  reference = lax.conv_general_dilated(x, kernel, (stride,), padding, dimension_numbers=NWC)
  np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES[:3])
def test_gradients_match_lax(case):
  batch, length, channels, features, taps, stride, padding = case
  x, kernel = _inputs(batch, length, channels, features, taps)
  weights = jnp.cos(jnp.arange(features, dtype=jnp.float32))
  loss = lambda conv: lambda x, k: jnp.sum(jnp.tanh(conv(x, k)) * weights)
  ours = jax.grad(loss(lambda x, k: _ours(x, k, stride, padding)), (0, 1))(x, kernel)
  plain = jax.grad(loss(lambda x, k: lax.conv_general_dilated(
      x, k, (stride,), padding, dimension_numbers=NWC)), (0, 1))(x, kernel)
  for got, want in zip(ours, plain):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_short_inputs_become_one_matmul_and_long_ones_stay_convolutions(monkeypatch):
  """The rule is the CPU's (its backend named explicitly, so the test holds on any machine);
  GPUs and TPUs keep their vendor convolution for every shape."""
  def primitives(length, taps):
    x, kernel = _inputs(64, length, 32, 32, taps)
    jaxpr = jax.make_jaxpr(lambda x, k: _ours(x, k, 1, "SAME"))(x, kernel)
    return {eqn.primitive.name for eqn in jaxpr.eqns}
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
  assert "dot_general" in primitives(20, 40) and "conv_general_dilated" not in primitives(20, 40)
  assert "conv_general_dilated" in primitives(640, 40)
  for backend in ("gpu", "tpu"):
    monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
    assert "conv_general_dilated" in primitives(20, 40) and "dot_general" not in primitives(20, 40)


def test_flax_conv_keeps_its_parameters_and_outputs():
  x, _ = _inputs(2, 6, 8, 1, 1)
  plain = nn.Conv(16, (4,), strides=(2,), padding="SAME")
  ours = nn.Conv(16, (4,), strides=(2,), padding="SAME",
                 conv_general_dilated=layers.conv_general_dilated)
  params = plain.init(jax.random.key(0), x)
  assert jax.tree.structure(ours.init(jax.random.key(0), x)) == jax.tree.structure(params)
  np.testing.assert_allclose(ours.apply(params, x), plain.apply(params, x), rtol=1e-5, atol=1e-6)


def test_bfloat16_products_come_back_in_bfloat16():
  x, kernel = _inputs(2, 6, 8, 16, 4)
  got = _ours(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), 2, "SAME")
  reference = lax.conv_general_dilated(x, kernel, (2,), "SAME", dimension_numbers=NWC)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(got.astype(jnp.float32), reference, rtol=0.05, atol=0.05)
