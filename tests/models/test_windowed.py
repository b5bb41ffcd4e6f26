"""Tests of `wavejax.models.windowed.filter_energy` against a numpy reference."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wavejax import errors
from wavejax.models import windowed

# Compared with numpy or float32 references: float32 products on every backend.
pytestmark = pytest.mark.float32

METHODS = ("conv", "toeplitz", "winograd", "fft", "auto")
ACTIVATIONS = ("none", "relu")
# (L, K, F): the paper's filter shape on a short window, odd K, K > L, K = 1, L not a multiple of
# the Toeplitz block, a single filter.
SHAPES = [(48, 32, 8), (37, 9, 3), (12, 33, 4), (20, 1, 5), (50, 16, 1)]


def numpy_energy(frames, kernel, bias, activation):
  """out[n, f] = mean_t |act(sum_k frames[n, t + k] kernel[k, f] + bias[f])|, in float64."""
  frames, kernel, bias = (np.asarray(x, np.float64) for x in (frames, kernel, bias))
  num, filters = frames.shape[0], kernel.shape[1]
  out = np.zeros((num, filters))
  for n in range(num):
    for f in range(filters):
      y = np.correlate(frames[n], kernel[:, f], mode="valid") + bias[f]
      if activation == "relu":
        y = np.maximum(y, 0.0)
      out[n, f] = np.abs(y).mean()
  return out


def random_inputs(length, taps, filters, num=6, seed=0):
  rng = np.random.default_rng(seed)
  frames = rng.standard_normal((num, length + taps - 1)).astype(np.float32)
  kernel = (rng.standard_normal((taps, filters)) / np.sqrt(taps)).astype(np.float32)
  bias = (0.3 * rng.standard_normal(filters)).astype(np.float32)
  return jnp.asarray(frames), jnp.asarray(kernel), jnp.asarray(bias)


def weighted_loss(method, activation, **kwargs):
  """A scalar whose gradient has a different cotangent for every window and filter."""
  def loss(frames, kernel, bias):
    energy = windowed.filter_energy(
        frames, kernel, bias, activation=activation, method=method, **kwargs)
    weights = jnp.cos(jnp.arange(energy.size, dtype=jnp.float32)).reshape(energy.shape)
    return jnp.sum(energy * weights)
  return loss


def assert_close(actual, expected, rtol):
  """Elementwise relative error, with an absolute floor at rtol x the largest entry."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  scale = max(np.abs(expected).max(), 1e-30)
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("method", ["conv", "toeplitz", "winograd", "fft"])
def test_matches_numpy(shape, activation, method):
  frames, kernel, bias = random_inputs(*shape)
  out = windowed.filter_energy(frames, kernel, bias, activation=activation, method=method)
  assert out.shape == (frames.shape[0], kernel.shape[1]) and out.dtype == jnp.float32
  assert_close(out, numpy_energy(frames, kernel, bias, activation), rtol=1e-5)


@pytest.mark.parametrize("method", ["toeplitz", "winograd"])
@pytest.mark.parametrize("block_size,chunk_size,activation",
                         [(1, 1, "none"), (4, 2, "relu"), (7, 4, "none"), (64, 5, "relu")])
