"""Each model's config section: `config.model.frontend` and `config.model.head` of every zoo model.

Every default of a model lives here, once: the modules (`wavejax.models`) are built from these
sections field by field (`wavejax.models.zoo`), and have no defaults of their own.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def simplenet_frontend_config() -> ml_collections.ConfigDict:
  """SimpleNet front-end (Sec. 3, 4.1): 64 FIR band-pass kernels of 256 taps per 40 ms window."""
  frontend = ml_collections.ConfigDict()
  frontend.num_filters = 64
  frontend.kernel_size = 256
  frontend.window_ms = 40.0
  frontend.init = "fir"             # fir | sine | glorot
  frontend.fir_scale = "linear"     # linear | mel | speech
  frontend.fir_low_hz = 0.0
  frontend.fir_high_hz = config_dict.placeholder(float)  # None: Nyquist; paper code: 0.95 x Nyquist
  frontend.activation = "none"      # none | relu (paper code)
  frontend.padding = "window"       # window (each window padded alone, paper) | signal
  frontend.trainable = True
  frontend.compression = "log"      # log | none (paper text: raw mean |y|)
  frontend.method = "auto"
  frontend.input_norm = "none"      # none | affine (paper code: inference-mode BN on the waveform)
  return frontend


def first_layer_init(frontend: ml_collections.ConfigDict, init: str) -> None:
  """Initialiser fields of a stack's first, single-channel (FIR-like) convolution."""
  frontend.init = init              # glorot (Xavier, paper Sec. 4.1) | fir | sine
  frontend.fir_scale = "linear"     # band layout when init="fir": linear | mel | speech
  frontend.fir_low_hz = 0.0
  frontend.fir_high_hz = config_dict.placeholder(float)  # None: Nyquist


def wavernn_frontend_config() -> ml_collections.ConfigDict:
  """The paper's WaveRNN front-end (Sec. 2, 4.1): per window 8 x (conv 32 x 40 + max-pool 2)."""
  frontend = ml_collections.ConfigDict()
  frontend.window_ms = 40.0
  frontend.num_layers = 8
  frontend.features = 32
  frontend.kernel_size = 40
  frontend.pool = 2
  first_layer_init(frontend, "glorot")
  return frontend


def trigeorgis_frontend_config() -> ml_collections.ConfigDict:
  """Trigeorgis et al. 2016 per window: conv 40x20, pool 2, conv 40x40, channel pool 10."""
  frontend = ml_collections.ConfigDict()
  frontend.window_ms = 40.0
  frontend.features = 40
  frontend.kernel_sizes = (20, 40)
  frontend.pool = 2
  frontend.channel_pool = 10
  first_layer_init(frontend, "glorot")
  return frontend


def soundnet_frontend_config() -> ml_collections.ConfigDict:
  """SoundNet-8 (Aytar et al. 2016) as the paper's code: whole waveform, 8 strided convolutions."""
  frontend = ml_collections.ConfigDict()
  frontend.features = (16, 32, 64, 128, 256, 512, 1024, 1401)
  frontend.kernel_sizes = (64, 32, 16, 8, 4, 4, 4, 8)
  frontend.strides = (2, 2, 2, 2, 2, 2, 2, 2)
  frontend.pools = (8, 8, 1, 1, 4, 1, 1, 1)  # max-pool after the conv; 1 = none
  frontend.norm = "batch"           # batch | affine | none, after every convolution
  first_layer_init(frontend, "glorot")
  return frontend


def sincnet_frontend_config() -> ml_collections.ConfigDict:
  """SincNet filters (Ravanelli & Bengio 2018) per 40 ms window, pooled as SimpleNet (mean |y|)."""
  frontend = ml_collections.ConfigDict()
  frontend.num_filters = 64         # as SimpleNet (SincNet: 80), so the CNN head is the same
  frontend.kernel_size = 251        # SincNet's
  frontend.window_ms = 40.0
  frontend.fir_scale = "mel"        # initial band layout: mel (SincNet) | linear | speech
  frontend.fir_low_hz = 30.0
  frontend.fir_high_hz = config_dict.placeholder(float)  # None: Nyquist - min_low - min_band
  frontend.min_low_hz = 50.0
  frontend.min_band_hz = 50.0
  frontend.activation = "none"
  frontend.padding = "window"
  frontend.compression = "log"
  frontend.method = "auto"
  return frontend


