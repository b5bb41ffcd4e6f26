"""Per-window filter-bank energies: SimpleNet's convolution + mean-|x| pooling (Sec. 3).

`filter_energy` correlates every frame with a bank of FIR kernels (VALID, no kernel flip, the
Flax/`lax` convention), adds a bias, applies an optional ReLU and returns the mean absolute value of
each filter's output over the window: one "energy" per filter per window.

Methods (numerically equal; `tests/test_windowed_conv.py` checks them against numpy):

* `"conv"`: `lax.conv_general_dilated` + plain autodiff, the reference.
* `"toeplitz"`: block-Toeplitz matmul. The L outputs of a window are cut into blocks of P; a
  sub-frame of P + K - 1 samples at stride P (plus a trailing 1) times a banded `[P + K, P * F]`
  weight (W[j, p*F + f] = kernel[j - p, f], last row = bias) gives a block of outputs per row of
  one matmul, which XLA:CPU (YNNPACK) fuses with |.| and the window sum. Windows go through a
  `lax.scan` in chunks of ~50, so a chunk's `[chunk, L, F]` outputs (8 MB in f32) stay in cache.
  A `jax.custom_vjp` keeps only d|act(y)|/dy, one bit per output packed into unsigned words by
  the same variadic reduce that sums |act(y)| (so XLA:CPU reads the matmul's output once), and
  computes the weight gradient as ONE matmul per chunk, `sub_frames^T @ dY`, with the transposed
  sub-frames built directly (YNNPACK takes `[J, M] @ [M, N]` but not a transposed left operand);
  autodiff of the band construction folds it onto the K taps (reshape + sum), the ones column
  yields the bias gradient, and `dY @ W^T` overlap-added onto the frames (saliency) is computed
  only when the frames are differentiated (`symbolic_zeros`).
* `"winograd"`: the same banded product and the same custom VJP (with an int8 sign residual, see
  `_int8_signs`), with the forward's matmuls
  computed by Winograd's F(4, 3) over blocks (Lavin & Gray 2016): output block b of a window is
  sum_s X[b + s] @ W_s over its P-sample input blocks X and the `[P, P * F]` blocks W_s of the
  banded weight, a correlation of two block sequences, so per 4 output blocks and 3 weight blocks
  6 matmuls replace 12 (at the paper's shape the contraction shrinks from 288 to 144 columns).
  The input transform is sums of input blocks with coefficients up to 5 (float32, before any
  bfloat16 cast), the weight transform is done once per call. The backward stays the Toeplitz
  one: the same matmuls in Winograd form (six `[96, R] @ [R, 2048]` products) ran slower on
  XLA:CPU than the one `[288, R] @ [R, 2048]` product. Opt-in, not "auto": its outputs carry
  rounding errors ~10-100x the direct sum's (up to ~1e-6 of the largest output; energies within
  ~3e-6 per filter), so outputs at a zero crossing (|y| < ~1e-8) take the other sign more often.
  d|y|/dy jumps there, and each flipped output moves its filter's batch gradient by ~0.5 %:
  measured on a batch of 8 built-in utterances (8 M outputs, 14 flipped), the kernel gradient
  differs from "conv"'s by 1 % (relative L2; "toeplitz": 1.5e-6), and from itself on 1 vs 8
  devices by 1.2 % (XLA blocks the products differently per shard shape). Training is as good
  (a subgradient either way), but not reproducible to float32 precision.
* `"fft"`: per window, rfft(frame) x conj(rfft(kernel)) and one inverse FFT per filter; float32,
  plain autodiff. O(n log n) in the window instead of O(L K).
* `"auto"`: see `resolve_method`.

Measured on the project's 2-core Sapphire Rapids machine (XLA:CPU, JAX 0.10.2),
`experiments/benchmark.py`, batch 32 x 6 s (150 windows of 640), K=256, F=64; utterances/s,
forward / forward + kernel gradient (direct-conv work 3.15 / 6.29 GFLOP per utterance):

  method     float32 inputs               bfloat16 frames + kernel
  conv        47 / 19.6  (47 % / 40 %)     46 / 20   (XLA's convolution ignores AMX)
  toeplitz    78 / 32.8  (79 % / 67 %)    250 / 69   (AMX matmuls, memory-bound rest)

  (%: useful FLOP/s over the jitted 4096^2 f32 matmul, 309 GFLOP/s in that run; bf16 1141.
  The f32 ceiling of the direct work is 98 / 49 utt/s; P=32 adds 12.5 % matmul work.)

The same benchmark on a 2-core AMD EPYC, 2026-12-01, after the packed-sign residual (f32 matmul
peak 425 GFLOP/s, bf16 790; f32 ceiling of the direct work 135 / 67.5 utt/s):

  method     float32 inputs               bfloat16 frames + kernel
  conv        52 / 27.6  (39 % / 41 %)     52 / 27.8
  toeplitz   122 / 59.5  (90 % / 88 %)    201 / 76.6  (P = 16: 6 % more FLOPs than the direct
                                                        work; the int8 residual gave 48-51)
  winograd   149 / 57.6  (110 % / 85 %)   220 / 72.3  (fewer FLOPs than the direct work it is
                                                        credited with, hence > 100 %)

Why the notes' Toeplitz reached 58 / 17.9: it multiplied the whole batch at once, so the
`[N, L, F]` output and its cotangent (196 MB per 8 utterances in f32, each) went through memory
and fresh allocations; the same code unchunked measures 19 utt/s forward + gradient here, 34 in
chunks. Residual choice, measured (batch 8, f32 / bf16, fwd + grad utt/s): int8 sign 33.5 / 66;
2-bit packed sign 31 / 57 (unpacking costs more than it saves); f32 y 30 / 44; recompute y in
the backward 23 / 27. The int8 sign array took a second pass over each chunk's outputs (XLA
writes the matmul's output, then reads it once for the energy and once for the signs); packing
the signs in the energy's own (variadic) reduce removed that pass: batch 32 on the AMD EPYC,
forward + gradient 646 -> 563 ms at P=32, 530 ms at P=16 (XLA's temporary memory 240 -> 76 MiB).
Tried and not kept: Karatsuba over pairs of blocks (3 products for 4: 22 % fewer forward FLOPs)
ran 4 % faster than that, but like "winograd" it moves outputs near zero across it (12 sign flips
in 25 M outputs of built-in speech against float64, "toeplitz" and "conv": the same 3), which
put its kernel gradient 1.2e-3 (relative L2) from "conv"'s, against 5e-7 for "toeplitz".
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from wavejax import errors

METHODS = ("auto", "conv", "toeplitz", "winograd", "fft")
ACTIVATIONS = ("none", "relu")

# Target number of outputs per scan step of the "toeplitz" method: keeps one step's
# `[chunk, L, F]` f32 output (8 MB at 50 windows of L=640, F=64) in the L3 cache while keeping
# the matmuls large (measured on a 2-core AMD EPYC, 32 MB L3, forward + gradient: 50 windows
# 60.3 utt/s, 25: 58.6, 100: 57.6).
_CHUNK_OUTPUTS = 50 * 640 * 64


def filter_energy(frames: jax.Array, kernel: jax.Array, bias: jax.Array, *,
                  activation: str = "none", method: str = "auto",
                  block_size: int | None = None, chunk_size: int | None = None) -> jax.Array:
  """Mean |act(correlate(frame, kernel) + bias)| over each window: `[N, L+K-1] -> [N, F]`.

  out[n, f] = mean_{t < L} | act( sum_k frames[n, t + k] * kernel[k, f] + bias[f] ) |

  Args:
    frames: `[N, L + K - 1]` windows with the context a VALID correlation needs.
    kernel: `[K, F]` FIR kernels (taps x filters).
    bias: `[F]`.
    activation: "none" (identity) or "relu".
    method: "auto", "conv", "toeplitz" or "fft" (see the module docstring and `resolve_method`).
    block_size: "toeplitz" only: outputs per block P (default: `default_block_size`).
    chunk_size: "toeplitz" only: windows per scan step (default: ~50 at L=640, F=64).

  Returns:
    `[N, F]` float32 energies. float32 and bfloat16 inputs are accepted; when frames and kernel
    are both bfloat16 the products run in bfloat16 with float32 accumulation (on this CPU that
    runs on AMX, ~4x the float32 matmul rate), and the gradients come back in bfloat16.

  Reverse-mode differentiable in frames, kernel and bias (`jax.grad`, under `jit`, `vmap`,
  `jax.checkpoint` and a batch sharded over devices); "toeplitz" is a `custom_vjp`, so it has no
  forward mode (`jvp`, `jacfwd`) and no second derivatives: use "conv" for those.

  Raises:
    errors.ConfigError: on a bad shape, dtype, activation or method.
  """
  length = _check_args(frames, kernel, bias, activation, method, block_size, chunk_size)
  method = resolve_method(method, length, kernel.shape[0], kernel.shape[1])
  if method == "conv":
    return _conv_energy(frames, kernel, bias, activation)
  if method == "fft":
    return _fft_energy(frames, kernel, bias, activation)
  return _toeplitz_energy(frames, kernel, bias, activation, block_size, chunk_size,
                          forward=method)


def resolve_method(method: str, length: int, taps: int, filters: int) -> str:
  """The method "auto" stands for, given the backend and the shape; other names pass through.

  CPU: "toeplitz", not "winograd" (see the module docstring: its gradient is not reproducible
  to float32 precision, across device counts included; with the packed-sign residual it is no
  faster with the gradient either). Winograd vs Toeplitz with the earlier int8 residual,
  measured on a 2-core AMD EPYC (f32, L=640, batch 4 x 150 windows, forward / forward + kernel
  gradient utt/s, one loaded run): K=256 F=64 89/29 vs 60/24; K=64 F=64 167/54 vs 128/52;
  K=128 F=64 133/38 vs 102/38; K=1024 F=64 24/9 vs 17/8; K=32 F=64 241/75 vs 269/68;
  K=8 F=64 304/95 vs 448/87; K=64 F=8 588/518 vs 1039/323; K=256 F=8 (P=128) 319/172 vs
  262/150; K=512 F=16 (P=128) 94/46 vs 124/54.
  Toeplitz vs conv, measured on a 2-core Sapphire Rapids (f32, L=640, utterances of 150 windows/s,
  forward and forward + kernel gradient, conv -> toeplitz, batch 8 for the paper's shape, 4 for
  the others): K=256 F=64 (paper) 40 -> 75 and 21 -> 35; K=8 F=64 56 -> 210 and 38 -> 77;
  K=64 F=64 53 -> 124 and 31 -> 55; K=1024 F=64 17 -> 19 and 8 -> 11; K=256 F=8 190 -> 290
  and 68 -> 118; K=64 F=8 410 -> 640 and 143 -> 264. At one utterance (150 windows) the
  forward is a tie (~60 each), forward + gradient still 30 vs 22. No measured shape favoured
  "conv" enough to enter the rule. "fft" per window, forward + gradient relative to "toeplitz"
  (L=640, F=64, one loaded run): K=64 0.23x, 256 0.48x, 1024 0.92x, 2048 0.92x, 4096 1.01x: the
  FFT length grows with the frame (L + K - 1), so it never pulls ahead either.
  GPU/TPU: "conv" (the vendor convolution); the Toeplitz path was not measured there.
  """
  if method != "auto":
    return method
  del length, taps, filters
  return "toeplitz" if jax.default_backend() == "cpu" else "conv"


def default_block_size(length: int, taps: int, filters: int) -> int:
  """Outputs per Toeplitz block P: up to 1024 matmul columns (P * F), at most K / 2.

  The banded matmul does (P + K) / K times the direct convolution's FLOPs but is inefficient
  when narrow (P * F < ~256 columns); measured optima: P=16 at K=256 F=64 (forward + gradient
  with the packed-sign residual, 2-core AMD EPYC: P=8 60.2, 16 60.3, 32 56.4 utt/s), P=128 at
  K=256 F=8, P=32 at K=64 F=8, P=8..16 at K=8 F=64.
  """
  block = max(8, min(1024 // filters, taps // 2))
  return int(min(block, length))


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


def _compute_dtype(frames, kernel):
  """bfloat16 products when frames and kernel are both bfloat16, else float32."""
  if frames.dtype == jnp.bfloat16 and kernel.dtype == jnp.bfloat16:
    return jnp.bfloat16
  return jnp.float32


def _pool(y, activation):
  """|act(y)|, elementwise; `jax.nn.relu` (derivative 0 at 0) or `jnp.abs` (+1 at 0)."""
  return jax.nn.relu(y) if activation == "relu" else jnp.abs(y)


def _conv_energy(frames, kernel, bias, activation):
  """Reference: `lax.conv_general_dilated` VALID correlation, plain autodiff."""
  dtype = _compute_dtype(frames, kernel)
  y = lax.conv_general_dilated(
      frames.astype(dtype)[:, None, :], kernel.astype(dtype).T[:, None, :],
      window_strides=(1,), padding="VALID", dimension_numbers=("NCH", "OIH", "NCH"),
      preferred_element_type=jnp.float32)
  y = y + bias.astype(jnp.float32)[None, :, None]
  return jnp.mean(_pool(y, activation), axis=-1)


def _fft_energy(frames, kernel, bias, activation):
  """Correlation by FFT: per frame, rfft(frame) * conj(rfft(kernel)) over n >= L + K - 1 points
  (a power of two), inverse FFT, first L outputs. O(n log n) per window and filter instead of
  O(L K): for long kernels; always float32 (XLA's FFTs take no bfloat16), plain autodiff."""
  taps = kernel.shape[0]
  frame_len = frames.shape[1]
  length = frame_len - taps + 1
  n = 1 << (frame_len - 1).bit_length()
  spectrum = jnp.fft.rfft(frames.astype(jnp.float32), n=n)[:, :, None]
  kernel_spectrum = jnp.conj(jnp.fft.rfft(kernel.astype(jnp.float32), n=n, axis=0))[None]
  # Circular correlation: output t = sum_k frame[t + k] kernel[k] for t < L needs no wrap-around
  # because n >= L + K - 1.
  y = jnp.fft.irfft(spectrum * kernel_spectrum, n=n, axis=1)[:, :length]
  y = y + bias.astype(jnp.float32)[None, None, :]
  return jnp.mean(_pool(y, activation), axis=1)


# ----------------------------------------------------------------------------------------------
# Block-Toeplitz method.


def _toeplitz_energy(frames, kernel, bias, activation, block_size, chunk_size,
                     forward="toeplitz"):
  """Chunks the frames, builds the banded weight and runs the custom-VJP core (outputs formed
  by `forward`: "toeplitz" or "winograd")."""
  taps, filters = kernel.shape
  num, frame_len = frames.shape
  if num == 0:
    return jnp.zeros((0, filters), jnp.float32)
  length = frame_len - taps + 1
  block = min(block_size or default_block_size(length, taps, filters), length)
  num_blocks = -(-length // block)
  dtype = _compute_dtype(frames, kernel)
  weight = _band(kernel.astype(dtype), bias.astype(dtype), block)
  target = _WINOGRAD_CHUNK_OUTPUTS if forward == "winograd" else _CHUNK_OUTPUTS
  chunk = chunk_size or max(1, target // (num_blocks * block * filters))
  config = _Config(block=block, num_blocks=num_blocks, length=length, taps=taps,
                   filters=filters, activation=activation, forward=forward)
  chunks = _chunks(frames.astype(dtype), chunk)
  return _unchunk(_banded_energy(config, chunks, weight), num)


def _chunks(frames, chunk):
  """`[N, T]` -> `[num_chunks, chunk, T]`, zero windows appended to fill the last chunk.

  Chunk i holds windows i, i + num_chunks, ...: the leading (batch, possibly sharded) axis
  stays the within-chunk axis, so a scan step splits across devices like the batch does.
  """
  num, frame_len = frames.shape
  num_chunks = -(-num // min(chunk, num))
  chunk = -(-num // num_chunks)
  frames = jnp.pad(frames, ((0, num_chunks * chunk - num), (0, 0)))
  return frames.reshape(chunk, num_chunks, frame_len).swapaxes(0, 1)


def _unchunk(energy, num):
  """`[num_chunks, chunk, F]` -> the `[num, F]` energies of the real windows."""
  num_chunks, chunk, filters = energy.shape
  return energy.swapaxes(0, 1).reshape(num_chunks * chunk, filters)[:num]


def _subframes(frames, block, num_blocks, span):
  """`[N, T]` -> `[N, num_blocks, span + 1]`: samples `b*block ... b*block+span-1`, then a 1.

  Built from strided slices of a `[N, rows, block]` view (cheap copies whose transpose is a
  shifted add); the trailing column of ones carries the bias through the matmul.
  """
  num = frames.shape[0]
  hops = -(-span // block)
  rows = num_blocks + hops - 1
  x = jnp.pad(frames, ((0, 0), (0, rows * block - frames.shape[1])))
  x = x.reshape(num, rows, block)
  parts = [x[:, i:i + num_blocks] for i in range(hops)]
  sub = jnp.concatenate(parts, axis=-1)[..., :span]
  ones = jnp.ones((num, num_blocks, 1), frames.dtype)
  return jnp.concatenate([sub, ones], axis=-1)


def _band(kernel, bias, block):
  """`[K, F]`, `[F]` -> `[P + K, P * F]` with W[j, p*F + f] = kernel[j - p, f], last row bias.

  The shifted copies come from reshaping P tiled copies of the zero-padded kernel (row p of a
  `[P, K + P - 1]` view of a sequence of period K + P is that sequence shifted by p), so autodiff
  folds the weight gradient back onto the K taps with a reshape and a sum, not a scatter.
  """
  taps, filters = kernel.shape
  span = block + taps - 1
  period = jnp.concatenate([kernel, jnp.zeros((block, filters), kernel.dtype)], axis=0)
  tiled = jnp.tile(period, (block, 1))[:block * span]
  shifted = tiled.reshape(block, span, filters).transpose(1, 0, 2)  # [span, P, F]
  bias_row = jnp.broadcast_to(bias, (1, block, filters))
  return jnp.concatenate([shifted, bias_row], axis=0).reshape(span + 1, block * filters)


class _Config(tuple):
  """Static (hashable) settings of the banded core."""
  __slots__ = ()

  def __new__(cls, *, block, num_blocks, length, taps, filters, activation, forward="toeplitz"):
    return super().__new__(cls, (block, num_blocks, length, taps, filters, activation, forward))

  block = property(lambda self: self[0])
  num_blocks = property(lambda self: self[1])
  length = property(lambda self: self[2])
  taps = property(lambda self: self[3])
  filters = property(lambda self: self[4])
  activation = property(lambda self: self[5])
  forward = property(lambda self: self[6])  # "toeplitz" or "winograd": how outputs are formed
  span = property(lambda self: self.block + self.taps - 1)


def _valid_mask(config):
  """`[num_blocks, P*F]` bool marking real outputs (t < L), or None when all are real."""
  block, num_blocks, length = config.block, config.num_blocks, config.length
  if num_blocks * block == length:
    return None
  t = np.arange(num_blocks)[:, None] * block + np.arange(block)[None, :]
  return np.repeat(t < length, config.filters, axis=1)


def _matmul(a, b):
  return jnp.matmul(a, b, preferred_element_type=jnp.float32)


def _chunk_subframes(config, frames):
  """`[chunk, T]` frames -> `[chunk * num_blocks, P + K]` matmul rows."""
  sub = _subframes(frames, config.block, config.num_blocks, config.span)
  return sub.reshape(-1, config.span + 1)


def _chunk_subframes_t(config, frames):
  """`_chunk_subframes(config, frames).T`, built directly in that layout: `[P + K, chunk * B]`.

  XLA:CPU's fast (YNNPACK) matmul wants the contracted axis of the left operand last, so the
  weight gradient `rows^T @ dY` reads this instead of transposing the rows.
  """
  block, num_blocks, span = config.block, config.num_blocks, config.span
  chunk = frames.shape[0]
  hops = -(-span // block)
  rows = num_blocks + hops - 1
  x = jnp.pad(frames, ((0, 0), (0, rows * block - frames.shape[1])))
  x = x.reshape(chunk, rows, block).transpose(2, 0, 1)  # [P, chunk, rows]
  parts = [x[:, :, i:i + num_blocks] for i in range(hops)]
  sub = jnp.concatenate(parts, axis=0)[:span].reshape(span, chunk * num_blocks)
  ones = jnp.ones((1, chunk * num_blocks), frames.dtype)
  return jnp.concatenate([sub, ones], axis=0)


def _chunk_outputs(config, frames, weight):
  """One chunk's outputs `[chunk, num_blocks, P*F]` (float32), bias included."""
  y = _matmul(_chunk_subframes(config, frames), weight)
  return y.reshape(frames.shape[0], config.num_blocks, -1)


def _subframes_transpose(config, grad_rows, chunk):
  """Adjoint of `_chunk_subframes`: overlap-adds row gradients back onto `[chunk, T]` frames."""
  frame_len = config.length + config.taps - 1
  zeros = jnp.zeros((chunk, frame_len), grad_rows.dtype)
  _, transpose = jax.vjp(lambda f: _chunk_subframes(config, f), zeros)
  return transpose(grad_rows)[0]


def _energy_from_outputs(config, y):
  """`[chunk, num_blocks, P*F]` outputs -> `[chunk, F]` mean |act(y)|."""
  pooled = _pool(y, config.activation)
  mask = _valid_mask(config)
  if mask is not None:
    pooled = jnp.where(mask, pooled, 0.0)
  pooled = pooled.sum(axis=1).reshape(y.shape[0], config.block, config.filters)
  return pooled.sum(axis=1) / config.length


def _bits_per_word(block):
  """Sign bits packed per word: the largest divisor of P that is at most 32."""
  return max(d for d in range(1, min(block, 32) + 1) if block % d == 0)


def _word_dtype(width):
  """The smallest unsigned integer type that holds `width` bits."""
  return jnp.uint8 if width <= 8 else jnp.uint16 if width <= 16 else jnp.uint32


def _energy_and_signs(config, y):
  """`[chunk, num_blocks, P*F]` outputs -> (`[chunk, F]` energies, packed d|act(y)|/dy).

  One variadic reduce over each block's P outputs sums |act(y)| and ORs one bit per output into
  `[chunk, num_blocks, P / W, F]` words of W = `_bits_per_word(P)` bits (uint8, 16 or 32):
  XLA:CPU reads the matmul's output once, instead of once for the energy and once for an int8
  sign array, and the residual is ~1 bit per output instead of 8. Bit set: y < 0 ("none":
  d|y|/dy = -1, else +1, so y = 0 gives +1 like `jnp.abs`'s derivative) or y > 0 ("relu":
  derivative 1, else 0, like `jax.nn.relu`'s). Padded outputs (t >= L) are left out of the
  energy; `_derivative` zeroes them.
  """
  width = _bits_per_word(config.block)
  words = config.block // width
  y = y.reshape(y.shape[0], config.num_blocks, words, width, config.filters)
  pooled = _pool(y, config.activation)
  mask = _valid_mask(config)
  if mask is not None:
    pooled = jnp.where(mask.reshape(1, *y.shape[1:]), pooled, 0.0)
  word = _word_dtype(width)
  bit = jnp.left_shift(word(1), lax.broadcasted_iota(word, y.shape, 3))
  flagged = (y > 0) if config.activation == "relu" else (y < 0)
  bits = jnp.where(flagged, bit, word(0))
  sums, packed = lax.reduce(
      (pooled, bits), (jnp.float32(0), word(0)),
      lambda a, b: (a[0] + b[0], lax.bitwise_or(a[1], b[1])), (3,))
  energy = sums.sum(axis=(1, 2)) / config.length
  return energy, packed


def _int8_signs(config, y):
  """d|act(y)|/dy as int8 `[chunk, num_blocks, P*F]`, 0 at padded outputs: the Winograd
  forward's residual (its outputs come from a sum of six products, which XLA:CPU does not fuse
  into `_energy_and_signs`'s reduce as fast as it fuses `jnp.abs`'s; measured 51 vs 57 utt/s)."""
  if config.activation == "relu":
    s = (y > 0).astype(jnp.int8)
  else:
    s = jnp.where(y >= 0, jnp.int8(1), jnp.int8(-1))
  mask = _valid_mask(config)
  return s if mask is None else jnp.where(mask, s, jnp.int8(0))


def _derivative(config, packed):
  """Packed bits `[chunk, num_blocks, P / W, F]` -> d|act(y)|/dy `[chunk, num_blocks, P, F]` as
  float32 -1/0/+1, 0 at padded outputs."""
  width = _bits_per_word(config.block)
  word = packed.dtype.type
  shifts = lax.broadcasted_iota(packed.dtype, (1, 1, 1, width, 1), 3)
  bits = lax.bitwise_and(lax.shift_right_logical(packed[:, :, :, None, :], shifts), word(1))
  bits = bits.astype(jnp.float32)
  derivative = bits if config.activation == "relu" else 1.0 - 2.0 * bits
  derivative = derivative.reshape(packed.shape[0], config.num_blocks, config.block, config.filters)
  mask = _valid_mask(config)
  if mask is not None:
    derivative = jnp.where(mask.reshape(1, config.num_blocks, config.block, config.filters),
                           derivative, 0.0)
  return derivative


def _energy_and_residual(config, y):
  """(energies, the residual `_residual_derivative` decodes): packed sign bits, or for the
  Winograd forward int8 signs (see `_int8_signs`)."""
  if config.forward == "winograd":
    return _energy_from_outputs(config, y), _int8_signs(config, y)
  return _energy_and_signs(config, y)


def _residual_derivative(config, residual):
  """`_energy_and_residual`'s residual -> d|act(y)|/dy `[chunk, num_blocks, P, F]`."""
  if config.forward == "winograd":
    return residual.reshape(-1, config.num_blocks, config.block, config.filters)
  return _derivative(config, residual)


def _forward_scan(config, frames, weight, keep_signs):
  if config.forward == "winograd":
    weights, bias_row = _winograd_weights(config, weight)
    outputs = lambda frames_chunk: _winograd_outputs(config, frames_chunk, weights, bias_row)
  else:
    outputs = lambda frames_chunk: _chunk_outputs(config, frames_chunk, weight)

  def step(_, frames_chunk):
    y = outputs(frames_chunk)
    if keep_signs:
      return None, _energy_and_residual(config, y)
    return None, (_energy_from_outputs(config, y), None)
  _, (energy, signs) = lax.scan(step, None, frames)
  return energy, signs


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _banded_energy(config, frames, weight):
  """`[C, chunk, L+K-1]` frames, `[P+K, P*F]` weight -> `[C, chunk, F]` energies."""
  return _forward_scan(config, frames, weight, keep_signs=False)[0]


def _flag(value):
  """A static bool that survives as a custom_vjp residual (pytree structure, no leaves)."""
  return () if value else None


def _banded_energy_fwd(config, frames, weight):
  energy, signs = _forward_scan(config, frames.value, weight.value, keep_signs=True)
  # dW needs the frames, d(frames) needs the weight: keep each only when wanted.
  kept_frames = frames.value if weight.perturbed else None
  kept_weight = weight.value if frames.perturbed else None
  return energy, (kept_frames, signs, kept_weight,
                  _flag(frames.perturbed), _flag(weight.perturbed))


def _banded_energy_bwd(config, residuals, grad):
  frames, signs, weight, want_frames, want_weight = residuals
  want_frames, want_weight = want_frames is not None, want_weight is not None
  if isinstance(grad, jax.custom_derivatives.SymbolicZero):
    return None, None
  chunk = grad.shape[1]
  dtype = (frames if want_weight else weight).dtype
  width = (config.span + 1, config.block * config.filters)
  scale = (grad / config.length).astype(jnp.float32)  # [C, chunk, F]

  def step(grad_weight, xs):
    frames_chunk, sign_chunk, scale_chunk = xs
    dy = _residual_derivative(config, sign_chunk)
    dy = (dy * scale_chunk[:, None, None, :]).astype(dtype)
    dy = dy.reshape(chunk * config.num_blocks, config.block * config.filters)
    if want_weight:
      rows_t = _chunk_subframes_t(config, frames_chunk)
      grad_weight = grad_weight + _matmul(rows_t, dy)
    grad_frames = None
    if want_frames:
      grad_rows = _matmul(dy, weight.T).astype(dtype)
      grad_frames = _subframes_transpose(config, grad_rows, chunk)
    return grad_weight, grad_frames

  init = jnp.zeros(width, jnp.float32) if want_weight else None
  grad_weight, grad_frames = lax.scan(step, init, (frames, signs, scale))
  if want_weight:
    grad_weight = grad_weight.astype(dtype)
  return (grad_frames if want_frames else None), (grad_weight if want_weight else None)


_banded_energy.defvjp(_banded_energy_fwd, _banded_energy_bwd, symbolic_zeros=True)




# ----------------------------------------------------------------------------------------------
# Winograd forward: the banded product with half of its matmul work left out.


class _Winograd(tuple):
  """Minimal filtering F(m, r) in correlation form (Lavin & Gray 2016, "Fast Algorithms for
  Convolutional Neural Networks"): y[i] = sum_{j<r} g[j] d[i + j] for i < m, from n = m + r - 1
  products, y = A^T [(G g) * (B^T d)]."""
  __slots__ = ()
  m = property(lambda self: len(self[0]))
  r = property(lambda self: len(self[1][0]))
  n = property(lambda self: len(self[2]))
  a_t = property(lambda self: self[0])
  g = property(lambda self: self[1])
  b_t = property(lambda self: self[2])


# F(4, 3): 6 products for 12; interpolation points 0, +-1, +-2 and infinity.
_F43 = _Winograd((
    ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)),
    ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
     (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
    ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0),
     (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
))
# Target outputs per scan step with the Winograd forward: its n / m = 1.5x larger products stay in
# the L2/L3 caches (measured best at ~20 windows of 640 x 64; ~100 is 10-20 % slower).
_WINOGRAD_CHUNK_OUTPUTS = 20 * 640 * 64


def _combine(coefficients, terms):
  """sum_t coefficients[t] * terms[t], leaving out zero coefficients (exact for +-1)."""
  total = None
  for c, term in zip(coefficients, terms):
    if c == 0:
      continue
    term = term if c == 1 else -term if c == -1 else c * term
    total = term if total is None else total + term
  return total


def _winograd_sizes(config):
  """(output blocks rounded up to a multiple of m, weight blocks rounded up to one of r)."""
  wino = _F43
  out_blocks = -(-config.num_blocks // wino.m) * wino.m
  tap_blocks = -(-config.span // config.block)
  return out_blocks, -(-tap_blocks // wino.r) * wino.r


def _winograd_weights(config, weight):
  """The banded `[P + K, P * F]` weight -> (`[n, U * P, P * F]` G-transformed weight blocks in the
  weight's dtype, `[P * F]` float32 bias row).

  The banded product is a correlation of the sequence of P-sample input blocks X with the
  sequence of `[P, P * F]` weight blocks W_s: output block b = sum_s X[b + s] @ W_s. F(4, 3)
  therefore applies with blocks for numbers and matmuls for products, per group u of r = 3
  consecutive weight blocks; the groups are concatenated along the contraction.
  """
  wino = _F43
  _, tap_blocks = _winograd_sizes(config)
  band = weight[:-1].astype(jnp.float32)  # the kernel rows; the last row is the bias
  band = jnp.pad(band, ((0, tap_blocks * config.block - band.shape[0]), (0, 0)))
  groups = band.reshape(tap_blocks // wino.r, wino.r, config.block, -1)
  weights = jnp.einsum("kj,ujio->kuio", jnp.asarray(wino.g, jnp.float32), groups)
  return (weights.reshape(wino.n, -1, groups.shape[-1]).astype(weight.dtype),
          weight[-1].astype(jnp.float32))


def _winograd_inputs(config, frames):
  """`[chunk, T]` frames -> `[n, chunk * Q, U * P]` float32: B^T applied to runs of n blocks.

  Row (c, q) of product k concatenates, over the weight groups u, sum_t B^T[k, t] X[m q + r u + t]
  (X: window c's blocks of P samples, zero past its end).
  """
  wino = _F43
  out_blocks, tap_blocks = _winograd_sizes(config)
  groups, steps, block = tap_blocks // wino.r, out_blocks // wino.m, config.block
  samples = (out_blocks + tap_blocks - 1) * block
  x = jnp.pad(frames.astype(jnp.float32), ((0, 0), (0, samples - frames.shape[1])))
  x = x.reshape(frames.shape[0], -1, block)

  def run(u, t):  # X[m q + r u + t] for q < Q: [chunk, Q, P]
    start = wino.r * u + t
    return x[:, start:start + wino.m * (steps - 1) + 1:wino.m]

  runs = [[run(u, t) for t in range(wino.n)] for u in range(groups)]
  products = [jnp.concatenate([_combine(coefficients, runs[u]) for u in range(groups)], axis=-1)
              for coefficients in wino.b_t]
  return jnp.stack(products).reshape(wino.n, -1, groups * block)


def _winograd_outputs(config, frames, weights, bias_row):
  """One chunk's outputs `[chunk, num_blocks, P * F]` (float32), bias included: the same numbers
  as `_chunk_outputs` up to float32 rounding (the input transform's sums)."""
  wino = _F43
  out_blocks, _ = _winograd_sizes(config)
  inputs = _winograd_inputs(config, frames).astype(weights.dtype)
  products = jnp.einsum("kri,kio->kro", inputs, weights, preferred_element_type=jnp.float32)
  y = jnp.stack([_combine(row, products) for row in wino.a_t], axis=1)  # [chunk * Q, m, P*F]
  y = y.reshape(frames.shape[0], out_blocks, -1)[:, :config.num_blocks]
  return y + bias_row
