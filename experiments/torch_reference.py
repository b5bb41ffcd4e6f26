"""SimpleNet-CNN in PyTorch, layer for layer as wavejax builds it: the reference of the benchmark.

`experiments/benchmark.py` times `make_train_step` (through `experiments/torch_cases.py`) against
wavejax's `training.steps.train_step`: rows `torch/train_step/simplenet_cnn` in float32,
`torch-bf16/train_step/simplenet_cnn` under bfloat16 autocast, and the same two with the model
`torch.compile`d, on the device JAX runs on. The model is what a PyTorch user would write for
the same network, built from the same `config.model` (`wavejax.models.zoo.simplenet_cnn`):

  front-end  each 40 ms window zero-padded on its own ((K - 1) // 2 before, the rest after),
             `conv1d` with F kernels of K taps (a correlation, as `lax`), optional ReLU,
             mean |y| per window, log(1e-6 + energy) (`compression="log"`)
  head       batch norm of every filter over (batch, windows); the [windows, filters] image
             through `num_layers` x [batch norm (from the second on), 2-D conv with 'SAME'
             padding (flax: (k - 1) // 2 before), ReLU, max-pool 'SAME' (-inf padding)];
             flattened in NHWC order as flax; dense + ReLU (+ dropout) layers; dense to logits
  step       Adam (optax's defaults: b1 0.9, b2 0.999, eps 1e-8), weighted mean cross-entropy

`load_flax_variables` copies a wavejax model's parameters and batch-norm statistics, so both
frameworks start from the same weights; `logits_difference` checks the two forward passes agree.
The model runs on the device its parameters are on (`model.to(device)`, after loading); the train
step and the logits put their inputs there and autocast on that device's type ("cpu", "cuda").
Batch norm: momentum 1 - 0.9 and epsilon 1e-5 as `wavejax.models.layers`. Two differences remain:
flax computes the batch variance as E[x^2] - E[x]^2 (training-mode logits agree to ~1e-4, eval mode
to ~1e-6), and PyTorch updates the running variance with the unbiased batch variance.
Supported: `head.norm` "batch" or "none", `frontend.padding="window"`, `input_norm="none"`.

Needs torch (`pip install -e '.[bench]'`); nothing in wavejax imports this module.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wavejax.models import frontends, layers

BATCH_NORM = dict(eps=1e-5, momentum=1.0 - layers.BATCH_NORM_MOMENTUM)


def same_padding(size: int, window: int, stride: int) -> tuple[int, int]:
  """(before, after) of `lax`'s 'SAME' padding: output length ceil(size / stride)."""
  total = max((math.ceil(size / stride) - 1) * stride + window - size, 0)
  return total // 2, total - total // 2


