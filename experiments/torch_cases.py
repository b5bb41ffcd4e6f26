"""The PyTorch rows of `experiments/benchmark.py`, run on the device JAX runs on.

The device (`current_device`): CUDA when JAX's default backend is "gpu" and PyTorch sees a CUDA
device, the CPU otherwise; a PyTorch row and a wavejax row are compared only when their device
labels (`wavejax.perf.devices`) are equal, so a CPU-only PyTorch wheel on a GPU machine gives rows
that are reported but not set against JAX's. Every timed call synchronises the device before it
returns (`torch.cuda.synchronize()`), and bfloat16 rows autocast on the device's own type.

  frontend_step     SimpleNet's front-end (conv1d per window, mean |y|), forward or forward +
                    parameter gradient, float32 or bfloat16 autocast
  train_step        SimpleNet-CNN's train step (`experiments/torch_reference.py`) from the JAX
                    model's initial weights, eager or `torch.compile`d
  matmul_peaks      the square-matmul FLOP/s of the device, float32 and bfloat16

torch is imported inside the functions: `experiments.benchmark` imports this module whether or
not torch is installed, and skips the rows when it is not (`available`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable

import jax
import numpy as np

from wavejax.perf import devices, timing


class CompileFailed(Exception):
  """`torch.compile` is missing or failed on this model; the message is one line."""


@dataclasses.dataclass(frozen=True)
class TorchDevice:
  """Where the PyTorch rows run: `type` as torch spells it ("cpu", "cuda"), `label` as
  `wavejax.perf.devices` does ("cpu: <model>", "gpu: NVIDIA H200")."""
  type: str
  label: str


@dataclasses.dataclass
class TorchStep:
  """A prepared PyTorch call: `run()` executes it once and returns when the device is done."""
  run: Callable[[], object]
  compile_s: float | None
  dtype: str
  device: str
  note: str
  extra: dict = dataclasses.field(default_factory=dict)


def available() -> bool:
  return importlib.util.find_spec("torch") is not None


def select_device(jax_backend: str, cuda_available: bool,
                  gpu_name: Callable[[], str]) -> TorchDevice:
  """The device of the PyTorch rows for JAX on `jax_backend`: CUDA only when JAX is on a GPU and
  PyTorch has CUDA (`gpu_name()` names it), else the CPU."""
  if jax_backend == "gpu" and cuda_available:
    return TorchDevice("cuda", devices.device_label("gpu", gpu_name()))
  return TorchDevice("cpu", devices.device_label("cpu"))


def current_device() -> TorchDevice:
  import torch  # pylint: disable=import-outside-toplevel
  return select_device(jax.default_backend(), torch.cuda.is_available(),
                       lambda: torch.cuda.get_device_name(0))


def synchronize(device: TorchDevice) -> None:
  """Waits for the device's queued work (a no-op on the CPU, where calls are synchronous)."""
  if device.type == "cuda":
    import torch  # pylint: disable=import-outside-toplevel
    torch.cuda.synchronize()


def note(device: TorchDevice) -> str:
  import torch  # pylint: disable=import-outside-toplevel
  if device.type == "cuda":
    return f"{torch.__version__}, CUDA {torch.version.cuda}"
  return f"{torch.__version__}, {torch.get_num_threads()} threads"


def environment(device: TorchDevice) -> dict:
  import torch  # pylint: disable=import-outside-toplevel
  return dict(torch=torch.__version__, torch_threads=torch.get_num_threads(),
              torch_device=device.label, torch_cuda=torch.version.cuda)


def _blocking(fn: Callable[[], object], device: TorchDevice) -> Callable[[], object]:
  def run():
    out = fn()
    synchronize(device)
    return out
  return run


def matmul_peaks(n: int, repeats: int, seed: int, device: TorchDevice) -> dict[str, float]:
  """FLOP/s of `[n, n] @ [n, n]` on `device` in float32 and bfloat16 (PyTorch's defaults: full
  float32 matmuls on CUDA unless TF32 is allowed), median of `repeats` after a warm-up."""
  import torch  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  a, b = (torch.from_numpy(rng.standard_normal((n, n), np.float32)).to(device.type)
          for _ in range(2))
  peaks = {}
  for name, dtype in (("torch_f32", torch.float32), ("torch_bf16", torch.bfloat16)):
    x, y = a.to(dtype), b.to(dtype)
    seconds = timing.median_seconds(_blocking(lambda x=x, y=y: x @ y, device), repeats)
    peaks[name] = 2.0 * n**3 / seconds
  return peaks