def leaf_frontend_config() -> ml_collections.ConfigDict:
  """LEAF (Zeghidour et al. 2021): Gabor filters, |.|^2, Gaussian pooling per 40 ms, PCEN."""
  frontend = ml_collections.ConfigDict()
  frontend.num_filters = 64         # as SimpleNet (LEAF: 40), so the CNN head is the same
  frontend.kernel_size = 401        # LEAF's 25 ms
  frontend.window_ms = 40.0         # pooling stride (LEAF: 10 ms)
  frontend.pool_ms = 100.0          # Gaussian pooling length, 2.5 strides as LEAF (25 ms)
  frontend.fir_scale = "mel"        # initial Gabor centres and widths
  frontend.fir_low_hz = 60.0
  frontend.fir_high_hz = 7800.0
  frontend.pool_init = 0.4
  frontend.compression = "pcen"     # pcen | log | none
  return frontend


def cnn_head_config() -> ml_collections.ConfigDict:
  """SimpleNet-CNN's head (Sec. 3, 4.1): 4 x (conv 32 + max-pool 2x2), dense 64."""
  head = ml_collections.ConfigDict()
  head.features = 32                # four identical 2-D conv layers of 32 filters
  head.num_layers = 4
  head.kernel = (2, 2)              # paper text; the paper's code used (3, 3)
  head.pool = (2, 2)
  head.hidden = (64,)               # paper text and code (the code adds dropout 0.5)
  head.dropout = 0.0                # paper's code: 0.5
  head.norm = "batch"               # batch | affine (paper code: inference-mode BN) | none
  return head


def lstm_head_config() -> ml_collections.ConfigDict:
  """SimpleNet-RNN's and WaveRNN's head (Sec. 4.1): two LSTM(64), dense 64."""
  head = ml_collections.ConfigDict()
  head.units = (64, 64)
  head.scan_over = "time"           # time (paper text) | filters (paper code)
  head.hidden = (64,)               # paper text (all dense layers of 64 units); code: ()
  head.dropout = 0.0
  head.norm = "batch"               # before the first LSTM: batch | affine (paper code) | none
  return head


def dense_head_config() -> ml_collections.ConfigDict:
  """Flatten -> dense 64 (+ dropout) -> classes (SoundNet's head in the paper's code)."""
  head = ml_collections.ConfigDict()
  head.hidden = (64,)
  head.dropout = 0.5
  return head


def faithful_model_overrides(model_name: str) -> dict:
  """Model field -> value that reproduce the paper's code instead of its text.

  See docs/reference.md#switches-that-reproduce-the-code.

  Keys are dotted paths from the config root (for `set_field`). Only the SimpleNet models have
  code to follow: the code's WaveRNN has no LSTM and no Trigeorgis stack, and its SoundNet and
  the two filter banks beyond the paper match the defaults, so those models get {}. Training
  behaviours of the code (double softmax, no reshuffling, decay, evaluation in whole batches of
  32) are in `faithful_overrides`.
  """
  frontend = {
      "model.frontend.activation": "relu",      # ReLU before the mean |.| pooling
      "model.frontend.compression": "none",     # raw energies into the head
      "model.frontend.input_norm": "affine",    # inference-mode BN on the waveform
      # Both models load the code's filter file: fir1 edges 0.0001 + k * 0.95 / 64 of Nyquist
      "model.frontend.fir_low_hz": 0.8,
      "model.frontend.fir_high_hz": 7600.8,
  }
  cnn = {
      **frontend,
      "model.head.kernel": (3, 3),            # one hidden Dense(64), as the default
      "model.head.dropout": 0.5,
      "model.head.norm": "affine",
  }
  rnn = {
      **frontend,
      "model.head.scan_over": "filters",
      "model.head.hidden": (),
      "model.head.norm": "affine",
  }
  return {"simplenet_cnn": cnn, "specnet": cnn, "simplenet_rnn": rnn}.get(model_name, {})


# name -> (frontend section, head section, fields of the whole config that the model changes)
MODELS = {
    "simplenet_cnn": (simplenet_frontend_config, cnn_head_config, {}),
    "simplenet_rnn": (simplenet_frontend_config, lstm_head_config, {}),
    "specnet": (simplenet_frontend_config, cnn_head_config, {"model.frontend.trainable": False}),
    "wavernn": (wavernn_frontend_config, lstm_head_config, {}),
    "wavernn_trigeorgis": (trigeorgis_frontend_config, lstm_head_config, {}),
    # Precise batch norm: SoundNet's running averages made it predict one class in eval mode.
    "soundnet": (soundnet_frontend_config, dense_head_config, {"train.precise_bn_batches": 16}),
    "sincnet": (sincnet_frontend_config, cnn_head_config, {}),
    "leaf": (leaf_frontend_config, cnn_head_config, {}),
}
