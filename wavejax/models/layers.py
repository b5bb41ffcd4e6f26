"""Small layers shared by front-ends and heads: normalisation choices (batch, affine, none),
non-overlapping max pooling and a 1-D convolution that avoids XLA:CPU's slow short-input cases."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from wavejax import errors

NORMS = ("batch", "affine", "none")
# Running statistics: new = BATCH_NORM_MOMENTUM * old + (1 - BATCH_NORM_MOMENTUM) * batch.
BATCH_NORM_MOMENTUM = 0.9


class Affine(nn.Module):
  """A learnable per-feature scale and offset: `x * scale / sqrt(1 + epsilon) + bias`.

  This is what the paper's code gets from `tf.layers.batch_normalization(x)` with its default
  `training=False` (docs/reference.md#batch-normalisation-in-inference-mode): the moving
  statistics never leave mean 0 and variance 1, so the layer is a learnable affine map of its
  input. `epsilon` is TensorFlow's default (1e-3).
  """
  epsilon: float = 1e-3

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones_init(), (features,))
    bias = self.param("bias", nn.initializers.zeros_init(), (features,))
    return x * (scale / jnp.sqrt(1.0 + self.epsilon)) + bias


def normalize(x: jax.Array, norm: str, train: bool,
              field: str = "config.model.head.norm") -> jax.Array:
  """Normalises over the last axis.

  Args:
    x: any array; its last axis holds the features.
    norm: "batch" (batch statistics in training, running statistics at evaluation), "affine"
      (`Affine`: the paper code's inference-mode batch normalisation) or "none".
    train: training mode (batch statistics) or not.
    field: the config field named in the error on a bad `norm`.

  Returns:
    An array of the shape of `x`.
  """
  if norm == "none":
    return x
  if norm == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=BATCH_NORM_MOMENTUM)(x)
  if norm == "affine":
    return Affine()(x)
  raise errors.ConfigError(f"{field}={norm!r}: choose one of {', '.join(NORMS)}")


POOL_PADDINGS = ("SAME", "VALID")


def max_pool(x: jax.Array, window: Sequence[int], padding: str = "VALID") -> jax.Array:
  """Max pooling with stride = window over the axes between the batch and the features.

  The same numbers as `flax.linen.max_pool(x, window, strides=window, padding=padding)`, its
  gradient included (ties go to the first position in row-major window order, as XLA's
  select-and-scatter gives them), but 2-3x faster to differentiate on CPU: the forward keeps the
  winning position of every window as one small integer, and the gradient is one elementwise pass
  that places each output's cotangent there (measured on the head's [32, 150, 64, 32] input:
  94 -> 38 ms; WaveRNN's first [4800, 640, 32]: 707 -> 290 ms).

  Args:
    x: `[batch, *spatial, features]`.
    window: one pooling size per spatial axis.
    padding: "VALID" drops a tail shorter than the window; "SAME" pads with -inf to a multiple
      of it (as XLA splits the padding: the smaller half before).
  """
  window = tuple(int(w) for w in window)
  if padding not in POOL_PADDINGS or len(window) != x.ndim - 2 or min(window) < 1:
    raise errors.ConfigError(
        f"max pooling of a {x.ndim - 2}-D input by {window} with padding {padding!r}: the pool "
        f"sizes in config.model must be positive, one per axis, padding one of {POOL_PADDINGS}")
  pads = [(0, 0, 0)]
  for size, w in zip(x.shape[1:-1], window):
    extra = -(-size // w) * w - size
    pads.append((extra // 2, extra - extra // 2, 0) if padding == "SAME" else (0, -(size % w), 0))
  pads.append((0, 0, 0))
  if any(pad != (0, 0, 0) for pad in pads):
    x = lax.pad(x, jnp.array(-jnp.inf, x.dtype), pads)
  return _block_max(x, window)


def _blocks(x, window):
  """`[B, n1 * w1, n2 * w2, ..., F]` -> `[B, n1, w1, n2, w2, ..., F]`."""
  shape = [x.shape[0]]
  for size, w in zip(x.shape[1:-1], window):
    shape += [size // w, w]
  return x.reshape(shape + [x.shape[-1]])


def _window_axes(window) -> tuple[int, ...]:
  return tuple(2 + 2 * axis for axis in range(len(window)))


def _position(window):
  """Every element's row-major position in its window, broadcastable against `_blocks`."""
  ndim = 2 * len(window) + 2
  position = None
  for axis, w in zip(_window_axes(window), window):
    shape = [1] * ndim
    shape[axis] = w
    index = lax.broadcasted_iota(jnp.int32, shape, axis)
    position = index if position is None else position * w + index
  return position


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _block_max(x, window):
  return _blocks(x, window).max(axis=_window_axes(window))


def _block_max_fwd(x, window):
  blocks = _blocks(x, window)
  pooled = blocks.max(axis=_window_axes(window))
  is_max = blocks == jnp.expand_dims(pooled, _window_axes(window))
  first = jnp.min(jnp.where(is_max, _position(window), np.iinfo(np.int32).max),
                  axis=_window_axes(window))
  return pooled, first.astype(jnp.int8 if np.prod(window) <= 127 else jnp.int32)


def _block_max_bwd(window, first, grad):
  axes = _window_axes(window)
  hit = _position(window) == jnp.expand_dims(first.astype(jnp.int32), axes)
  blocks = jnp.where(hit, jnp.expand_dims(grad, axes), jnp.zeros((), grad.dtype))
  shape = [blocks.shape[0]] + [blocks.shape[axis - 1] * w for axis, w in zip(axes, window)]
  return (blocks.reshape(shape + [blocks.shape[-1]]),)


_block_max.defvjp(_block_max_fwd, _block_max_bwd)


# A 1-D convolution whose patch matrix has at most this many entries runs as one matmul.
_SMALL_PATCHES = 1 << 20


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None,
                         preferred_element_type=None):
  """`lax.conv_general_dilated`, with short 1-D convolutions computed as one patch matmul.

  A drop-in for `flax.linen.Conv(conv_general_dilated=...)`. XLA:CPU's convolution is slow when
  the padding is as long as the input or the input is a few steps long (measured, 2-core AMD
  EPYC, forward + both gradients: WaveRNN's 40-tap layer over 20 steps of 32 channels x 4800
  windows 1715 ms vs 450 ms as a matmul; SoundNet's last layer, 8 taps over 3 steps of 1024
  channels, 917 vs 24 ms; its 7th, 4 taps over 6 steps at stride 2, 213 vs 3 ms), while on long
  inputs it beats the patch matrix by 2-10x (WaveRNN over 40 steps: 191 vs 844 ms). So a 1-D
  NWC convolution (no dilation, no groups) becomes `patches @ kernel` when its padding is at
  least its input's length or its patch matrix has at most 2^20 entries; anything else, and
  every convolution on GPU/TPU (their vendor convolutions were not measured against this), goes
  to `lax.conv_general_dilated` unchanged.
  """
  plain = functools.partial(
      lax.conv_general_dilated, lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count, precision=precision,
      preferred_element_type=preferred_element_type)
  if (jax.default_backend() != "cpu" or lhs.ndim != 3 or feature_group_count != 1
      or any(d != 1 for d in lhs_dilation or (1,))
      or any(d != 1 for d in rhs_dilation or (1,))
      or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
      != lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NWC", "WIO", "NWC"))):
    return plain()
  (stride,), (taps, channels, _) = window_strides, rhs.shape
  length = lhs.shape[1]
  if isinstance(padding, str):
    padding = lax.padtype_to_pads((length,), (taps,), (stride,), padding)
  (before, after), = padding
  steps = (length + before + after - taps) // stride + 1
  batch = lhs.shape[0]
  if not isinstance(batch, int):  # a symbolic batch (jax.export): the rule needs its size
    return plain()
  if steps < 1 or (before + after < length and batch * steps * taps * channels > _SMALL_PATCHES):
    return plain()
  return _patch_conv(lhs, rhs, stride, before, after, steps, precision, preferred_element_type)


def _patch_conv(x, kernel, stride, before, after, steps, precision, preferred_element_type):
  """`[B, T, C]` x `[K, C, O]` -> `[B, steps, O]`: the K shifted, strided views of the padded
  input side by side, times the kernel as a `[K * C, O]` matrix."""
  taps, channels, features = kernel.shape
  x = jnp.pad(x, ((0, 0), (max(before, 0), max(after, 0)), (0, 0)))
  x = x[:, max(-before, 0):x.shape[1] - max(-after, 0)]
  views = [x[:, j:j + stride * (steps - 1) + 1:stride] for j in range(taps)]
  # One concatenate of [B, steps, 1, C] views rather than `jnp.stack`, which exporters such as
  # jax2onnx take as a primitive of its own.
  patches = jnp.concatenate([v[:, :, None] for v in views], axis=2)
  patches = patches.reshape(x.shape[0] * steps, taps * channels)
  out = jnp.matmul(patches, kernel.reshape(taps * channels, features), precision=precision,
                   preferred_element_type=preferred_element_type)
  return out.reshape(x.shape[0], steps, features)
