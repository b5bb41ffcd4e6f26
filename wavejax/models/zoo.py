"""Named models assembled from a front-end and a head; `create_model(config.model)`.

The paper's models (Sec. 4.1, Table 1, Fig. 5) and two learnable filter banks beyond it:

  simplenet_cnn       SimpleNet front-end + 2-D CNN head (Sec. 3)
  simplenet_rnn       SimpleNet front-end + two LSTM(64) + dense 64 (Sec. 3, 4.1)
  specnet             SimpleNet front-end with FROZEN filters + the SimpleNet-CNN head (Sec. 4.1)
  wavernn             8 x (conv + max-pool) per 40 ms window + the SimpleNet-RNN head (Sec. 2, 4.1)
  wavernn_trigeorgis  Trigeorgis et al. 2016's two convolutions per window + the same LSTM head
  soundnet            SoundNet-8 on the whole waveform + dense 64 with dropout (Sec. 2, 4.1)
  sincnet             SincNet band-pass filters (Ravanelli & Bengio 2018) + the SimpleNet-CNN head
  leaf                LEAF (Zeghidour et al. 2021) + the SimpleNet-CNN head
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from wavejax import errors
from wavejax.models import frontends
from wavejax.models.heads import CNNHead, DenseClassifier, LSTMHead
from wavejax.models.leaf import LEAFFrontend
from wavejax.models.sincnet import SincNetFrontend


class Classifier(nn.Module):
  """`frontend` (waveforms -> [B, windows, features]) followed by `head` (-> logits)."""
  frontend: nn.Module
  head: nn.Module

  @nn.compact
  def __call__(self, waveforms: jax.Array, *, train: bool = False) -> jax.Array:
    return self.head(self.frontend(waveforms, train=train), train=train)


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config):
  """`config.compute_dtype`: the dtype of the models' products (bfloat16: mixed precision, with
  float32 parameters, normalisation statistics, accumulations, logits and loss)."""
  name = config.get("compute_dtype", "float32")
  if name not in COMPUTE_DTYPES:
    raise errors.ConfigError(f"config.model.compute_dtype={name!r}: choose one of "
                             f"{', '.join(COMPUTE_DTYPES)}")
  return COMPUTE_DTYPES[name]


def _first_layer_init(config) -> dict:
  """The first convolution's initialiser fields (`frontends.kernel_initializer`)."""
  f = config.frontend
  return dict(sample_rate=config.sample_rate, kernel_init=f.init, fir_scale=f.fir_scale,
              fir_low_hz=f.fir_low_hz, fir_high_hz=f.fir_high_hz)


def simplenet_frontend(config) -> frontends.SimpleNetFrontend:
  f = config.frontend
  return frontends.SimpleNetFrontend(
      num_filters=f.num_filters, kernel_size=f.kernel_size, window_ms=f.window_ms,
      activation=f.activation, padding=f.padding, trainable=f.trainable,
      compression=f.compression, method=f.method, input_norm=f.input_norm,
      dtype=compute_dtype(config), **_first_layer_init(config))


def wavernn_frontend(config) -> frontends.WaveRNNFrontend:
  f = config.frontend
  return frontends.WaveRNNFrontend(
      num_layers=f.num_layers, features=f.features, kernel_size=f.kernel_size, pool=f.pool,
      window_ms=f.window_ms, dtype=compute_dtype(config), **_first_layer_init(config))


def trigeorgis_frontend(config) -> frontends.TrigeorgisFrontend:
  f = config.frontend
  return frontends.TrigeorgisFrontend(
      features=f.features, kernel_sizes=tuple(f.kernel_sizes), pool=f.pool,
      channel_pool=f.channel_pool, window_ms=f.window_ms, dtype=compute_dtype(config),
      **_first_layer_init(config))


def soundnet_frontend(config) -> frontends.SoundNetFrontend:
  f = config.frontend
  return frontends.SoundNetFrontend(
      features=tuple(f.features), kernel_sizes=tuple(f.kernel_sizes), strides=tuple(f.strides),
      pools=tuple(f.pools), norm=f.norm, dtype=compute_dtype(config),
      **_first_layer_init(config))


def sincnet_frontend(config) -> SincNetFrontend:
  f = config.frontend
  return SincNetFrontend(
      num_filters=f.num_filters, kernel_size=f.kernel_size, window_ms=f.window_ms,
      sample_rate=config.sample_rate, fir_scale=f.fir_scale, fir_low_hz=f.fir_low_hz,
      fir_high_hz=f.fir_high_hz, min_low_hz=f.min_low_hz, min_band_hz=f.min_band_hz,
      activation=f.activation, padding=f.padding, compression=f.compression, method=f.method,
      dtype=compute_dtype(config))