class Frontend(nn.Module):
  """SimpleNet's windowed conv1d + mean |y| (+ log): `[B, T]` -> `[B, T // window, F]`."""

  def __init__(self, num_filters: int, kernel_size: int, window: int, activation: str,
               compression: str):
    super().__init__()
    self.weight = nn.Parameter(torch.zeros(num_filters, 1, kernel_size))
    self.bias = nn.Parameter(torch.zeros(num_filters))
    self.window, self.activation, self.compression = window, activation, compression

  def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
    batch, samples = waveforms.shape
    num_windows, taps = samples // self.window, self.weight.shape[-1]
    windows = waveforms[:, :num_windows * self.window].reshape(-1, 1, self.window)
    windows = F.pad(windows, ((taps - 1) // 2, taps - 1 - (taps - 1) // 2))
    y = F.conv1d(windows, self.weight, self.bias)
    if self.activation == "relu":
      y = F.relu(y)
    energy = y.abs().mean(-1).float().reshape(batch, num_windows, -1)
    return torch.log(energy + 1e-6) if self.compression == "log" else energy


class CNNHead(nn.Module):
  """`wavejax.models.heads.CNNHead` (norm "batch" or "none"): `[B, W, F]` -> logits."""

  def __init__(self, head, num_windows: int, num_filters: int, num_classes: int):
    super().__init__()
    batch_norm = head.norm == "batch"
    self.kernel, self.pool = tuple(head.kernel), tuple(head.pool)
    self.input_norm = nn.BatchNorm1d(num_filters, **BATCH_NORM) if batch_norm else nn.Identity()
    self.norms, self.convs = nn.ModuleList(), nn.ModuleList()
    height, width, channels = num_windows, num_filters, 1
    for layer in range(head.num_layers):
      self.norms.append(nn.BatchNorm2d(channels, **BATCH_NORM)
                        if batch_norm and layer else nn.Identity())
      self.convs.append(nn.Conv2d(channels, head.features, self.kernel))
      height, width = math.ceil(height / self.pool[0]), math.ceil(width / self.pool[1])
      channels = head.features
    dense, size = [], height * width * channels
    for units in head.hidden:
      dense += [nn.Linear(size, units), nn.ReLU()]
      dense += [nn.Dropout(head.dropout)] if head.dropout > 0 else []
      size = units
    self.dense = nn.Sequential(*dense, nn.Linear(size, num_classes))

  def forward(self, energies: torch.Tensor) -> torch.Tensor:
    x = self.input_norm(energies.transpose(1, 2)).transpose(1, 2)[:, None]  # [B, 1, W, F]
    for norm, conv in zip(self.norms, self.convs):
      x = F.relu(conv(F.pad(norm(x), _pads(x.shape[2:], self.kernel, (1, 1)))))
      x = F.pad(x, _pads(x.shape[2:], self.pool, self.pool), value=-math.inf)
      x = F.max_pool2d(x, self.pool, self.pool)
    return self.dense(x.permute(0, 2, 3, 1).flatten(1))  # NHWC order, as flax flattens


def _pads(sizes, window, stride) -> tuple[int, ...]:
  """`F.pad`'s argument (last axis first) for 'SAME' padding of the two spatial axes."""
  (top, bottom), (left, right) = (same_padding(n, w, s) for n, w, s in zip(sizes, window, stride))
  return left, right, top, bottom


class SimpleNetCNN(nn.Module):
  """The whole classifier: `Frontend` then `CNNHead`."""

  def __init__(self, model_config, num_classes: int, num_samples: int):
    super().__init__()
    f, head = model_config.frontend, model_config.head
    if f.padding != "window" or f.input_norm != "none" or head.norm not in ("batch", "none"):
      raise ValueError("torch_reference supports frontend.padding='window', input_norm='none' "
                       f"and head.norm batch|none; got {f.padding}, {f.input_norm}, {head.norm}")
    window = frontends.window_samples(f.window_ms, model_config.sample_rate)
    self.frontend = Frontend(f.num_filters, f.kernel_size, window, f.activation, f.compression)
    self.head = CNNHead(head, num_samples // window, f.num_filters, num_classes)

  def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
    return self.head(self.frontend(waveforms))


def _tensor(x) -> torch.Tensor:
  return torch.from_numpy(np.array(jax.device_get(x), np.float32))


@torch.no_grad()
def load_flax_variables(model: SimpleNetCNN, variables: dict) -> None:
  """Copies a wavejax SimpleNet-CNN's `{"params", "batch_stats"}` into `model`."""
  params, stats = variables["params"], variables.get("batch_stats", {})
  model.frontend.weight.copy_(_tensor(params["frontend"]["kernel"]).T[:, None, :])
  model.frontend.bias.copy_(_tensor(params["frontend"]["bias"]))
  head, head_stats = params["head"], stats.get("head", {})
  norms = [n for n in (model.head.input_norm, *model.head.norms) if not isinstance(n, nn.Identity)]
  for i, norm in enumerate(norms):
    norm.weight.copy_(_tensor(head[f"BatchNorm_{i}"]["scale"]))
    norm.bias.copy_(_tensor(head[f"BatchNorm_{i}"]["bias"]))
    norm.running_mean.copy_(_tensor(head_stats[f"BatchNorm_{i}"]["mean"]))
    norm.running_var.copy_(_tensor(head_stats[f"BatchNorm_{i}"]["var"]))
  for i, conv in enumerate(model.head.convs):
    conv.weight.copy_(_tensor(head[f"Conv_{i}"]["kernel"]).permute(3, 2, 0, 1))
    conv.bias.copy_(_tensor(head[f"Conv_{i}"]["bias"]))
  linears = [m for m in model.head.dense if isinstance(m, nn.Linear)]
  for i, linear in enumerate(linears):
    dense = head["DenseClassifier_0"][f"Dense_{i}"]
    linear.weight.copy_(_tensor(dense["kernel"]).T)
    linear.bias.copy_(_tensor(dense["bias"]))


def device_of(model: nn.Module) -> torch.device:
  """The device of a module's parameters."""
  return next(model.parameters()).device


def make_train_step(model: nn.Module, learning_rate: float, autocast: bool,
                    device: torch.device | str | None = None):
  """`step(waveforms, labels, weights) -> loss`: one Adam step on `device`, where the model and
  the inputs must be (found from the model's parameters when None), in bfloat16 autocast if
  asked. `model` may be a `torch.compile`d `SimpleNetCNN`. The step returns once its work is
  queued: a CUDA caller synchronises before reading the clock."""
  device = torch.device(device) if device is not None else device_of(model)
  optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, betas=(0.9, 0.999), eps=1e-8)

  def step(waveforms, labels, weights):
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
      logits = model(waveforms)
    losses = F.cross_entropy(logits.float(), labels, reduction="none")
    loss = (losses * weights).sum() / weights.sum().clamp(min=1.0)
    loss.backward()
    optimizer.step()
    return loss.detach()

  return step


@torch.no_grad()
def logits(model: SimpleNetCNN, waveforms: np.ndarray, train: bool = False,
           autocast: bool = False, device: torch.device | str | None = None) -> np.ndarray:
  """Float32 logits of `waveforms` (eval mode: running batch-norm statistics, no dropout),
  computed on `device`, where the model must be (found from its parameters when None)."""
  device = torch.device(device) if device is not None else device_of(model)
  model.train(train)
  inputs = torch.from_numpy(np.asarray(waveforms, np.float32)).to(device)
  with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
    out = model(inputs)
  return out.float().cpu().numpy()


def logits_difference(flax_model, variables: dict, model: SimpleNetCNN, waveforms: np.ndarray,
                      autocast: bool = False, device: torch.device | str | None = None) -> float:
  """Max |logit difference| between the flax model and `model` in eval mode on `waveforms`."""
  expected = np.asarray(flax_model.apply(variables, waveforms, train=False))
  got = logits(model, waveforms, autocast=autocast, device=device)
  return float(np.max(np.abs(got - expected)))