def test_banded_block_and_chunk_sizes(method, block_size, chunk_size, activation):
  # 7 windows: chunking pads the window count; L = 37 is a multiple of none of the blocks (nor,
  # for "winograd", is its block count a multiple of 4 or the kernel's block count one of 3).
  frames, kernel, bias = random_inputs(37, 9, 3, num=7)
  out = windowed.filter_energy(frames, kernel, bias, activation=activation,
                                    method=method, block_size=block_size,
                                    chunk_size=chunk_size)
  assert_close(out, numpy_energy(frames, kernel, bias, activation), rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("method", ["toeplitz", "winograd"])
def test_banded_gradients_match_conv(shape, activation, method):
  frames, kernel, bias = random_inputs(*shape)
  argnums = (0, 1, 2)
  expected = jax.grad(weighted_loss("conv", activation), argnums)(frames, kernel, bias)
  actual = jax.jit(jax.grad(weighted_loss(method, activation, chunk_size=4), argnums))(
      frames, kernel, bias)
  for got, want in zip(actual, expected):
    assert got.shape == want.shape and got.dtype == want.dtype
    assert_close(got, want, rtol=1e-5)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("method", ["toeplitz", "winograd"])
def test_silent_windows_with_zero_bias(activation, method):
  # Zero-padded audio and the zero-initialised bias give outputs that are exactly 0: the
  # derivative there must follow autodiff's (`jnp.abs`: +1, `jax.nn.relu`: 0).
  frames, kernel, _ = random_inputs(24, 7, 4)
  frames = frames.at[1].set(0.0).at[3, 5:].set(0.0)
  bias = jnp.zeros(4)
  expected = jax.grad(weighted_loss("conv", activation), (0, 1, 2))(frames, kernel, bias)
  actual = jax.grad(weighted_loss(method, activation), (0, 1, 2))(frames, kernel, bias)
  for got, want in zip(actual, expected):
    assert_close(got, want, rtol=1e-5)


@pytest.mark.parametrize("argnums", [(1,), (2,), (0,), (1, 2), (0, 2)])
@pytest.mark.parametrize("method", ["toeplitz", "winograd"])
def test_banded_partial_gradients(argnums, method):
  # Only the requested cotangents are computed (symbolic zeros); each must still be right.
  frames, kernel, bias = random_inputs(37, 9, 3)
  expected = jax.grad(weighted_loss("conv", "relu"), argnums)(frames, kernel, bias)
  actual = jax.jit(jax.grad(weighted_loss(method, "relu", block_size=8), argnums))(
      frames, kernel, bias)
  for got, want in zip(actual, expected):
    assert_close(got, want, rtol=1e-5)


@pytest.mark.parametrize("block_size,activation",
                         [(64, "none"), (48, "relu"), (37, "none"), (7, "relu"), (1, "none")])
def test_banded_gradients_for_every_sign_packing(block_size, activation):
  # The backward reads d|act(y)|/dy from bits packed per block of P outputs: 64 = two full
  # 32-bit words, 48 = two words of 24, 37 (prime) = 37 words of one bit, 7 = one word of 7.
  # L = 75 is a multiple of none of them, so padded outputs are masked in the last block.
  frames, kernel, bias = random_inputs(75, 9, 3, num=5)
  frames = frames.at[2].set(0.0)  # exact zeros: +1 (abs) / 0 (relu) as autodiff's
  argnums = (0, 1, 2)
  expected = jax.grad(weighted_loss("conv", activation), argnums)(frames, kernel, bias)
  actual = jax.jit(jax.grad(weighted_loss("toeplitz", activation, block_size=block_size,
                                          chunk_size=2), argnums))(frames, kernel, bias)
  for got, want in zip(actual, expected):
    assert_close(got, want, rtol=1e-5)


def test_sign_bits_pack_whole_words():
  assert [windowed.toeplitz._bits_per_word(p) for p in (1, 7, 16, 32, 37, 48, 64, 128)] == [
      1, 7, 16, 32, 1, 24, 32, 32]


def test_numpy_reference_gradient_by_finite_differences():
  # Anchors the "conv" reference gradient itself to the numpy definition.
  frames, kernel, bias = random_inputs(16, 5, 2, num=2)
  grad = jax.grad(weighted_loss("conv", "none"), 1)(frames, kernel, bias)
  weights = np.cos(np.arange(4)).reshape(2, 2)
  eps = 1e-3
  for index in [(0, 0), (3, 1)]:
    step = np.zeros(kernel.shape, np.float32)
    step[index] = eps
    up = numpy_energy(frames, kernel + step, bias, "none")
    down = numpy_energy(frames, kernel - step, bias, "none")
    numeric = np.sum((up - down) * weights) / (2 * eps)
    np.testing.assert_allclose(grad[index], numeric, rtol=1e-3)


@pytest.mark.parametrize("method", METHODS)
def test_jit_and_vmap(method):
  frames, kernel, bias = random_inputs(24, 7, 4, num=5)
  batched = jnp.stack([frames, 2.0 * frames, -frames])
  fn = lambda f, k, b: windowed.filter_energy(f, k, b, method=method)
  out = jax.jit(jax.vmap(fn, in_axes=(0, None, None)))(batched, kernel, bias)
  for i in range(3):
    assert_close(out[i], numpy_energy(batched[i], kernel, bias, "none"), rtol=1e-5)
  kernels = jnp.stack([kernel, kernel[::-1]])
  out = jax.vmap(fn, in_axes=(None, 0, None))(frames, kernels, bias)
  assert_close(out[1], numpy_energy(frames, kernel[::-1], bias, "none"), rtol=1e-5)
  grads = jax.vmap(jax.grad(weighted_loss(method, "relu"), 1), in_axes=(0, None, None))(
      batched, kernel, bias)
  expected = jax.grad(weighted_loss("conv", "relu"), 1)(batched[1], kernel, bias)
  assert_close(grads[1], expected, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_bfloat16_inputs(method):
  frames, kernel, bias = random_inputs(48, 32, 8)
  frames16, kernel16 = frames.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
  out = jax.jit(lambda f, k, b: windowed.filter_energy(f, k, b, method=method))(
      frames16, kernel16, bias)
  assert out.dtype == jnp.float32
  assert_close(out, numpy_energy(frames, kernel, bias, "none"), rtol=2e-2)
  grads = jax.grad(weighted_loss(method, "none"), (0, 1, 2))(frames16, kernel16, bias)
  expected = jax.grad(weighted_loss("conv", "none"), (0, 1, 2))(frames, kernel, bias)
  for got, want, like in zip(grads, expected, (frames16, kernel16, bias)):
    # Outputs near zero can change sign under bfloat16 rounding, flipping d|y|/dy there: compare
    # whole gradients, not elements.
    assert got.dtype == like.dtype
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert np.linalg.norm(got - want) <= 6e-2 * np.linalg.norm(want)


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="karatsuba"), "method"),
    (dict(activation="tanh"), "activation"),
    (dict(block_size=0, method="toeplitz"), "block_size"),
    (dict(chunk_size=2.5), "chunk_size"),
])
def test_bad_options_raise_config_error(kwargs, match):
  frames, kernel, bias = random_inputs(16, 5, 2)
  with pytest.raises(errors.ConfigError, match=match) as info:
    windowed.filter_energy(frames, kernel, bias, **kwargs)
  assert "\n" not in str(info.value)


