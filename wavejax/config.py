"""Default configuration shared by every `configs/<model>.py`, and the config-arg parser.

The defaults live in the package (not only in `configs/`) so that `configs/*.py` work from any
working directory and `wavejax.train_fold` can be called with `wavejax.config.base_config()`.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from wavejax import errors


def base_config() -> ml_collections.ConfigDict:
  """The paper's protocol (Sec. 4.1) on the built-in corpus, SimpleNet-CNN defaults."""
  config = ml_collections.ConfigDict()
  config.task = "emotion"  # "emotion" (4 classes), "gender" (2) or "label" (corpus label set)
  config.fold = config_dict.placeholder(int)  # None: every fold (cross_validate)
  config.seed = 0
  sample_rate = config_dict.FieldReference(16000)

  config.data = ml_collections.ConfigDict()
  config.data.dataset = "iemocap"
  config.data.root = config_dict.placeholder(str)  # None: generate and use the built-in corpus
  config.data.merge_excited = True    # IEMOCAP `exc` -> happy, as the paper's code
  config.data.missing_audio = "error"  # or "skip": labelled utterances without an audio file
  config.data.bad_audio = "error"     # or "skip": files that cannot be decoded (logged count)
  config.data.calm_as_neutral = False  # RAVDESS: calm joins neutral in the 4-class emotion task
  config.data.num_folds = 5           # speaker groups of corpora without sessions (not IEMOCAP)
  # A folds.json written by a previous run (folds.write_assignment): reuse its fold groups.
  config.data.fold_assignment = config_dict.placeholder(str)
  config.data.num_workers = config_dict.placeholder(int)  # decoding workers; None: every core
  config.data.sample_rate = sample_rate
  config.data.clip_seconds = 6.0      # pad or cut every utterance of a corpus on disk (paper: 6 s)
  config.data.cache_dir = config_dict.placeholder(str)
  config.data.val_size = 32           # validation utterances held out per fold (paper: 32)
  config.data.val_from = "test"       # "test" (paper) or "train"
  config.data.builtin = ml_collections.ConfigDict()
  config.data.builtin.seed = 0
  config.data.builtin.utterances_per_speaker = 40
  # Used instead of data.clip_seconds on the built-in corpus, whose utterances last 1.5-4.5 s:
  # padding them to 6 s would double the cost of the default run for nothing.
  config.data.builtin.clip_seconds = 3.0

  config.model = ml_collections.ConfigDict()
  config.model.name = "simplenet_cnn"
  config.model.sample_rate = sample_rate
  # "bfloat16": products in bfloat16 (AMX / tensor cores), parameters, batch norm statistics,
  # sums, logits and loss in float32. Not for LEAF. The gradient reaching the filters is the
  # least precise part (cosine ~0.86 to float32's for SimpleNet-CNN: batch norm's backward
  # subtracts nearly equal bfloat16 terms); see tests/test_mixed_precision.py.
  config.model.compute_dtype = "float32"
  config.model.frontend = ml_collections.ConfigDict()
  config.model.head = ml_collections.ConfigDict()

  config.train = ml_collections.ConfigDict()
  config.train.learning_rate = 1e-3   # the paper searches 1e-5, 1e-4, 1e-3
  config.train.lr_schedule = "constant"  # or "exponential": decays to 0.1x over the run (code)
  config.train.batch_size = 32
  config.train.eval_batch_size = 64
  config.train.num_epochs = 10      # the built-in corpus overfits after ~10 (paper code: 50)
  config.train.balanced_sampling = False
  config.train.select_metric = "wa"   # validation metric that picks the reported epoch: wa | ua
  config.train.checkpoint = True      # latest + best checkpoints under the workdir
  config.train.frontend_lr_multiplier = 1.0  # front-end learning rate = this x learning_rate
  # Before every evaluation, replace batch norm's running statistics by the population statistics
  # of the current weights on this many training batches (0: keep the running averages).
  config.train.precise_bn_batches = 0
  # Monitoring; fold_<k>/metrics.jsonl is written whenever there is a workdir.
  config.train.tensorboard = False       # scalars to fold_<k>/tensorboard (wavejax[tensorboard])
  config.train.track_change_rate = False  # Fig. 4: per-layer mean |dw/w| per epoch in the history
  config.train.filter_images_every = 0   # save the front-end filters every N epochs (0: never)
  # Behaviours of the paper's code that differ from its text (REFERENCE.md 1), off by default;
  # `faithful_to_original=True` turns all of them on (see `resolve`).
  config.train.double_softmax = False   # softmax output fed to a softmax cross-entropy
  config.train.reshuffle = True         # False: the same training order every epoch
  config.train.drop_last_eval_batch = False  # evaluate only whole eval batches
  config.faithful_to_original = False
  return config


