"""High-level layers on top of a front-end's `[batch, windows, features]` output (Sec. 2.2.4)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from wavejax import errors


class DenseClassifier(nn.Module):
  """ReLU dense layers with optional dropout, then a linear layer to class logits.

  Paper Sec. 4.1: "All fully-connected layers are identical with 64 units."
  """
  num_classes: int
  hidden: Sequence[int] = (64,)
  dropout: float = 0.0

  @nn.compact
  def __call__(self, features: jax.Array, *, train: bool) -> jax.Array:
    x = features.reshape(features.shape[0], -1)
    for units in self.hidden:
      x = nn.relu(nn.Dense(units)(x))
      if self.dropout > 0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


def normalize(x: jax.Array, norm: str, train: bool) -> jax.Array:
  """Batch normalisation over the last axis (running statistics at evaluation), or nothing."""
  if norm == "none":
    return x
  if norm == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
  raise errors.ConfigError(f"config.model.head.norm={norm!r}: choose 'batch' or 'none'")


class CNNHead(nn.Module):
  """SimpleNet-CNN's high-level layers (Sec. 3, 4.1).

  The `[windows, filters]` output is treated as a one-channel image; four identical 2-D
  convolutions (32 filters, kernel (2, 2), ReLU), each followed by 2x2 max pooling, extract
  time-frequency features, then `DenseClassifier`. The paper's code used 3x3 kernels and dense
  layers of 128 and 64 units with dropout 0.5: set `kernel=(3, 3)`, `hidden=(128, 64)`,
  `dropout=0.5`.

  `norm="batch"` puts a batch normalisation before every convolution, where the paper's code has
  its (inference-mode) BN layers; the first one normalises each front-end filter on its own, since
  band energies differ by orders of magnitude between low and high bands. `norm="none"` feeds
  the raw energies, as the paper's text describes.
  """
  num_classes: int
  features: int = 32
  num_layers: int = 4
  kernel: Sequence[int] = (2, 2)
  pool: Sequence[int] = (2, 2)
  hidden: Sequence[int] = (64,)
  dropout: float = 0.0
  norm: str = "batch"

  @nn.compact
  def __call__(self, features: jax.Array, *, train: bool) -> jax.Array:
    x = normalize(features, self.norm, train)[..., None]
    for layer in range(self.num_layers):
      if layer:
        x = normalize(x, self.norm, train)
      x = nn.relu(nn.Conv(self.features, tuple(self.kernel), padding="SAME")(x))
      x = nn.max_pool(x, tuple(self.pool), strides=tuple(self.pool), padding="SAME")
    return DenseClassifier(self.num_classes, tuple(self.hidden), self.dropout)(x, train=train)
