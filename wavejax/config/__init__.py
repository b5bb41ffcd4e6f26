"""Configuration: the protocol's defaults, every model's section (`models.py`), the size presets
(`presets.py`) and the config arg (`"emotion,fold=2,preset=smoke"`).

`get_config(model, arg)` builds a model's whole config from the installed package, so
`configs/<model>.py` (the files passed to `--config=`) and Python users get the same defaults.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from wavejax import errors
from wavejax.config import models, presets
from wavejax.data import pipeline


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
  # Precision of every float32 matmul and convolution of the model (training, evaluation,
  # predict and export): "default" (fastest: TF32 on NVIDIA GPUs, bfloat16 passes on TPUs,
  # float32 on CPUs), "high" or "highest" (float32 on every backend). See docs/performance.md.
  config.model.matmul_precision = "default"
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
  # Behaviours of the paper's code that differ from its text (docs/reference.md, "Switches that
  # reproduce the code"), off by default;
  # `faithful_to_original=True` turns all of them on (see `resolve`).
  config.train.augment = augment_config()
  # Bit-reproducible GPU kernels (XLA's deterministic ops); no effect on CPU (always deterministic).
  config.train.deterministic = True
  # Gather batches on the device from the fold's clips put there once: "auto" (on GPUs and TPUs
  # when the clips fit in a fraction of the device's memory), "always" or "never".
  config.train.data_on_device = "auto"
  config.train.profile_steps = 0  # > 0: a JAX profiler trace of that many steps in fold_<k>/profile
  config.train.double_softmax = False   # softmax output fed to a softmax cross-entropy
  config.train.reshuffle = True         # False: the same training order every epoch
  config.train.drop_last_eval_batch = False  # evaluate only whole eval batches
  config.faithful_to_original = False
  return config


def augment_config() -> ml_collections.ConfigDict:
  """`config.train.augment`: waveform augmentations inside the train step, every one off."""
  section = ml_collections.ConfigDict()
  section.gain_db = 0.0        # random gain in [-gain_db, +gain_db] dB
  section.shift_seconds = 0.0  # zero-filled time shift in [-s, +s] seconds
  section.noise_snr_db = ()    # (low, high): additive noise at an SNR uniform in [low, high] dB
  section.noise_dir = config_dict.placeholder(str)  # noise recordings; None: white noise
  section.speed = 0.0          # speed factor in [1 - speed, 1 + speed] (0.1: +-10 %)
  section.mixup_alpha = 0.0    # mixup with Beta(alpha, alpha) weights (0.2 is common)
  return section


# Fields added after workdirs were first written, with the value that reproduces the behaviour
# from before they existed: a stored config without one of them matches a config holding it.
ADDED_FIELDS = {
    "train.precise_bn_batches": 0,
    "model.compute_dtype": "float32",
    "model.matmul_precision": "default",
    "train.augment": {"gain_db": 0.0, "shift_seconds": 0.0, "noise_snr_db": [],
                      "noise_dir": None, "speed": 0.0, "mixup_alpha": 0.0},
    "train.deterministic": True,  # runs before it existed were deterministic on CPU
    "train.data_on_device": "auto",
    "train.profile_steps": 0,
}


def with_added_fields(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` (e.g. read from an older workdir's config.json) with every `ADDED_FIELDS` field it
  lacks set to the value that reproduces its behaviour."""
  for dotted, value in ADDED_FIELDS.items():
    *parents, leaf = dotted.split(".")
    node = config
    for name in parents:
      node = node[name]
    if leaf not in node:
      node[leaf] = value
  return config


def faithful_overrides() -> dict:
  """Field -> value that reproduce the paper's original code instead of its text."""
  return {
      "train.double_softmax": True,
      "train.reshuffle": False,
      "train.drop_last_eval_batch": True,
      "train.lr_schedule": "exponential",
      "train.eval_batch_size": 32,  # the code evaluates whole batches of 32
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
    overrides = {**faithful_overrides(), **models.faithful_model_overrides(config.model.name)}
    apply_fields(config, overrides)
  return config


def get_config(model: str = "simplenet_cnn", arg: str = "") -> ml_collections.ConfigDict:
  """The whole config of zoo model `model` (see `models.MODELS`), with the config arg applied."""
  if model not in models.MODELS:
    raise errors.ConfigError(f"no model config {model!r}; choose one of {sorted(models.MODELS)}")
  frontend, head, changes = models.MODELS[model]
  config = base_config()
  config.model.name = model
  config.model.frontend = frontend()
  config.model.head = head()
  for dotted, value in changes.items():
    set_field(config, dotted, value)
  return apply_arg(config, arg)


def parse_arg(arg: str) -> dict:
  """Parses a config arg like `emotion,fold=2,preset=smoke` or `task=gender` into
  {task, fold, preset}."""
  parsed = {}
  for item in filter(None, (part.strip() for part in (arg or "").split(","))):
    key, value = item.split("=", 1) if "=" in item else ("task", item)
    if key in ("task", "preset"):
      parsed[key] = value
    elif key == "fold":
      try:
        parsed["fold"] = int(value)
      except ValueError:
        raise errors.ConfigError(f"config arg fold={value!r} is not an integer") from None
    else:
      raise errors.ConfigError(f"config arg {item!r} is not understood; use e.g. "
                               "'emotion,fold=2', 'task=gender' or 'emotion,preset=smoke'")
  return parsed


def apply_arg(config: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
  parsed = parse_arg(arg)
  if "preset" in parsed:
    apply_fields(config, presets.fields(parsed.pop("preset"), presets.MAIN))
  for key, value in parsed.items():
    setattr(config, key, value)
  return config


def apply_fields(config: ml_collections.ConfigDict, fields: dict) -> ml_collections.ConfigDict:
  """Sets every dotted field of `fields` (e.g. a preset's) on `config`; returns it."""
  for dotted, value in fields.items():
    set_field(config, dotted, value)
  return config


def check_values(config) -> None:
  """Rejects values that would otherwise fail late (after an epoch) or train silently wrong."""
  lr = config.train.learning_rate
  if not isinstance(lr, (int, float)) or not 0 < lr < float("inf"):
    raise errors.ConfigError(f"config.train.learning_rate={lr!r} must be a positive number")
  if config.train.select_metric not in ("wa", "ua"):
    raise errors.ConfigError(
        f"config.train.select_metric={config.train.select_metric!r}: choose 'wa' or 'ua'")
  rate = config.data.sample_rate
  if not isinstance(rate, int) or rate < 1:
    raise errors.ConfigError(f"config.data.sample_rate={rate!r} must be a positive integer (Hz)")
  seconds = pipeline.clip_seconds(config.data)
  field = "data.builtin.clip_seconds" if config.data.root is None else "data.clip_seconds"
  if not isinstance(seconds, (int, float)) or not 0 < seconds < float("inf"):
    raise errors.ConfigError(f"config.{field}={seconds!r} must be a positive number of seconds")
