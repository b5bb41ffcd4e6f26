"""Tests of `wavejax.models.windowed.fused` (Pallas' interpreter on CPU) against float64 numpy and
the "toeplitz" method, and of the compiled kernel's lowering for CUDA."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from wavejax import errors
from wavejax.models import windowed
from wavejax.models.windowed import fused as fused_energy

# Compared with numpy or float32 references: float32 products on every backend.
pytestmark = pytest.mark.float32

ACTIVATIONS = ("none", "relu")
# (L, K, F, N): small; odd L (not a multiple of P or of 16 rows), odd K, N and F; K > L; K = 1 on
# one window; a single filter; more filters than one block of 16 (see test_tile_options).
SHAPES = [(64, 16, 8, 5), (37, 9, 3, 37), (12, 33, 4, 2), (20, 1, 5, 1), (50, 16, 1, 3)]
PAPER = (640, 256, 64, 2)


def numpy_reference(frames, kernel, bias, cotangent, activation):
  """float64 (energies, dframes, dkernel, dbias) for the cotangent of the energies."""
  frames, kernel, bias, cotangent = (np.asarray(jnp.asarray(x, jnp.float32), np.float64)
                                     for x in (frames, kernel, bias, cotangent))
  taps = kernel.shape[0]
  x = np.lib.stride_tricks.sliding_window_view(frames, taps, axis=1)  # [N, L, K]
  length = x.shape[1]
  y = np.einsum("ntk,kf->ntf", x, kernel) + bias
  if activation == "relu":
    pooled, slope = np.maximum(y, 0.0), (y > 0).astype(np.float64)
  else:
    pooled, slope = np.abs(y), np.where(y < 0, -1.0, 1.0)
  g = slope * cotangent[:, None, :] / length  # dE/dy
  dframes = np.zeros_like(frames)
  dx = np.einsum("ntf,kf->ntk", g, kernel)
  for k in range(taps):
    dframes[:, k:k + length] += dx[:, :, k]
  return pooled.mean(axis=1), dframes, np.einsum("ntk,ntf->kf", x, g), g.sum(axis=(0, 1))


def random_inputs(length, taps, filters, num, seed=0, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  frames = rng.standard_normal((num, length + taps - 1))
  kernel = rng.standard_normal((taps, filters)) / np.sqrt(taps)
  bias = 0.3 * rng.standard_normal(filters)
  cotangent = rng.standard_normal((num, filters))
  return (jnp.asarray(frames, dtype), jnp.asarray(kernel, dtype),
          jnp.asarray(bias, jnp.float32), jnp.asarray(cotangent, jnp.float32))


def energy_and_grads(energy_fn, frames, kernel, bias, cotangent, argnums=(0, 1, 2)):
  """jitted (energies, *gradients of sum(energies * cotangent) in argnums)."""
  def run(frames, kernel, bias, cotangent):
    out, vjp = jax.vjp(energy_fn, frames, kernel, bias)
    grads = vjp(cotangent)
    return (out, *(grads[i] for i in argnums))
  return jax.jit(run)(frames, kernel, bias, cotangent)


def fused(activation, **options):
  return lambda f, k, b: fused_energy.fused_filter_energy(f, k, b, activation=activation,
                                                          **options)


def toeplitz(activation):
  return lambda f, k, b: windowed.filter_energy(f, k, b, activation=activation,
                                                     method="toeplitz")


def assert_close(actual, expected, rtol):
  """Elementwise relative error, with an absolute floor at rtol x the largest entry."""
  actual = np.asarray(jnp.asarray(actual, jnp.float32), np.float64)
  expected = np.asarray(expected, np.float64)
  assert actual.shape == expected.shape
  scale = max(np.abs(expected).max(), 1e-30)
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def relative_l2(actual, expected):
  actual = np.asarray(jnp.asarray(actual, jnp.float32), np.float64)
  return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_matches_numpy(shape, activation):
  inputs = random_inputs(*shape)
  with jax.default_matmul_precision("highest"):
    out, dframes, dkernel, dbias = energy_and_grads(fused(activation), *inputs)
  expected = numpy_reference(*inputs, activation)
  assert out.shape == (shape[3], shape[2]) and out.dtype == jnp.float32
  assert dkernel.shape == inputs[1].shape and dbias.shape == inputs[2].shape
  for got, want in zip((out, dframes, dkernel, dbias), expected):
    assert_close(got, want, rtol=1e-5)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_paper_shape_matches_numpy_and_toeplitz(activation):
  inputs = random_inputs(*PAPER, seed=1)
  with jax.default_matmul_precision("highest"):
    got = energy_and_grads(fused(activation), *inputs, argnums=(1, 2))
    reference = energy_and_grads(toeplitz(activation), *inputs, argnums=(1, 2))
  expected = numpy_reference(*inputs, activation)
  for g, r, e in zip(got, reference, (expected[0], *expected[2:])):
    assert_close(g, e, rtol=1e-5)
    assert_close(g, r, rtol=1e-5)


@pytest.mark.parametrize("shape", [(37, 9, 3, 37), (12, 33, 4, 2)])
def test_matches_toeplitz(shape):
  inputs = random_inputs(*shape, seed=2)
  with jax.default_matmul_precision("highest"):
    got = energy_and_grads(fused("relu"), *inputs)
    expected = energy_and_grads(toeplitz("relu"), *inputs)
  for g, e in zip(got, expected):
    assert g.dtype == e.dtype
    assert_close(g, e, rtol=1e-5)


@pytest.mark.parametrize("options", [
    dict(phases=1, grad_phases=1),
    dict(phases=2, grad_phases=16),
    dict(phases=16, grad_phases=4, block_rows=32, grad_block_rows=16),
    dict(block_taps=16, grad_block_taps=32),  # several contraction blocks plus a remainder
    dict(block_filters=16),  # three filter blocks for F = 40
    dict(tiles_per_program=3, grad_tiles_per_program=2),
])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_tile_options(options, activation):
  inputs = random_inputs(45, 20, 40, 7, seed=3)
  with jax.default_matmul_precision("highest"):
    got = energy_and_grads(fused(activation, **options), *inputs, argnums=(1, 2))
  expected = numpy_reference(*inputs, activation)
  for g, e in zip(got, (expected[0], *expected[2:])):
    assert_close(g, e, rtol=1e-5)


def test_bfloat16_operands():
  # Against float64 on the bfloat16-rounded inputs: products of bfloat16 are exact in float32,
  # so the energies carry float32 summation error only; the kernel gradient multiplies the
  # operand by G = s * g / L rounded to bfloat16. Measured at this shape and at the paper's
  # (CPU interpreter and an H200): energies <= 2e-7, dkernel <= 2.7e-3, dbias <= 2e-7
  # (relative L2).
  inputs = random_inputs(120, 33, 24, 9, seed=4, dtype=jnp.bfloat16)
  out, dkernel, dbias = energy_and_grads(fused("none"), *inputs, argnums=(1, 2))
  assert out.dtype == jnp.float32 and dkernel.dtype == jnp.bfloat16
  expected = numpy_reference(*inputs, "none")
  assert relative_l2(out, expected[0]) < 1e-6
  assert relative_l2(dkernel, expected[2]) < 1e-2
  assert relative_l2(dbias, expected[3]) < 1e-6


def test_mixed_dtypes_run_in_float32():
  frames, kernel, bias, cotangent = random_inputs(30, 8, 4, 3, seed=5)
  with jax.default_matmul_precision("highest"):
    out = fused_energy.fused_filter_energy(frames.astype(jnp.bfloat16), kernel, bias)
  expected = numpy_reference(frames.astype(jnp.bfloat16), kernel, bias, cotangent, "none")[0]
  assert_close(out, expected, rtol=1e-5)


def test_weighted_sum_gradient_under_jit():
  # jax.grad of a weighted sum, under jit: every window and filter gets its own cotangent.
  frames, kernel, bias, _ = random_inputs(37, 9, 3, 11, seed=6)

  def loss(energy_fn):
    def value(frames, kernel, bias):
      energy = energy_fn(frames, kernel, bias)
      weights = jnp.cos(jnp.arange(energy.size, dtype=jnp.float32)).reshape(energy.shape)
      return jnp.sum(energy * weights)
    return value

  conv = lambda f, k, b: windowed.filter_energy(f, k, b, activation="relu", method="conv")
  with jax.default_matmul_precision("highest"):
    got = jax.jit(jax.grad(loss(fused("relu")), (0, 1, 2)))(frames, kernel, bias)
    expected = jax.grad(loss(conv), (0, 1, 2))(frames, kernel, bias)
  for g, e in zip(got, expected):
    assert g.shape == e.shape and g.dtype == e.dtype
    assert_close(g, e, rtol=1e-5)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_zero_outputs_follow_autodiff(activation):
  # Silent windows with a zero bias give outputs that are exactly 0: the derivative there must
  # be autodiff's (`jnp.abs`: +1, `jax.nn.relu`: 0).
  frames, kernel, _, cotangent = random_inputs(24, 7, 4, 5, seed=7)
  frames = frames.at[1].set(0.0).at[3, 5:].set(0.0)
  bias = jnp.zeros(4)
  conv = lambda f, k, b: windowed.filter_energy(f, k, b, activation=activation,
                                                     method="conv")
  with jax.default_matmul_precision("highest"):
    got = energy_and_grads(fused(activation), frames, kernel, bias, cotangent)
    expected = energy_and_grads(conv, frames, kernel, bias, cotangent)
  for g, e in zip(got, expected):
    assert_close(g, e, rtol=1e-5)


@pytest.mark.parametrize("argnums", [(1,), (2,), (0,)])
def test_partial_gradients(argnums):
  inputs = random_inputs(37, 9, 3, 4, seed=8)
  with jax.default_matmul_precision("highest"):
    got = energy_and_grads(fused("none"), *inputs, argnums=argnums)[1]
  expected = numpy_reference(*inputs, "none")[1 + argnums[0]]
  assert_close(got, expected, rtol=1e-5)


def test_no_windows():
  frames, kernel, bias, _ = random_inputs(16, 4, 3, 1)
  out = fused_energy.fused_filter_energy(frames[:0], kernel, bias)
  assert out.shape == (0, 3) and out.dtype == jnp.float32


def test_long_kernel_falls_back_to_toeplitz(caplog, monkeypatch):
  taps = fused_energy.MAX_CONTRACTION + 1
  ok, reason = fused_energy.supported(3, taps, 2)
  assert not ok and f"K={taps}" in reason
  assert fused_energy.supported(640, 256, 64) == (True, "")
  # The same path on a small shape: a lower limit makes K = 30 too long.
  monkeypatch.setattr(fused_energy, "MAX_CONTRACTION", 24)
  assert not fused_energy.supported(10, 30, 2)[0]
  frames, kernel, bias, cotangent = random_inputs(10, 30, 2, 3, seed=9)
  with caplog.at_level(logging.WARNING):
    got = energy_and_grads(fused("none"), frames, kernel, bias, cotangent)
  assert any("using the toeplitz method" in r.getMessage() for r in caplog.records)
  expected = energy_and_grads(toeplitz("none"), frames, kernel, bias, cotangent)
  for g, e in zip(got, expected):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(e))


def _kernel_dot_precisions(fn, *args):
  """The precisions of the dot_generals inside the pallas_calls of fn's jaxpr."""
  found = []

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "dot_general" and inside[0]:
        found.append(eqn.params["precision"])
      for value in eqn.params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
          sub = getattr(sub, "jaxpr", sub)
          if isinstance(sub, jax.extend.core.Jaxpr):
            entering = eqn.primitive.name == "pallas_call"
            inside[0] += entering
            visit(sub)
            inside[0] -= entering

  inside = [0]
  visit(jax.make_jaxpr(fn)(*args).jaxpr)
  return found


