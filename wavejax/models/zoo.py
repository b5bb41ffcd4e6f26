"""Named models assembled from a front-end and a head; `create_model(config.model)`."""

from __future__ import annotations

import flax.linen as nn
import jax

from wavejax import errors
from wavejax.models.frontends import SimpleNetFrontend
from wavejax.models.heads import CNNHead


class Classifier(nn.Module):
  """`frontend` (waveforms -> [B, windows, features]) followed by `head` (-> logits)."""
  frontend: nn.Module
  head: nn.Module

  @nn.compact
  def __call__(self, waveforms: jax.Array, *, train: bool = False) -> jax.Array:
    return self.head(self.frontend(waveforms), train=train)


def simplenet_frontend(config) -> SimpleNetFrontend:
  f = config.frontend
  return SimpleNetFrontend(
      num_filters=f.num_filters, kernel_size=f.kernel_size, window_ms=f.window_ms,
      sample_rate=config.sample_rate, kernel_init=f.init, fir_scale=f.fir_scale,
      fir_low_hz=f.fir_low_hz, fir_high_hz=f.fir_high_hz, activation=f.activation,
      padding=f.padding, trainable=f.trainable, compression=f.compression, method=f.method)


def cnn_head(config, num_classes: int) -> CNNHead:
  h = config.head
  return CNNHead(num_classes=num_classes, features=h.features, num_layers=h.num_layers,
                 kernel=tuple(h.kernel), pool=tuple(h.pool), hidden=tuple(h.hidden),
                 dropout=h.dropout, norm=h.norm)


def simplenet_cnn(config, num_classes: int) -> Classifier:
  """SimpleNet-CNN (Sec. 3, 4.1): the SimpleNet front-end and a small 2-D CNN head."""
  return Classifier(simplenet_frontend(config), cnn_head(config, num_classes))


MODELS = {"simplenet_cnn": simplenet_cnn}


def create_model(config, num_classes: int | None = None) -> nn.Module:
  """Builds the Flax module named by `config.name` from a model config.

  `num_classes` (set by the trainer from the task) overrides `config.num_classes`.
  """
  if config.name not in MODELS:
    raise errors.ConfigError(
        f"config.model.name={config.name!r} is not a model; choose one of {sorted(MODELS)}")
  if num_classes is None:
    if "num_classes" not in config:
      raise errors.ConfigError("config.model.num_classes is not set (or pass num_classes)")
    num_classes = config.num_classes
  return MODELS[config.name](config, num_classes)
