"""High-level layers on top of a front-end's `[batch, windows, features]` output (Sec. 2.2.4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wavejax import errors
from wavejax.models.layers import max_pool, normalize

__all__ = ["CNNHead", "DenseClassifier", "LSTMHead", "normalize"]

SCAN_AXES = ("time", "filters")


class DenseClassifier(nn.Module, kw_only=True):
  """Flatten, ReLU dense layers with optional dropout, then a linear layer to class logits.

  Paper Sec. 4.1: "All fully-connected layers are identical with 64 units."
  """
  num_classes: int
  hidden: Sequence[int]
  dropout: float
  dtype: Any = jnp.float32  # of the products; parameters and the logits stay float32

  @nn.compact
  def __call__(self, features: jax.Array, *, train: bool) -> jax.Array:
    x = features.reshape(features.shape[0], -1)
    for units in self.hidden:
      x = nn.relu(nn.Dense(units, dtype=self.dtype)(x))
      if self.dropout > 0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class CNNHead(nn.Module, kw_only=True):
  """SimpleNet-CNN's high-level layers (Sec. 3, 4.1).

  The `[windows, filters]` output is treated as a one-channel image; four identical 2-D
  convolutions (32 filters, kernel (2, 2), ReLU), each followed by 2x2 max pooling, extract
  time-frequency features, then `DenseClassifier`. The paper's code used 3x3 kernels and one
  dense layer of 64 units with dropout 0.5: set `kernel=(3, 3)`, `dropout=0.5`.

  `norm="batch"` puts a batch normalisation before every convolution, where the paper's code has
  its (inference-mode) BN layers; the first one normalises each front-end filter on its own, since
  band energies differ by orders of magnitude between low and high bands. `norm="affine"` is the
  paper code's behaviour: its BN layers run in inference mode and act as learnable affine maps
  (`layers.Affine`) over the image's channels, so the first one is a single scale and offset of
  the one-channel spectrogram image. `norm="none"` feeds the raw energies, as the paper's text
  describes.
  """
  num_classes: int
  features: int
  num_layers: int
  kernel: Sequence[int]
  pool: Sequence[int]
  hidden: Sequence[int]
  dropout: float
  norm: str
  dtype: Any = jnp.float32  # of the products; parameters and normalisation stay float32

  @nn.compact
  def __call__(self, features: jax.Array, *, train: bool) -> jax.Array:
    if self.norm == "affine":
      x = normalize(features[..., None], self.norm, train)
    else:
      x = normalize(features, self.norm, train)[..., None]
    for layer in range(self.num_layers):
      if layer:
        x = normalize(x, self.norm, train)
      x = nn.relu(nn.Conv(self.features, tuple(self.kernel), padding="SAME", dtype=self.dtype)(x))
      x = max_pool(x, self.pool, padding="SAME")
    return DenseClassifier(num_classes=self.num_classes, hidden=tuple(self.hidden),
                           dropout=self.dropout, dtype=self.dtype)(
        x, train=train)


def scan_sequence(features: jax.Array, scan_over: str) -> jax.Array:
  """The sequence an RNN scans: `[B, windows, F]` as is ("time") or transposed ("filters")."""
  if scan_over == "time":
    return features
  if scan_over == "filters":
    return features.swapaxes(1, 2)
  raise errors.ConfigError(
      f"config.model.head.scan_over={scan_over!r}: choose one of {', '.join(SCAN_AXES)}")


class LSTMHead(nn.Module, kw_only=True):
  """SimpleNet-RNN's and WaveRNN's high-level layers (Sec. 3, 4.1): LSTMs, then dense layers.

  "two LSTM layers with 64 units" (tanh) scan the front-end's windows in time order; the last
  output of the last LSTM goes to `DenseClassifier` (dense 64, ReLU, then the classes). The
  features of every step are normalised first (`norm`, as `CNNHead`; the paper's code has a BN
  layer in inference mode, i.e. "affine", before its first LSTM).

  `scan_over="filters"` reproduces the paper's code (testNetSimpleRNN.py; see
  docs/reference.md#simplenet-rnn-head-the-lstms-scan-the-filters): it transposes the
  `[windows, filters]` output, so the LSTMs scan over the filter channels with the time frames as
  the features of each step. Its code also has no hidden dense layer (`hidden=()`).
  """
  num_classes: int
  units: Sequence[int]
  scan_over: str
  hidden: Sequence[int]
  dropout: float
  norm: str
  dtype: Any = jnp.float32  # of the products; parameters and normalisation stay float32

  @nn.compact
  def __call__(self, features: jax.Array, *, train: bool) -> jax.Array:
    x = normalize(scan_sequence(features, self.scan_over), self.norm, train)
    for units in self.units:
      x = nn.RNN(nn.OptimizedLSTMCell(units, dtype=self.dtype))(x)
    return DenseClassifier(num_classes=self.num_classes, hidden=tuple(self.hidden),
                           dropout=self.dropout, dtype=self.dtype)(
        x[:, -1], train=train)