# Fields added after workdirs were first written, with the value that reproduces the behaviour
# from before they existed: a stored config without one of them matches a config holding it.
ADDED_FIELDS = {
    "train.precise_bn_batches": 0,
    "model.compute_dtype": "float32",
}


def faithful_overrides() -> dict:
  """Field -> value that reproduce the paper's original code instead of its text."""
  return {
      "train.double_softmax": True,
      "train.reshuffle": False,
      "train.drop_last_eval_batch": True,
      "train.lr_schedule": "exponential",
  }


def set_field(config: ml_collections.ConfigDict, dotted: str, value) -> None:
  *parents, leaf = dotted.split(".")
  node = config
  for name in parents:
    node = node[name]
  node[leaf] = value


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config to train with: a copy with `faithful_to_original` applied when it is set."""
  config = ml_collections.ConfigDict(config.to_dict())
  if config.get("faithful_to_original", False):
    overrides = {**faithful_overrides(), **faithful_model_overrides(config.model.name)}
    for dotted, value in overrides.items():
      set_field(config, dotted, value)
  return config


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


def _first_layer_init(frontend: ml_collections.ConfigDict, init: str) -> None:
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
  _first_layer_init(frontend, "glorot")
  return frontend


def trigeorgis_frontend_config() -> ml_collections.ConfigDict:
  """Trigeorgis et al. 2016 per window: conv 40x20, pool 2, conv 40x40, channel pool 10."""
  frontend = ml_collections.ConfigDict()
  frontend.window_ms = 40.0
  frontend.features = 40
  frontend.kernel_sizes = (20, 40)
  frontend.pool = 2
  frontend.channel_pool = 10
  _first_layer_init(frontend, "glorot")
  return frontend


def soundnet_frontend_config() -> ml_collections.ConfigDict:
  """SoundNet-8 (Aytar et al. 2016) as the paper's code: whole waveform, 8 strided convolutions."""
  frontend = ml_collections.ConfigDict()
  frontend.features = (16, 32, 64, 128, 256, 512, 1024, 1401)
  frontend.kernel_sizes = (64, 32, 16, 8, 4, 4, 4, 8)
  frontend.strides = (2, 2, 2, 2, 2, 2, 2, 2)
  frontend.pools = (8, 8, 1, 1, 4, 1, 1, 1)  # max-pool after the conv; 1 = none
  frontend.norm = "batch"           # batch | affine | none, after every convolution
  _first_layer_init(frontend, "glorot")
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
  head.hidden = (64,)               # paper text; the paper's code used (128, 64)
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


def dense_head_config(dropout: float = 0.5) -> ml_collections.ConfigDict:
  """Flatten -> dense 64 (+ dropout) -> classes (SoundNet's head in the paper's code)."""
  head = ml_collections.ConfigDict()
  head.hidden = (64,)
  head.dropout = dropout
  return head


def faithful_model_overrides(model_name: str) -> dict:
  """Model field -> value that reproduce the paper's code instead of its text (REFERENCE Sec. 1).

  Keys are dotted paths from the config root (for `set_field`). Only the SimpleNet models have
  code to follow: the code's WaveRNN has no LSTM and no Trigeorgis stack, and its SoundNet and
  the two filter banks beyond the paper match the defaults, so those models get {}. Training
  behaviours of the code (double softmax, no reshuffling, decay, the head's L2 of 0.5) are in
  `faithful_overrides`.
  """
  frontend = {
      "model.frontend.activation": "relu",      # ReLU before the mean |.| pooling
      "model.frontend.compression": "none",     # raw energies into the head
      "model.frontend.input_norm": "affine",    # inference-mode BN on the waveform
  }
  cnn = {
      **frontend,
      # bandPassFilters_256_64_95.csv: fir1 edges 0.0001 + k * 0.95 / 64 of Nyquist
      "model.frontend.fir_low_hz": 0.8,
      "model.frontend.fir_high_hz": 7600.8,
      "model.head.kernel": (3, 3),
      "model.head.hidden": (128, 64),
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


def parse_arg(arg: str) -> dict:
  """Parses a config arg like `emotion,fold=2` or `task=gender,fold=1` into {task, fold}."""
  parsed = {}
  for item in filter(None, (part.strip() for part in (arg or "").split(","))):
    key, value = item.split("=", 1) if "=" in item else ("task", item)
    if key == "task":
      parsed["task"] = value
    elif key == "fold":
      try:
        parsed["fold"] = int(value)
      except ValueError:
        raise errors.ConfigError(f"config arg fold={value!r} is not an integer") from None
    else:
      raise errors.ConfigError(
          f"config arg {item!r} is not understood; use e.g. 'emotion,fold=2' or 'task=gender'")
  return parsed


def apply_arg(config: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
  for key, value in parse_arg(arg).items():
    setattr(config, key, value)
  return config
