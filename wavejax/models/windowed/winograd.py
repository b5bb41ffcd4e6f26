"""Winograd's F(4, 3) over the block-Toeplitz product: the forward with half its matmul work.

Output block b of a window is sum_s X[b + s] @ W_s over its P-sample input blocks X and the
`[P, P * F]` blocks W_s of the banded weight (`toeplitz.py`), a correlation of two block sequences,
so per 4 output blocks and 3 weight blocks 6 matmuls replace 12 (Lavin & Gray 2016). The input
transform is sums of input blocks with coefficients up to 5 (float32, before any bfloat16 cast);
the weight transform is done once per call. The backward stays the Toeplitz one.

Opt-in, never chosen by "auto": its outputs carry rounding errors ~10-100x the direct sum's, so
outputs at a zero crossing take the other sign more often; d|y|/dy jumps there, and the kernel
gradient then differs from the direct convolution's by ~1 % and between device counts by as much
(docs/performance.md). Training is as good (a subgradient either way), not reproducible to float32.
"""

from __future__ import annotations

import jax.numpy as jnp


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
# the L2/L3 caches (docs/performance.md).
CHUNK_OUTPUTS = 20 * 640 * 64


def _combine(coefficients, terms):
  """sum_t coefficients[t] * terms[t], leaving out zero coefficients (exact for +-1)."""
  total = None
  for c, term in zip(coefficients, terms):
    if c == 0:
      continue
    term = term if c == 1 else -term if c == -1 else c * term
    total = term if total is None else total + term
  return total


def _sizes(config):
  """(output blocks rounded up to a multiple of m, weight blocks rounded up to one of r)."""
  wino = _F43
  out_blocks = -(-config.num_blocks // wino.m) * wino.m
  tap_blocks = -(-config.span // config.block)
  return out_blocks, -(-tap_blocks // wino.r) * wino.r


def weights(config, weight):
  """The banded `[P + K, P * F]` weight -> (`[n, U * P, P * F]` G-transformed weight blocks in the
  weight's dtype, `[P * F]` float32 bias row).

  The banded product is a correlation of the sequence of P-sample input blocks X with the
  sequence of `[P, P * F]` weight blocks W_s: output block b = sum_s X[b + s] @ W_s. F(4, 3)
  therefore applies with blocks for numbers and matmuls for products, per group u of r = 3
  consecutive weight blocks; the groups are concatenated along the contraction.
  """
  wino = _F43
  _, tap_blocks = _sizes(config)
  band = weight[:-1].astype(jnp.float32)  # the kernel rows; the last row is the bias
  band = jnp.pad(band, ((0, tap_blocks * config.block - band.shape[0]), (0, 0)))
  groups = band.reshape(tap_blocks // wino.r, wino.r, config.block, -1)
  weights = jnp.einsum("kj,ujio->kuio", jnp.asarray(wino.g, jnp.float32), groups,
                       precision=config.precision)
  return (weights.reshape(wino.n, -1, groups.shape[-1]).astype(weight.dtype),
          weight[-1].astype(jnp.float32))


def _inputs(config, frames):
  """`[chunk, T]` frames -> `[n, chunk * Q, U * P]` float32: B^T applied to runs of n blocks.

  Row (c, q) of product k concatenates, over the weight groups u, sum_t B^T[k, t] X[m q + r u + t]
  (X: window c's blocks of P samples, zero past its end).
  """
  wino = _F43
  out_blocks, tap_blocks = _sizes(config)
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


def outputs(config, frames, weights, bias_row):
  """One chunk's outputs `[chunk, num_blocks, P * F]` (float32), bias included: the same numbers
  as `_chunk_outputs` up to float32 rounding (the input transform's sums)."""
  wino = _F43
  out_blocks, _ = _sizes(config)
  inputs = _inputs(config, frames).astype(weights.dtype)
  products = jnp.einsum("kri,kio->kro", inputs, weights, precision=config.precision,
                        preferred_element_type=jnp.float32)
  y = jnp.stack([_combine(row, products) for row in wino.a_t], axis=1)  # [chunk * Q, m, P*F]
  y = y.reshape(frames.shape[0], out_blocks, -1)[:, :config.num_blocks]
  return y + bias_row
