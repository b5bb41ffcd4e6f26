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

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from wavejax import errors
from wavejax.models import frontends
from wavejax.models.heads import CNNHead, DenseClassifier, LSTMHead
from wavejax.models.leaf import LEAFFrontend, constrain_gabor, gabor_kernel
from wavejax.models.sincnet import SincNetFrontend, sinc_bank


class Classifier(nn.Module, kw_only=True):
  """`frontend` (waveforms -> [B, windows, features]) followed by `head` (-> logits).

  `precision` (`config.model.matmul_precision`) is the default precision of every matmul and
  convolution traced inside (their gradients inherit it; the front-end's custom gradients take it
  explicitly), so training, evaluation, predict and export all follow it.
  """
  frontend: nn.Module
  head: nn.Module
  precision: str | None = None

  @nn.compact
  def __call__(self, waveforms: jax.Array, *, train: bool = False) -> jax.Array:
    with precision_scope(self.precision):
      return self.head(self.frontend(waveforms, train=train), train=train)


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
MATMUL_PRECISIONS = ("default", "high", "highest")


def compute_dtype(config):
  """`config.compute_dtype`: the dtype of the models' products (bfloat16: mixed precision, with
  float32 parameters, normalisation statistics, accumulations, logits and loss)."""
  name = config.compute_dtype
  if name not in COMPUTE_DTYPES:
    raise errors.ConfigError(f"config.model.compute_dtype={name!r}: choose one of "
                             f"{', '.join(COMPUTE_DTYPES)}")
  return COMPUTE_DTYPES[name]


def matmul_precision(config) -> str | None:
  """`config.matmul_precision` as a `jax.default_matmul_precision` name; None for "default"
  (the backend's fastest: TF32 on NVIDIA GPUs, bfloat16 passes on TPUs)."""
  name = config.matmul_precision
  if name not in MATMUL_PRECISIONS:
    raise errors.ConfigError(f"config.model.matmul_precision={name!r}: choose one of "
                             f"{', '.join(MATMUL_PRECISIONS)}")
  return None if name == "default" else name


def precision_scope(precision: str | None):
  """A context in which matmuls and convolutions without an explicit precision use `precision`."""
  return contextlib.nullcontext() if precision is None else jax.default_matmul_precision(precision)


# Config fields whose module attribute has another name (a Flax module cannot have a field named
# `init`, its method).
_MODULE_NAMES = {"init": "kernel_init"}


def module_fields(section) -> dict:
  """A config section as a module's keyword arguments: names mapped, lists as tuples."""
  return {_MODULE_NAMES.get(name, name): tuple(value) if isinstance(value, list) else value
          for name, value in section.items()}


def build(cls, section, **fields):
  """Module `cls` from its config section (`wavejax.config.models`); `fields` (module attribute
  names) add to or replace the section's."""
  return cls(**{**module_fields(section), **fields})


def _frontend(cls, config, **extra):
  """`cls` built from `config.frontend`, with the model-wide sample rate and dtype."""
  return build(cls, config.frontend, sample_rate=config.sample_rate, dtype=compute_dtype(config),
               **extra)


def _head(cls, config, num_classes: int):
  return build(cls, config.head, num_classes=num_classes, dtype=compute_dtype(config))


def _classifier(frontend, head, config) -> Classifier:
  return Classifier(frontend=frontend, head=head, precision=matmul_precision(config))


def simplenet_cnn(config, num_classes: int) -> Classifier:
  """SimpleNet-CNN (Sec. 3, 4.1): the SimpleNet front-end and a small 2-D CNN head."""
  frontend = _frontend(frontends.SimpleNetFrontend, config, precision=matmul_precision(config))
  return _classifier(frontend, _head(CNNHead, config, num_classes), config)


def simplenet_rnn(config, num_classes: int) -> Classifier:
  """SimpleNet-RNN (Sec. 3, 4.1): the SimpleNet front-end and two LSTM(64) layers."""
  frontend = _frontend(frontends.SimpleNetFrontend, config, precision=matmul_precision(config))
  return _classifier(frontend, _head(LSTMHead, config, num_classes), config)


def specnet(config, num_classes: int) -> Classifier:
  """SpecNet (Sec. 4.1): SimpleNet-CNN whose FIR filters are fixed, i.e. a magnitude spectrogram.

  "the only difference between SpecNet and SimpleNet-CNN is that SimpleNet-CNN has trainable
  convolutional filters": same front-end (filters, windows, mean |y| pooling), same head.
  """
  if config.frontend.trainable:
    raise errors.ConfigError(
        "config.model.frontend.trainable=True: SpecNet's filters are fixed; use "
        "configs/simplenet_cnn.py for trainable filters")
  return simplenet_cnn(config, num_classes)