@pytest.mark.parametrize("frames_shape,kernel_shape,bias_shape", [
    ((4, 20), (5, 3), (4,)),     # bias does not match the filters
    ((20,), (5, 3), (3,)),       # frames without a window axis
    ((4, 20), (5,), (3,)),       # kernel without a filter axis
    ((4, 4), (5, 3), (3,)),      # frames shorter than the kernel: L < 1
    ((4, 20), (0, 3), (3,)),     # no taps
])
def test_bad_shapes_raise_config_error(frames_shape, kernel_shape, bias_shape):
  args = [jnp.zeros(s, jnp.float32) for s in (frames_shape, kernel_shape, bias_shape)]
  with pytest.raises(errors.ConfigError) as info:
    windowed.filter_energy(*args)
  assert "\n" not in str(info.value)


@pytest.mark.parametrize("method", METHODS)
def test_no_windows(method):
  frames, kernel, bias = random_inputs(16, 5, 2, num=0)
  out = windowed.filter_energy(frames, kernel, bias, method=method)
  assert out.shape == (0, 2)


def test_integer_frames_raise_config_error():
  with pytest.raises(errors.ConfigError, match="floating"):
    windowed.filter_energy(jnp.zeros((2, 20), jnp.int32), jnp.zeros((5, 3)), jnp.zeros(3))


def test_auto_resolves_to_a_concrete_method():
  assert windowed.resolve_method("conv", 640, 256, 64) == "conv"
  assert windowed.resolve_method("auto", 640, 256, 64) in ("conv", "toeplitz")
  if jax.default_backend() == "cpu":
    assert windowed.resolve_method("auto", 640, 256, 64) == "toeplitz"


def test_winograd_matches_toeplitz_at_the_paper_shape():
  # 150 windows of 640 samples, 64 filters of 256 taps: F(4, 3) over 20 output and 9 weight
  # blocks of 32; the two forwards differ by float32 rounding only, and share one backward.
  frames, kernel, bias = random_inputs(640, 256, 64, num=150, seed=3)
  toeplitz = windowed.filter_energy(frames, kernel, bias, method="toeplitz")
  winograd = windowed.filter_energy(frames, kernel, bias, method="winograd")
  assert_close(winograd, toeplitz, rtol=2e-6)
  # Gradients agree but for outputs at a zero crossing whose sign the rounding decides (on these
  # random frames a handful of 6 M; each moves its filter's gradient by ~0.5 %).
  grads = [jax.grad(weighted_loss(m, "none"), (1, 2))(frames, kernel, bias)
           for m in ("toeplitz", "winograd")]
  for got, want in zip(grads[1], grads[0]):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert np.linalg.norm(got - want) <= 2e-2 * np.linalg.norm(want)
    assert np.mean(np.abs(got - want) <= 1e-5 * np.abs(want).max()) >= 0.5


def test_default_block_size_is_within_the_window():
  assert windowed.default_block_size(640, 256, 64) == 16
  for length, taps, filters in [(5, 256, 64), (640, 3, 1), (37, 1024, 8)]:
    assert 1 <= windowed.default_block_size(length, taps, filters) <= length


_SHARDED_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from wavejax.models import windowed
    assert len(jax.devices()) == 4
    rng = np.random.default_rng(0)
    frames = jnp.asarray(rng.standard_normal((16, 40 + 8)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((9, 4)), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(4), jnp.float32)
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    sharded = jax.device_put(frames, NamedSharding(mesh, PartitionSpec("batch")))
    for method in ("conv", "toeplitz", "winograd"):
      fn = lambda f, k, b: windowed.filter_energy(f, k, b, method=method, chunk_size=4)
      loss = lambda k, b, f: jnp.sum(fn(f, k, b) ** 2)
      out = jax.jit(fn)(sharded, kernel, bias)
      grads = jax.jit(jax.grad(loss, (0, 1, 2)))(kernel, bias, sharded)
      ref = fn(frames, kernel, bias)
      ref_grads = jax.grad(loss, (0, 1, 2))(kernel, bias, frames)
      np.testing.assert_allclose(out, ref, rtol=1e-5)
      for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
    print("OK")
""")


def test_batch_sharded_over_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
  assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-2000:]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fft_gradients_match_conv(shape, activation):
  frames, kernel, bias = random_inputs(*shape)
  grads = jax.grad(weighted_loss("fft", activation), (0, 1, 2))(frames, kernel, bias)
  expected = jax.grad(weighted_loss("conv", activation), (0, 1, 2))(frames, kernel, bias)
  for got, want in zip(grads, expected):
    assert_close(got, want, rtol=1e-4)
