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
  config.task = "emotion"             # "emotion" (4 classes) or "gender" (2)
  config.fold = config_dict.placeholder(int)  # None: every fold (cross_validate)
  config.seed = 0
  sample_rate = config_dict.FieldReference(16000)

  config.data = ml_collections.ConfigDict()
  config.data.dataset = "iemocap"
  config.data.root = config_dict.placeholder(str)  # None: generate and use the built-in corpus
  config.data.merge_excited = True    # IEMOCAP `exc` -> happy, as the paper's code
  config.data.missing_audio = "error"  # or "skip"
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
  config.model.frontend = ml_collections.ConfigDict()
  config.model.head = ml_collections.ConfigDict()

  config.train = ml_collections.ConfigDict()
  config.train.learning_rate = 1e-3   # the paper searches 1e-5, 1e-4, 1e-3
  config.train.lr_schedule = "constant"  # or "exponential": decays to 0.1x over the run (code)
  config.train.batch_size = 32
  config.train.eval_batch_size = 64
  config.train.num_epochs = 12      # the built-in corpus overfits after ~10 (paper code: 50)
  config.train.balanced_sampling = False
  config.train.select_metric = "wa"   # validation metric that picks the reported epoch: wa | ua
  config.train.checkpoint = True      # latest + best checkpoints under the workdir
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
  return frontend


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