def test_precision_reaches_the_kernel_dots():
  frames, kernel, bias, _ = random_inputs(20, 5, 3, 2)
  highest, default, high = lax.Precision.HIGHEST, lax.Precision.DEFAULT, lax.Precision.HIGH
  with jax.default_matmul_precision("highest"):
    in_context = _kernel_dot_precisions(fused("none"), frames, kernel, bias)
    explicit = _kernel_dot_precisions(fused("none", precision=high), frames, kernel, bias)
  with jax.default_matmul_precision(None):  # this module's marker sets "highest"
    plain = _kernel_dot_precisions(fused("none"), frames, kernel, bias)
  assert in_context and set(in_context) == {(highest, highest)}
  assert explicit and set(explicit) == {(high, high)}
  assert plain and set(plain) == {(default, default)}


@pytest.mark.parametrize("call,message", [
    (dict(activation="tanh"), "activation"),
    (dict(precision="double"), "precision"),
    (dict(block_rows=48), "block_rows"),
    (dict(phases=3), "phases"),
    (dict(grad_block_taps=8), "grad_block_taps"),
    (dict(tiles_per_program=0), "tiles_per_program"),
    (dict(warps=4), "warps"),
])
def test_bad_options_raise(call, message):
  frames, kernel, bias, _ = random_inputs(16, 4, 3, 2)
  with pytest.raises(errors.ConfigError, match=message):
    fused_energy.fused_filter_energy(frames, kernel, bias, **call)


