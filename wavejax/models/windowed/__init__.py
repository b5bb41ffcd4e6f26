"""Per-window filter-bank energies: SimpleNet's convolution + mean-|x| pooling (Sec. 3).

`filter_energy` correlates every frame with a bank of FIR kernels (VALID, no kernel flip, the
Flax/`lax` convention), adds a bias, applies an optional ReLU and returns the mean absolute value of
each filter's output over the window: one "energy" per filter per window.

Formulations (numerically equal up to rounding; `tests/models/test_windowed.py` checks each
against numpy), one module each:

* `"conv"` (`conv.py`): `lax.conv_general_dilated` + plain autodiff, the reference.
* `"toeplitz"` (`toeplitz.py`): block-Toeplitz matmul with a packed-sign custom VJP.
* `"winograd"` (`winograd.py`): the Toeplitz product's forward by Winograd's F(4, 3); opt-in.
* `"fft"` (`fft.py`): per-window FFT correlation, float32, plain autodiff.
* `"fused"` (`fused.py`): one Pallas kernel that keeps each window's outputs on chip (GPU; Pallas'
  interpreter elsewhere, for tests).
* `"auto"`: measured per device and shape, remembered on disk (`choice.py`).

How fast each is, where, and why the defaults are what they are: docs/performance.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from wavejax import errors
from wavejax.models.windowed import choice
from wavejax.models.windowed.common import ACTIVATIONS, compute_dtype
from wavejax.models.windowed.conv import conv_energy
from wavejax.models.windowed.fft import fft_energy
from wavejax.models.windowed.fused import fused_filter_energy
from wavejax.models.windowed.toeplitz import default_block_size, toeplitz_energy

METHODS = ("auto", "conv", "toeplitz", "winograd", "fft", "fused")

__all__ = ["ACTIVATIONS", "METHODS", "default_block_size", "filter_energy", "resolve_method"]


def filter_energy(frames: jax.Array, kernel: jax.Array, bias: jax.Array, *,
                  activation: str = "none", method: str = "auto",
                  block_size: int | None = None, chunk_size: int | None = None,
                  precision: str | None = None) -> jax.Array:
  """Mean |act(correlate(frame, kernel) + bias)| over each window: `[N, L+K-1] -> [N, F]`.

  out[n, f] = mean_{t < L} | act( sum_k frames[n, t + k] * kernel[k, f] + bias[f] ) |

  Args:
    frames: `[N, L + K - 1]` windows with the context a VALID correlation needs.
    kernel: `[K, F]` FIR kernels (taps x filters).
    bias: `[F]`.
    activation: "none" (identity) or "relu".
    method: one of `METHODS` (see the module docstring and `resolve_method`).
    block_size: "toeplitz" only: outputs per block P (default: `default_block_size`).
    chunk_size: "toeplitz" only: windows per scan step (default: ~50 at L=640, F=64).
    precision: of the float32 products, forward and gradient: None (the backend's default:
      TF32 on NVIDIA GPUs), "high" or "highest" (float32), as `jax.default_matmul_precision`.

  Returns:
    `[N, F]` float32 energies. float32 and bfloat16 inputs are accepted; when frames and kernel
    are both bfloat16 the products run in bfloat16 with float32 accumulation (AMX on recent Intel
    CPUs, tensor cores on GPUs), and the gradients come back in bfloat16.

  Reverse-mode differentiable in frames, kernel and bias (`jax.grad`, under `jit`, `vmap`,
  `jax.checkpoint` and a batch sharded over devices); "toeplitz" is a `custom_vjp`, so it has no
  forward mode (`jvp`, `jacfwd`) and no second derivatives: use "conv" for those.

  Raises:
    errors.ConfigError: on a bad shape, dtype, activation or method.
  """
  length = _check_args(frames, kernel, bias, activation, method, block_size, chunk_size)
  method = resolve_method(method, length, kernel.shape[0], kernel.shape[1],
                          num=frames.shape[0], dtype=compute_dtype(frames, kernel),
                          activation=activation, precision=precision)
  if method == "conv":
    return conv_energy(frames, kernel, bias, activation, precision)
  if method == "fft":
    return fft_energy(frames, kernel, bias, activation)
  if method == "fused":
    return fused_filter_energy(frames, kernel, bias, activation=activation, precision=precision)
  return toeplitz_energy(frames, kernel, bias, activation, block_size, chunk_size,
                         forward=method, precision=precision)


def resolve_method(method: str, length: int, taps: int, filters: int, *, num: int = 1,
                   dtype=jnp.float32, activation: str = "none", precision=None) -> str:
  """The formulation "auto" stands for on this device for `num` windows of this shape (measured
  once per machine, see `choice`); other names pass through."""
  if method != "auto":
    return method
  return choice.choose(num, length, taps, filters, dtype, activation, precision)


def _check_args(frames, kernel, bias, activation, method, block_size, chunk_size) -> int:
  """Validates shapes and options; returns the number of outputs per window L."""
  if method not in METHODS:
    raise errors.ConfigError(f"filter_energy method={method!r}: choose one of {METHODS}")
  if activation not in ACTIVATIONS:
    raise errors.ConfigError(
        f"filter_energy activation={activation!r}: choose one of {ACTIVATIONS}")
  if frames.ndim != 2 or kernel.ndim != 2 or bias.ndim != 1:
    raise errors.ConfigError(
        f"filter_energy needs frames [N, L+K-1], kernel [K, F], bias [F]; got "
        f"{tuple(frames.shape)}, {tuple(kernel.shape)}, {tuple(bias.shape)}")
  taps, filters = kernel.shape
  if bias.shape[0] != filters:
    raise errors.ConfigError(
        f"filter_energy bias has {bias.shape[0]} entries but kernel has {filters} filters")
  length = frames.shape[1] - taps + 1
  if taps < 1 or filters < 1 or length < 1:
    raise errors.ConfigError(
        f"filter_energy frames of {frames.shape[1]} samples are too short for kernels of {taps} "
        "taps: frames must hold L + K - 1 samples with L >= 1")
  for name, x in (("frames", frames), ("kernel", kernel), ("bias", bias)):
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise errors.ConfigError(f"filter_energy {name} must be floating point, got {x.dtype}")
  for name, value in (("block_size", block_size), ("chunk_size", chunk_size)):
    if value is not None and (not isinstance(value, int) or value < 1):
      raise errors.ConfigError(f"filter_energy {name}={value!r}: must be a positive int")
  return length