def leaf_frontend(config) -> LEAFFrontend:
  f = config.frontend
  if compute_dtype(config) != jnp.float32:
    raise errors.ConfigError("config.model.compute_dtype: LEAF runs in float32 only (its PCEN "
                             "and Gaussian pooling need the range); set it to 'float32'")
  return LEAFFrontend(
      num_filters=f.num_filters, kernel_size=f.kernel_size, window_ms=f.window_ms,
      pool_ms=f.pool_ms, sample_rate=config.sample_rate, fir_scale=f.fir_scale,
      fir_low_hz=f.fir_low_hz, fir_high_hz=f.fir_high_hz, pool_init=f.pool_init,
      compression=f.compression)


def cnn_head(config, num_classes: int) -> CNNHead:
  h = config.head
  return CNNHead(num_classes=num_classes, features=h.features, num_layers=h.num_layers,
                 kernel=tuple(h.kernel), pool=tuple(h.pool), hidden=tuple(h.hidden),
                 dropout=h.dropout, norm=h.norm, dtype=compute_dtype(config))


def lstm_head(config, num_classes: int) -> LSTMHead:
  h = config.head
  return LSTMHead(num_classes=num_classes, units=tuple(h.units), scan_over=h.scan_over,
                  hidden=tuple(h.hidden), dropout=h.dropout, norm=h.norm,
                  dtype=compute_dtype(config))


def dense_head(config, num_classes: int) -> DenseClassifier:
  h = config.head
  return DenseClassifier(num_classes=num_classes, hidden=tuple(h.hidden), dropout=h.dropout,
                         dtype=compute_dtype(config))


def simplenet_cnn(config, num_classes: int) -> Classifier:
  """SimpleNet-CNN (Sec. 3, 4.1): the SimpleNet front-end and a small 2-D CNN head."""
  return Classifier(simplenet_frontend(config), cnn_head(config, num_classes))


def simplenet_rnn(config, num_classes: int) -> Classifier:
  """SimpleNet-RNN (Sec. 3, 4.1): the SimpleNet front-end and two LSTM(64) layers."""
  return Classifier(simplenet_frontend(config), lstm_head(config, num_classes))


def specnet(config, num_classes: int) -> Classifier:
  """SpecNet (Sec. 4.1): SimpleNet-CNN whose FIR filters are fixed, i.e. a magnitude spectrogram.

  "the only difference between SpecNet and SimpleNet-CNN is that SimpleNet-CNN has trainable
  convolutional filters": same front-end (filters, windows, mean |y| pooling), same head.
  """
  if config.frontend.trainable:
    raise errors.ConfigError(
        "config.model.frontend.trainable=True: SpecNet's filters are fixed; use "
        "configs/simplenet_cnn.py for trainable filters")
  return Classifier(simplenet_frontend(config), cnn_head(config, num_classes))


def wavernn(config, num_classes: int) -> Classifier:
  """WaveRNN as the paper built it (Sec. 2, 4.1): 8 x (conv + pool) per window, two LSTM(64)."""
  return Classifier(wavernn_frontend(config), lstm_head(config, num_classes))


def wavernn_trigeorgis(config, num_classes: int) -> Classifier:
  """Trigeorgis et al. 2016's per-window convolutions with the paper's two-LSTM(64) head."""
  return Classifier(trigeorgis_frontend(config), lstm_head(config, num_classes))


def soundnet(config, num_classes: int) -> Classifier:
  """SoundNet-8 (Aytar et al. 2016) from scratch (Sec. 4.1): conv stack, dense 64 + dropout."""
  return Classifier(soundnet_frontend(config), dense_head(config, num_classes))


def sincnet(config, num_classes: int) -> Classifier:
  """SincNet's filters (Ravanelli & Bengio 2018) in SimpleNet's place, SimpleNet-CNN head."""
  return Classifier(sincnet_frontend(config), cnn_head(config, num_classes))


def leaf(config, num_classes: int) -> Classifier:
  """LEAF (Zeghidour et al. 2021) in SimpleNet's place, SimpleNet-CNN head."""
  return Classifier(leaf_frontend(config), cnn_head(config, num_classes))


MODELS = {
    "simplenet_cnn": simplenet_cnn,
    "simplenet_rnn": simplenet_rnn,
    "specnet": specnet,
    "wavernn": wavernn,
    "wavernn_trigeorgis": wavernn_trigeorgis,
    "soundnet": soundnet,
    "sincnet": sincnet,
    "leaf": leaf,
}


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
