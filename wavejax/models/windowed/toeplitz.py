"""The block-Toeplitz formulation: each window's outputs as one banded matrix product.

The L outputs of a window are cut into blocks of P; a sub-frame of P + K - 1 samples at stride P
(plus a trailing 1) times a banded `[P + K, P * F]` weight (W[j, p*F + f] = kernel[j - p, f], last
row = bias) gives a block of outputs per row of one matmul, which XLA:CPU fuses with |.| and the
window sum. Windows go through a `lax.scan` in chunks, so a chunk's `[chunk, L, F]` outputs stay
in cache.

A `jax.custom_vjp` keeps only d|act(y)|/dy, one bit per output packed into unsigned words by the
same variadic reduce that sums |act(y)| (so XLA:CPU reads the matmul's output once), and computes
the weight gradient as ONE matmul per chunk, `sub_frames^T @ dY`, with the transposed sub-frames
built directly (XLA:CPU's fast matmul takes `[J, M] @ [M, N]` but not a transposed left operand);
autodiff of the band construction folds it onto the K taps (reshape + sum), the ones column yields
the bias gradient, and `dY @ W^T` overlap-added onto the frames is computed only when the frames
are differentiated (`symbolic_zeros`). The forward's products may instead be formed by Winograd's
F(4, 3) (`winograd.py`), with an int8 sign residual. Measurements: docs/performance.md.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from wavejax.models.windowed import winograd
from wavejax.models.windowed.common import compute_dtype, matmul, pool

# Target number of outputs per scan step: keeps one step's `[chunk, L, F]` f32 output (8 MB at
# 50 windows of L=640, F=64) in a CPU's L3 cache while keeping the matmuls large (the chunk size
# is measured in docs/performance.md).
_CHUNK_OUTPUTS = 50 * 640 * 64


def default_block_size(length: int, taps: int, filters: int) -> int:
  """Outputs per Toeplitz block P: up to 1024 matmul columns (P * F), at most K / 2.

  The banded matmul does (P + K) / K times the direct convolution's FLOPs but is inefficient
  when narrow (P * F < ~256 columns); the measured optima behind this rule are in
  docs/performance.md.
  """
  block = max(8, min(1024 // filters, taps // 2))
  return int(min(block, length))



def toeplitz_energy(frames, kernel, bias, activation, block_size, chunk_size,
                    forward="toeplitz", precision=None):
  """Chunks the frames, builds the banded weight and runs the custom-VJP core (outputs formed
  by `forward`: "toeplitz" or "winograd")."""
  taps, filters = kernel.shape
  num, frame_len = frames.shape
  if num == 0:
    return jnp.zeros((0, filters), jnp.float32)
  length = frame_len - taps + 1
  block = min(block_size or default_block_size(length, taps, filters), length)
  num_blocks = -(-length // block)
  dtype = compute_dtype(frames, kernel)
  weight = _band(kernel.astype(dtype), bias.astype(dtype), block)
  target = winograd.CHUNK_OUTPUTS if forward == "winograd" else _CHUNK_OUTPUTS
  chunk = chunk_size or max(1, target // (num_blocks * block * filters))
  config = _Config(block=block, num_blocks=num_blocks, length=length, taps=taps,
                   filters=filters, activation=activation, forward=forward,
                   precision=precision)
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

  def __new__(cls, *, block, num_blocks, length, taps, filters, activation, forward="toeplitz",
              precision=None):
    return super().__new__(cls, (block, num_blocks, length, taps, filters, activation, forward,
                                 precision))

  block = property(lambda self: self[0])
  num_blocks = property(lambda self: self[1])
  length = property(lambda self: self[2])
  taps = property(lambda self: self[3])
  filters = property(lambda self: self[4])
  activation = property(lambda self: self[5])
  forward = property(lambda self: self[6])  # "toeplitz" or "winograd": how outputs are formed
  precision = property(lambda self: self[7])  # of the float32 products, forward and backward
  span = property(lambda self: self.block + self.taps - 1)


def _valid_mask(config):
  """`[num_blocks, P*F]` bool marking real outputs (t < L), or None when all are real."""
  block, num_blocks, length = config.block, config.num_blocks, config.length
  if num_blocks * block == length:
    return None
  t = np.arange(num_blocks)[:, None] * block + np.arange(block)[None, :]
  return np.repeat(t < length, config.filters, axis=1)


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
  y = matmul(_chunk_subframes(config, frames), weight, config.precision)
  return y.reshape(frames.shape[0], config.num_blocks, -1)


def _subframes_transpose(config, grad_rows, chunk):
  """Adjoint of `_chunk_subframes`: overlap-adds row gradients back onto `[chunk, T]` frames."""
  frame_len = config.length + config.taps - 1
  zeros = jnp.zeros((chunk, frame_len), grad_rows.dtype)
  _, transpose = jax.vjp(lambda f: _chunk_subframes(config, f), zeros)
  return transpose(grad_rows)[0]


def _energy_from_outputs(config, y):
  """`[chunk, num_blocks, P*F]` outputs -> `[chunk, F]` mean |act(y)|."""
  pooled = pool(y, config.activation)
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
  pooled = pool(y, config.activation)
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
  into `_energy_and_signs`'s reduce as well as it fuses `jnp.abs`'s)."""
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
    weights, bias_row = winograd.weights(config, weight)
    outputs = lambda frames_chunk: winograd.outputs(config, frames_chunk, weights, bias_row)
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
      grad_weight = grad_weight + matmul(rows_t, dy, config.precision)
    grad_frames = None
    if want_frames:
      grad_rows = matmul(dy, weight.T, config.precision).astype(dtype)
      grad_frames = _subframes_transpose(config, grad_rows, chunk)
    return grad_weight, grad_frames

  init = jnp.zeros(width, jnp.float32) if want_weight else None
  grad_weight, grad_frames = lax.scan(step, init, (frames, signs, scale))
  if want_weight:
    grad_weight = grad_weight.astype(dtype)
  return (grad_frames if want_frames else None), (grad_weight if want_weight else None)


_banded_energy.defvjp(_banded_energy_fwd, _banded_energy_bwd, symbolic_zeros=True)