def wavernn(config, num_classes: int) -> Classifier:
  """WaveRNN as the paper built it (Sec. 2, 4.1): 8 x (conv + pool) per window, two LSTM(64)."""
  return _classifier(_frontend(frontends.WaveRNNFrontend, config),
                     _head(LSTMHead, config, num_classes), config)


def wavernn_trigeorgis(config, num_classes: int) -> Classifier:
  """Trigeorgis et al. 2016's per-window convolutions with the paper's two-LSTM(64) head."""
  return _classifier(_frontend(frontends.TrigeorgisFrontend, config),
                     _head(LSTMHead, config, num_classes), config)


def soundnet(config, num_classes: int) -> Classifier:
  """SoundNet-8 (Aytar et al. 2016) from scratch (Sec. 4.1): conv stack, dense 64 + dropout."""
  return _classifier(_frontend(frontends.SoundNetFrontend, config),
                     _head(DenseClassifier, config, num_classes), config)


def sincnet(config, num_classes: int) -> Classifier:
  """SincNet's filters (Ravanelli & Bengio 2018) in SimpleNet's place, SimpleNet-CNN head."""
  frontend = _frontend(SincNetFrontend, config, precision=matmul_precision(config))
  return _classifier(frontend, _head(CNNHead, config, num_classes), config)


def leaf(config, num_classes: int) -> Classifier:
  """LEAF (Zeghidour et al. 2021) in SimpleNet's place, SimpleNet-CNN head."""
  if compute_dtype(config) != jnp.float32:
    raise errors.ConfigError("config.model.compute_dtype: LEAF runs in float32 only (its PCEN "
                             "and Gaussian pooling need the range); set it to 'float32'")
  frontend = build(LEAFFrontend, config.frontend, sample_rate=config.sample_rate)
  return _classifier(frontend, _head(CNNHead, config, num_classes), config)


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
  """Builds the Flax module named by `config.name` from a model config (`config.model`).

  `num_classes` (set by the trainer from the task) overrides `config.num_classes`.
  """
  if config.name not in MODELS:
    raise errors.ConfigError(
        f"config.model.name={config.name!r} is not a model; choose one of {sorted(MODELS)}")
  if num_classes is None:
    if "num_classes" not in config:
      raise errors.ConfigError("config.model.num_classes is not set (or pass num_classes)")
    num_classes = config.num_classes
  try:
    return MODELS[config.name](config, num_classes)
  except TypeError as e:  # a field missing from, or unknown to, the config section
    raise errors.ConfigError(f"config.model ({config.name}): {e}; start from "
                             "wavejax.config.get_config(name) for every field") from e


def frontend_kernel(model: nn.Module, params: dict) -> np.ndarray:
  """The `[taps, filters]` kernel of the model's first filter bank, as numpy.

  SimpleNet/SpecNet: `frontend/kernel`; stacks (WaveRNN, SoundNet, Trigeorgis): the first
  single-channel convolution; SincNet and LEAF: their parametric filters rebuilt from the
  parameters (LEAF: the real part of the Gabor filters).

  Raises:
    ConfigError: when the model has no such filter bank.
  """
  frontend = params.get("frontend", params)
  if "kernel" in frontend and np.ndim(frontend["kernel"]) == 2:
    return np.asarray(frontend["kernel"], np.float64)
  convs = sorted((name for name in frontend if name.startswith("Conv_")),
                 key=lambda name: int(name.split("_")[1]))
  if convs:
    kernel = np.asarray(frontend[convs[0]]["kernel"], np.float64)
    if kernel.ndim == 3 and kernel.shape[1] == 1:
      return kernel[:, 0]
  module = getattr(model, "frontend", None)
  if {"low", "band"} <= set(frontend) and module is not None:
    f1, f2 = module.cutoffs(jnp.asarray(frontend["low"]), jnp.asarray(frontend["band"]))
    return np.asarray(sinc_bank(f1, f2, module.kernel_size), np.float64)
  if {"centre", "width"} <= set(frontend) and module is not None:
    mu, sigma = constrain_gabor(jnp.asarray(frontend["centre"]),
                                     jnp.asarray(frontend["width"]), module.kernel_size)
    kernel = np.asarray(gabor_kernel(mu, sigma, module.kernel_size), np.float64)
    return kernel.reshape(kernel.shape[0], -1)[:, :module.num_filters]  # the real parts
  raise errors.ConfigError(
      "the model's front-end has no single-channel filter bank to analyse (expected "
      "frontend/kernel, a first Conv_0 with one input channel, SincNet or LEAF parameters)")