def frontend_step(waveforms: np.ndarray, *, windows: int, window: int, taps: int, filters: int,
                  activation: str, seed: int, loss_weights: np.ndarray, autocast: bool,
                  gradient: bool, device: TorchDevice) -> TorchStep:
  """SimpleNet's front-end as a PyTorch user writes it: every window zero-padded on its own,
  `conv1d` with `filters` kernels, optional ReLU, mean |y|; with `gradient`, the loss
  sum(energy * loss_weights) and its parameter gradient (no input gradient)."""
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  on = device.type
  batch = waveforms.shape[0]
  waves = torch.from_numpy(np.ascontiguousarray(waveforms, np.float32)).to(on)
  weight = (torch.randn(filters, 1, taps) / taps**0.5).to(on).requires_grad_(gradient)
  bias = torch.zeros(filters, device=on, requires_grad=gradient)
  cotangent = torch.from_numpy(np.asarray(loss_weights, np.float32)).to(on)
  before = (taps - 1) // 2

  def frontend():
    frames = waves[:, :windows * window].reshape(-1, 1, window)
    frames = F.pad(frames, (before, taps - 1 - before))
    with torch.autocast(device_type=on, dtype=torch.bfloat16, enabled=autocast):
      y = F.conv1d(frames, weight, bias)
      if activation == "relu":
        y = torch.relu(y)
      energy = y.abs().mean(-1)
    return energy.float().reshape(batch, windows, filters)

  def forward():
    with torch.no_grad():
      return frontend()

  def forward_backward():
    weight.grad, bias.grad = None, None
    loss = (frontend() * cotangent).sum()
    loss.backward()
    return loss

  return TorchStep(_blocking(forward_backward if gradient else forward, device), None,
                   "bfloat16" if autocast else "float32", device.label, note(device))


def train_step(setup, waveforms: np.ndarray, *, num_classes: int, seed: int, autocast: bool,
               compiled: bool, device: TorchDevice) -> TorchStep:
  """SimpleNet-CNN's train step in PyTorch from the JAX model's initial weights (`setup`: the
  benchmark's `TrainSetup`: config, flax model, state, batch). The largest |logit| difference
  to the JAX model in eval mode is measured before any step (JSON: max_abs_logit_diff).

  With `compiled`, the model is `torch.compile`d (forward and, through AOTAutograd, backward;
  Adam stays eager) and the first step, which compiles, is timed as `compile_s`.

  Raises:
    CompileFailed: `compiled` and torch.compile is missing or fails on this machine.
  """
  import torch  # pylint: disable=import-outside-toplevel

  from experiments import torch_reference  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  module = torch_reference.SimpleNetCNN(setup.config.model, num_classes, waveforms.shape[1])
  torch_reference.load_flax_variables(module, setup.state.variables())
  module.to(device.type)
  diff = torch_reference.logits_difference(setup.model, setup.state.variables(), module,
                                           waveforms, autocast=autocast)
  inputs = (torch.from_numpy(np.ascontiguousarray(waveforms, np.float32)),
            torch.from_numpy(np.asarray(setup.batch["labels"], np.int64)),
            torch.from_numpy(np.array(setup.batch["weights"], np.float32)))
  inputs = tuple(x.to(device.type) for x in inputs)
  text = f"{note(device)}; max |logit - jax| {diff:.1e} (eval)"
  learning_rate = setup.config.train.learning_rate
  if not compiled:
    step = torch_reference.make_train_step(module, learning_rate, autocast)
    return TorchStep(_blocking(lambda: step(*inputs), device), None,
                     "bfloat16" if autocast else "float32", device.label, text,
                     {"max_abs_logit_diff": diff})
  run, compile_s = _compiled_step(module, learning_rate, autocast, inputs, device)
  return TorchStep(run, compile_s, "bfloat16" if autocast else "float32", device.label,
                   f"{text}; torch.compile", {"max_abs_logit_diff": diff})


def _compiled_step(module, learning_rate: float, autocast: bool, inputs: tuple,
                   device: TorchDevice) -> tuple[Callable[[], object], float]:
  """The train step of `torch.compile(module)`, run once (compiling) and timed."""
  import time  # pylint: disable=import-outside-toplevel

  import torch  # pylint: disable=import-outside-toplevel

  from experiments import torch_reference  # pylint: disable=import-outside-toplevel
  if not hasattr(torch, "compile"):
    raise CompileFailed(f"torch {torch.__version__} has no torch.compile")
  try:
    step = torch_reference.make_train_step(torch.compile(module), learning_rate, autocast,
                                           device=device.type)
    run = _blocking(lambda: step(*inputs), device)
    start = time.perf_counter()
    run()
    return run, time.perf_counter() - start
  except Exception as e:  # pylint: disable=broad-except (any compiler failure skips the row)
    reset = getattr(getattr(torch, "_dynamo", None), "reset", None)
    if reset is not None:
      reset()
    raise CompileFailed(f"torch.compile failed: {first_line(e)}") from e


def first_line(error: BaseException, limit: int = 200) -> str:
  """`Type: first line of the message`, cut to `limit` characters (compiler errors run to pages)."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
  return text if len(text) <= limit else text[:limit - 3] + "..."