def test_bad_shapes_raise():
  frames, kernel, bias, _ = random_inputs(16, 4, 3, 2)
  with pytest.raises(errors.ConfigError, match="too short"):
    fused_energy.fused_filter_energy(frames[:, :3], kernel, bias)
  with pytest.raises(errors.ConfigError, match="bias"):
    fused_energy.fused_filter_energy(frames, kernel, bias[:2])
  with pytest.raises(errors.ConfigError, match="floating"):
    fused_energy.fused_filter_energy(frames.astype(jnp.int32), kernel, bias)


def _lowers_for_cuda():
  """Whether this jax lowers anything for CUDA on this machine (a plain jnp function)."""
  try:
    jax.jit(jnp.sin).trace(jnp.zeros(3)).lower(lowering_platforms=("cuda",))
  except Exception:  # noqa: BLE001 - any failure means: no cross-platform lowering here
    return False
  return True


@pytest.mark.skipif(not _lowers_for_cuda(), reason="this jax cannot lower for CUDA here")
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("shape,options", [
    ((640, 256, 64, 300), {}),
    ((37, 9, 3, 37), dict(block_filters=16, tiles_per_program=2)),
    ((640, 256, 64, 30), dict(phases=1, grad_phases=1, grad_block_rows=128,
                              grad_block_taps=256)),
])
def test_compiled_kernel_lowers_for_cuda(dtype, shape, options):
  # The Pallas-to-Triton lowering runs here, in Python: it rejects the ops and block shapes that
  # Triton cannot take. Forward and backward kernels, each a Triton custom call.
  length, taps, filters, num = shape
  args = (jax.ShapeDtypeStruct((num, length + taps - 1), dtype),
          jax.ShapeDtypeStruct((taps, filters), dtype),
          jax.ShapeDtypeStruct((filters,), jnp.float32))

  def loss(frames, kernel, bias):
    energy = fused_energy.fused_filter_energy(frames, kernel, bias, activation="relu",
                                              interpret=False, **options)
    return jnp.sum(energy * jnp.arange(filters))

  for precision in ("highest", "default"):
    with jax.default_matmul_precision(precision):
      lowered = jax.jit(jax.value_and_grad(loss, (1, 2))).trace(*args).lower(
          lowering_platforms=("cuda",))
    assert lowered.as_text().count("xla.gpu.triton") == 2
