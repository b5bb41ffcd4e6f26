"""Small layers shared by front-ends and heads: normalisation choices (batch, affine, none)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from wavejax import errors

NORMS = ("batch", "affine", "none")
# Running statistics: new = BATCH_NORM_MOMENTUM * old + (1 - BATCH_NORM_MOMENTUM) * batch.
BATCH_NORM_MOMENTUM = 0.9


class Affine(nn.Module):
  """A learnable per-feature scale and offset: `x * scale / sqrt(1 + epsilon) + bias`.

  This is what the paper's code gets from `tf.layers.batch_normalization(x)` with its default
  `training=False` (REFERENCE Sec. 1): the moving statistics never leave mean 0 and variance 1, so
  the layer is a learnable affine map of its input. `epsilon` is TensorFlow's default (1e-3).
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
