r"""Throughput of wavejax's front-end and of every zoo model's train step, against PyTorch on the
same device and against the matmul peak of that device.

Everything is measured in ONE run on the same synthetic batch (`--preset=paper`: 32 utterances of
6 s at 16 kHz = 150 windows of 640 samples each; SimpleNet: 64 filters of 256 taps; 4 classes,
random labels, weights 1). Rows:

  jax/frontend/<method>/<mode>   `SimpleNetFrontend` forward and forward + parameter gradient for
                                 every formulation of `windowed.METHODS`, float32
  jax/op-bf16/<method>/<mode>    the bare op (`windowed.filter_energy` on pre-cut frames) with
                                 bfloat16 frames and kernel, every formulation ("fft" computes in
                                 float32 whatever it is given: skipped with that note)
  jax/train_step/<model>         `wavejax.training.steps.train_step` of every zoo model (one per
                                 config in configs/, built as the trainer builds it, jitted with
                                 the state donated), Adam update and batch-norm statistics included
  jax-bf16/train_step/simplenet_cnn  the same with `config.model.compute_dtype="bfloat16"`
  torch/frontend/<f32|bf16-autocast>/<mode>  the front-end in PyTorch (conv1d per window)
  torch/train_step/simplenet_cnn, torch-bf16/...  SimpleNet-CNN's train step in PyTorch
                                 (`experiments/torch_reference.py`), float32 and bfloat16 autocast,
                                 from the JAX model's initial weights; the note (JSON:
                                 max_abs_logit_diff) gives the largest |logit| difference to the
                                 JAX model in eval mode, measured before timing
  torch-compile/..., torch-compile-bf16/train_step/simplenet_cnn  the same model
                                 `torch.compile`d (compile s: the first step); skipped with the
                                 compiler's one-line reason where torch.compile is missing or fails

The PyTorch rows run on the device JAX runs on: CUDA when JAX's backend is "gpu" and PyTorch has
CUDA, else the CPU (`experiments/torch_cases.py`); they need torch importable (e.g.
`pip install -e '.[bench]'`, or PYTHONPATH pointing at an install) and are skipped otherwise.

"fused" is a Pallas kernel compiled for GPUs; on any other backend it runs in Pallas' interpreter,
whose speed says nothing of the kernel. There its rows run only when the batch holds at most
`FUSED_INTERPRET_MAX_WINDOWS` windows (the smoke preset: the row checks the kernel runs, its note
says the figure is the interpreter's), and are skipped with the note "fused: interpret mode off
GPU, not timed" at larger sizes.

Commands (from the repository root):

  python -m experiments.benchmark --out=/tmp/benchmark.json
  python -m experiments.benchmark --preset=smoke --out=/tmp/smoke.json
  python -m experiments.benchmark --cases='*/train_step/*' --batch=8
  python -m experiments.benchmark --cases='jax/frontend/*,torch/frontend/*'

Columns (JSON field in brackets):
  device [device]     where the row ran, "<platform>: <model>" (`wavejax.perf.devices`)
  utt/s [utt_per_s]   batch / median wall time of `--repeats` runs after one warm-up run; every
                      run returns only when the device is done (block_until_ready, CUDA sync)
  compile s [compile_s]  JAX: `jit(...).lower(...).compile()`, timed on its own, without the
                      persistent compilation cache; torch.compile: the first step; eager: none
  GFLOP/s [gflop_per_s]  useful FLOPs per run / median time. Front-end rows: the direct
                      convolution, 2 * L * K * F per window forward and twice that forward + kernel
                      gradient (no input gradient is needed), whatever the method executes.
                      Train-step rows: `wavejax.perf.jaxpr_flops` of the same step built with the
                      front-end's `method="conv"` (matrix products and convolutions, scan bodies
                      times their length) [flops]; the PyTorch rows use the JAX count of the same
                      model. XLA's own estimate is kept as [xla_cost_flops] (a loop body once).
  %f32pk, %ownpk [frac_f32_peak, frac_own_peak]  GFLOP/s over the f32 matmul peak of the row's
                      device (JAX's when the row ran on JAX's device), and over the peak of the
                      row's own framework and dtype (bf16 rows: the bf16 peak), measured on the
                      device the row ran on; empty when no peak of that device was measured
  XLA MiB [xla_memory_bytes]  JAX rows: `wavejax.perf.xla_memory` of the executable: argument +
                      output - aliased (donated) + temporary buffers, on the device
  RSS+ MiB [rss_step_bytes]  the process's peak resident (host) memory during the timed runs above
                      its resident memory before them (Linux); [rss_build_bytes] the same over
                      building + compiling. Coarse; the only memory figure of the PyTorch rows

The matmul peaks: an n x n @ n x n product (`--matmul_size`), median of max(repeats, 3) runs after
a warm-up, in f32 and bf16 (f32 accumulation): JAX's jitted on JAX's default device, PyTorch's `@`
on PyTorch's device; each framework at its own default f32 precision (JAX: TF32 on NVIDIA GPUs;
PyTorch: full f32 matmuls). A row's shares are taken against the peaks of its own device only.

The report then gives wavejax / PyTorch utt/s ratios between rows of one comparison group (the
front-end of the same mode; the SimpleNet-CNN train step, against every PyTorch variant) that ran
on the same device; for rows of different devices it prints why there is no ratio instead (JSON:
the pair with `ratio: null` and `refused`). It checks the targets: jax/train_step/simplenet_cnn
>= 2x each PyTorch reference of its device in the same run, and the front-end's share of the f32
ceiling. `--out` writes rows, skipped rows, peaks and their devices, ratios, the targets, settings
and machine information as JSON.

PyTorch's CPU f32 conv1d weight gradient for this shape (1 input channel, 256 taps) takes a slow
path in some builds (~95 % of its step in `convolution_backward`), so its front-end forward +
gradient rows take minutes at batch 32. PyTorch's OpenMP threads also collapse on a busy machine
(the report warns when the load average exceeds half the cores): run the full benchmark on a quiet
one.

New rows: `@register(name, framework, mode, group)` on a function `(settings, waveforms) ->
Runner` (`jax_runner` jits, compiles and times a JAX function; `train_setup` and
`train_step_flops` build and count a zoo model's train step). `group=None` keeps the row out of
the PyTorch comparison, `flops=None` leaves the FLOP columns empty, and raising `Skip(reason)`
skips the row with that note.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import os
import platform
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

from experiments import torch_cases
from wavejax import cli, errors, perf
from wavejax import config as wavejax_config
from wavejax.analysis import common
from wavejax.config import models as model_configs
from wavejax.config import presets
from wavejax.models import MODELS, create_model, frontends, windowed, zoo
from wavejax.training import group_steps, steps

# The performance target: the full SimpleNet-CNN train step at least this many times PyTorch's.
TARGET = ("jax/train_step/simplenet_cnn", 2.0)
# The front-end target: forward + kernel gradient at least this many 6 s utterances/s in float32,
# which is this share of the direct-convolution ceiling of the machine it was set on (60 of ~71
# utt/s). It is judged on the share, the figure comparable across machines.
FRONTEND_TARGET = ("jax/frontend/auto/fwd+grad", 60.0, 6.0, 0.85)
# Off GPU the fused kernel runs in Pallas' interpreter: timed only up to this many windows.
FUSED_INTERPRET_MAX_WINDOWS = 64
FUSED_NOT_TIMED = "fused: interpret mode off GPU, not timed"
# "fft" casts its operands to float32: a bfloat16 row would time jax/frontend/fft/* again.
FFT_NOT_BF16 = ("fft: computes in float32 (XLA's FFTs take no bfloat16), as the "
                "jax/frontend/fft rows; not timed again")
MIB = 2.0**20

_PRESET = presets.define_flag(presets.BENCHMARK, "paper")
_BATCH = flags.DEFINE_integer("batch", None, "Utterances per step (paper: 32, smoke: 2).")
_SECONDS = flags.DEFINE_float("seconds", None, "Utterance length in seconds (6 / 0.5).")
_REPEATS = flags.DEFINE_integer("repeats", None, "Timed runs per row, median kept (5 / 1).")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", None, "Square matmul for the peak (4096).")
_ACTIVATION = flags.DEFINE_enum("activation", "none", list(windowed.ACTIVATIONS),
                                "Front-end activation (front-end and op rows).")
_CASES = flags.DEFINE_list("cases", ["*"], "Glob patterns of the case names to run.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the synthetic batch and parameters.")
_OUT = flags.DEFINE_string("out", None, "Write the results as JSON to this path.")


@dataclasses.dataclass(frozen=True)
class Settings:
  """Sizes shared by every case."""
  batch: int
  seconds: float
  repeats: int
  matmul_size: int
  activation: str
  seed: int
  sample_rate: int = 16000
  window: int = 640
  taps: int = 256
  filters: int = 64
  num_classes: int = 4

  @property
  def windows(self) -> int:
    return int(self.seconds * self.sample_rate) // self.window

  @property
  def forward_flops(self) -> float:
    """Direct-convolution FLOPs of one utterance's front-end forward."""
    return 2.0 * self.windows * self.window * self.taps * self.filters


@dataclasses.dataclass
class Runner:
  """A prepared step: `run()` executes it once and returns when the device is done."""
  run: Callable[[], object]
  compile_s: float | None
  flops: float | None  # useful FLOPs per run
  dtype: str = "float32"
  note: str = ""
  memory: dict | None = None  # XLA's memory analysis of the executable, bytes
  extra: dict = dataclasses.field(default_factory=dict)  # more JSON fields of the row
  device: str | None = None  # `devices` label; None: JAX's default device


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  framework: str
  mode: str
  group: str | None  # rows of one group are compared across frameworks
  build: Callable[[Settings, np.ndarray], Runner]


class Skip(Exception):
  """Raised by a case's build: the row is not measured; the message says why (one line)."""


CASES: dict[str, Case] = {}


def register(name: str, framework: str, mode: str, group: str | None = None):
  """Adds a benchmark row: `build(settings, waveforms) -> Runner` (or raises `Skip`)."""
  def decorator(build):
    CASES[name] = Case(name, framework, mode, group, build)
    return build
  return decorator


# ----------------------------------------------------------------------------------------------
# JAX front-end and op rows.


def jax_runner(fn, *args, flops=None, dtype="float32", note=""):
  """Jits `fn`, times its compilation separately and returns a blocking runner."""
  compiled, compile_s = perf.compile_timed(fn, *args)
  return Runner(perf.blocking(compiled, *args), compile_s, flops, dtype, note,
                perf.xla_memory(compiled), {"xla_cost_flops": perf.xla_cost_flops(compiled)})


def _cotangent_weights(settings, shape):
  """Fixed per-window, per-filter loss weights, so every cotangent differs."""
  rng = np.random.default_rng(settings.seed + 1)
  return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def fused_skip_reason(backend: str, settings: Settings) -> str | None:
  """Why a "fused" row is not timed on `backend` at these sizes (None: it is)."""
  if backend == "gpu" or settings.batch * settings.windows <= FUSED_INTERPRET_MAX_WINDOWS:
    return None
  return FUSED_NOT_TIMED


def _method_note(method: str, settings: Settings, dtype=jnp.float32) -> str:
  """What a front-end row's method ran as, where that is not its name."""
  if method == "auto":
    resolved = windowed.resolve_method(method, settings.window, settings.taps, settings.filters,
                                       num=settings.batch * settings.windows, dtype=dtype,
                                       activation=settings.activation)
    return f"auto -> {resolved}"
  if method == "fused" and jax.default_backend() != "gpu":
    return "Pallas interpret mode (off GPU): not the kernel's speed"
  return ""


def _check_fused(method: str, settings: Settings) -> None:
  reason = fused_skip_reason(jax.default_backend(), settings) if method == "fused" else None
  if reason:
    raise Skip(reason)


def _frontend_case(method: str, mode: str):
  def build(settings, waveforms):
    _check_fused(method, settings)
    module = zoo.build(
        frontends.SimpleNetFrontend, model_configs.simplenet_frontend_config(),
        num_filters=settings.filters, kernel_size=settings.taps,
        window_ms=1000.0 * settings.window / settings.sample_rate,
        sample_rate=settings.sample_rate, kernel_init="glorot", compression="none",
        activation=settings.activation, method=method)
    waves = jnp.asarray(waveforms)
    params = module.init(jax.random.key(settings.seed), waves[:1])
    work = settings.forward_flops * settings.batch
    note = _method_note(method, settings)
    if mode == "fwd":
      return jax_runner(module.apply, params, waves, flops=work, note=note)
    weights = _cotangent_weights(settings, (settings.batch, settings.windows, settings.filters))
    loss = lambda p, w: jnp.sum(module.apply(p, w) * weights)
    return jax_runner(jax.value_and_grad(loss), params, waves, flops=2 * work, note=note)
  return build


def _op_case(method: str, mode: str, dtype):
  """The bare op on pre-cut frames (as `SimpleNetFrontend` cuts them), in `dtype`."""
  def build(settings, waveforms):
    _check_fused(method, settings)
    if method == "fft" and jnp.dtype(dtype) != jnp.float32:
      raise Skip(FFT_NOT_BF16)
    num = settings.batch * settings.windows
    windows = waveforms[:, :settings.windows * settings.window].reshape(num, settings.window)
    before = (settings.taps - 1) // 2
    frames = np.pad(windows, ((0, 0), (before, settings.taps - 1 - before)))
    rng = np.random.default_rng(settings.seed)
    kernel = rng.standard_normal((settings.taps, settings.filters)) / np.sqrt(settings.taps)
    frames, kernel = jnp.asarray(frames, dtype), jnp.asarray(kernel, dtype)
    bias = jnp.zeros((settings.filters,), jnp.float32)
    energy = lambda k, b, f: windowed.filter_energy(
        f, k, b, activation=settings.activation, method=method)
    work = settings.forward_flops * settings.batch
    name, note = jnp.dtype(dtype).name, _method_note(method, settings, dtype)
    if mode == "fwd":
      return jax_runner(energy, kernel, bias, frames, flops=work, dtype=name, note=note)
    weights = _cotangent_weights(settings, (num, settings.filters))
    loss = lambda k, b, f: jnp.sum(energy(k, b, f) * weights)
    grad = jax.value_and_grad(loss, argnums=(0, 1))
    return jax_runner(grad, kernel, bias, frames, flops=2 * work, dtype=name, note=note)
  return build


for _method in windowed.METHODS:
  for _mode in ("fwd", "fwd+grad"):
    register(f"jax/frontend/{_method}/{_mode}", "jax", _mode, f"frontend/{_mode}")(
        _frontend_case(_method, _mode))
for _method in windowed.METHODS:
  for _mode in ("fwd", "fwd+grad"):
    register(f"jax/op-bf16/{_method}/{_mode}", "jax", _mode)(
        _op_case(_method, _mode, jnp.bfloat16))


# ----------------------------------------------------------------------------------------------
# JAX train-step rows: every zoo model, as the trainer runs it.


@dataclasses.dataclass
class TrainSetup:
  config: object
  model: object
  state: steps.TrainState
  batch: dict


def train_setup(name: str, settings: Settings, waveforms: np.ndarray,
                overrides: dict | None = None) -> TrainSetup:
  """configs/<name>.py's model and initial train state, and the synthetic labelled batch."""
  config = common.load_config(name, {"seed": settings.seed, **(overrides or {})})
  model = create_model(config.model, num_classes=settings.num_classes)
  state = steps.create_train_state(model, config, waveforms.shape[1], steps_per_epoch=1, fold=1)
  rng = np.random.default_rng(settings.seed + 2)
  batch = {"waveforms": jnp.asarray(waveforms),
           "labels": jnp.asarray(rng.integers(0, settings.num_classes, len(waveforms)), jnp.int32),
           "weights": jnp.ones((len(waveforms),), jnp.float32)}
  return TrainSetup(config, model, state, batch)


def train_step_fn(config):
  return functools.partial(steps.train_step, double_softmax=config.train.double_softmax)


def train_step_flops(name: str, settings: Settings, setup: TrainSetup) -> float:
  """Useful FLOPs of one train step: `jaxpr_flops` of the float32 model with the front-end as
  a direct convolution."""
  config = common.load_config(name, {"seed": settings.seed})
  if "method" in config.model.frontend:
    wavejax_config.set_field(config, "model.frontend.method", "conv")
  model = create_model(config.model, num_classes=settings.num_classes)
  state = setup.state.replace(apply_fn=model.apply)
  return perf.function_flops(train_step_fn(config), state, setup.batch)


def _train_step_case(name: str, dtype: str = "float32"):
  def build(settings, waveforms):
    overrides = {"model.compute_dtype": dtype} if dtype != "float32" else {}
    setup = train_setup(name, settings, waveforms, overrides)
    work = train_step_flops(name, settings, setup)
    compiled, compile_s = perf.compile_timed(train_step_fn(setup.config), setup.state,
                                               setup.batch, donate_argnums=0)
    carry = {"state": setup.state}

    def run():  # the donated state is replaced by the new one, as in training
      carry["state"], metrics = compiled(carry["state"], setup.batch)
      return jax.block_until_ready((carry["state"], metrics))

    return Runner(run, compile_s, work, dtype, memory=perf.xla_memory(compiled),
                  extra={"xla_cost_flops": perf.xla_cost_flops(compiled)})
  return build


for _name in MODELS:
  register(f"jax/train_step/{_name}", "jax", "train", f"train_step/{_name}")(
      _train_step_case(_name))
if "compute_dtype" in wavejax_config.base_config().model:  # mixed precision, as torch autocast
  register("jax-bf16/train_step/simplenet_cnn", "jax", "train", "train_step/simplenet_cnn")(
      _train_step_case("simplenet_cnn", "bfloat16"))


# Grouped train steps (`wavejax.training.group`): M members (their own seeds, one batch each) in
# one vmapped step. utt/s is per member (each trains on `batch` utterances per step), so a row
# beats M single steps when it is above 1/M of the single step's row; FLOPs count every member.
GROUP_SIZES = (3, 9)
GROUPED_MODELS = ("simplenet_cnn", "simplenet_rnn", "specnet", "wavernn", "soundnet")


def _group_step_case(name: str, members: int):
  def build(settings, waveforms):
    setup = train_setup(name, settings, waveforms)
    work = members * train_step_flops(name, settings, setup)
    step, state = group_steps.make_group_train_step(setup.model, setup.config, members,
                                                    num_samples=waveforms.shape[1])
    batch = jax.tree.map(lambda x: jnp.stack([x] * members), setup.batch)
    compiled, compile_s = perf.compile_timed(step, state, batch, donate_argnums=0)
    carry = {"state": state}

    def run():
      carry["state"], metrics = compiled(carry["state"], batch)
      return jax.block_until_ready((carry["state"], metrics))

    return Runner(run, compile_s, work, "float32", memory=perf.xla_memory(compiled),
                  extra={"xla_cost_flops": perf.xla_cost_flops(compiled)},
                  note=f"{members} members in one step; utt/s per member")
  return build


for _name in GROUPED_MODELS:
  for _members in GROUP_SIZES:
    register(f"jax/group{_members}_step/{_name}", "jax", "train")(
        _group_step_case(_name, _members))


# ----------------------------------------------------------------------------------------------
# PyTorch rows (only when torch is importable; it is the optional extra `bench`), on the device
# of `torch_cases.current_device()`.


def _runner(step: torch_cases.TorchStep, work: float | None) -> Runner:
  return Runner(step.run, step.compile_s, work, step.dtype, step.note, device=step.device,
                extra=step.extra)


def _torch_frontend_case(autocast: bool, mode: str):
  def build(settings, waveforms):
    weights = np.asarray(
        _cotangent_weights(settings, (settings.batch, settings.windows, settings.filters)))
    step = torch_cases.frontend_step(
        waveforms, windows=settings.windows, window=settings.window, taps=settings.taps,
        filters=settings.filters, activation=settings.activation, seed=settings.seed,
        loss_weights=weights, autocast=autocast, gradient=mode != "fwd",
        device=torch_cases.current_device())
    return _runner(step, settings.forward_flops * settings.batch * (1 if mode == "fwd" else 2))
  return build


def _torch_train_case(autocast: bool, compiled: bool = False):
  """SimpleNet-CNN's train step in PyTorch, from the JAX model's initial weights."""
  def build(settings, waveforms):
    setup = train_setup("simplenet_cnn", settings, waveforms)
    try:
      step = torch_cases.train_step(setup, waveforms, num_classes=settings.num_classes,
                                    seed=settings.seed, autocast=autocast, compiled=compiled,
                                    device=torch_cases.current_device())
    except torch_cases.CompileFailed as e:
      raise Skip(str(e)) from e
    return _runner(step, train_step_flops("simplenet_cnn", settings, setup))
  return build


for _autocast, _label in ((False, "f32"), (True, "bf16-autocast")):
  for _mode in ("fwd", "fwd+grad"):
    register(f"torch/frontend/{_label}/{_mode}", "torch", _mode, f"frontend/{_mode}")(
        _torch_frontend_case(_autocast, _mode))
for _prefix, _compiled in (("torch", False), ("torch-compile", True)):
  register(f"{_prefix}/train_step/simplenet_cnn", "torch", "train", "train_step/simplenet_cnn")(
      _torch_train_case(autocast=False, compiled=_compiled))
  register(f"{_prefix}-bf16/train_step/simplenet_cnn", "torch", "train",
           "train_step/simplenet_cnn")(_torch_train_case(autocast=True, compiled=_compiled))


# ----------------------------------------------------------------------------------------------
# Measurement.


@dataclasses.dataclass(frozen=True)
class Peaks:
  """Matmul peaks in GFLOP/s ("jax_f32", "jax_bf16", "torch_f32", "torch_bf16") and the device
  each framework's were measured on ({"jax": label, "torch": label})."""
  gflop_per_s: dict[str, float]
  device: dict[str, str]

  def of(self, framework: str, dtype: str, device: str | None) -> float | None:
    """The peak of `framework` in `dtype` if it was measured on `device`."""
    key = f"{framework}_{'bf16' if dtype == 'bfloat16' else 'f32'}"
    if key in self.gflop_per_s and perf.same_device(self.device.get(framework), device):
      return self.gflop_per_s[key]
    return None

  def f32(self, framework: str, device: str | None) -> float | None:
    """The f32 peak of `device`: JAX's when JAX ran there, else `framework`'s own."""
    return self.of("jax", "float32", device) or self.of(framework, "float32", device)


def measure_peaks(settings: Settings, torch_device: torch_cases.TorchDevice | None) -> Peaks:
  """Square-matmul GFLOP/s: JAX jitted on JAX's default device in f32 and bf16, PyTorch on its
  device when `torch_device` is given."""
  n, repeats = settings.matmul_size, max(settings.repeats, 3)
  rates = {f"jax_{name}": perf.matmul_peak(n, dtype, repeats, seed=settings.seed) / 1e9
           for name, dtype in (("f32", jnp.float32), ("bf16", jnp.bfloat16))}
  where = {"jax": perf.jax_device_label()}
  if torch_device is not None:
    torch_rates = torch_cases.matmul_peaks(n, repeats, settings.seed, torch_device)
    rates.update({name: rate / 1e9 for name, rate in torch_rates.items()})
    where["torch"] = torch_device.label
  return Peaks(rates, where)


def run_case(case: Case, settings: Settings, waveforms: np.ndarray, peaks: Peaks) -> dict:
  """One row: builds the case, times it and sets its FLOP rate against its device's peaks.

  Raises:
    Skip: the case declined to run (its message says why).
  """
  before_build = perf.reset_peak_rss()
  runner = case.build(settings, waveforms)
  rss_build = perf.peak_rss_growth(before_build)
  before_runs = perf.reset_peak_rss()
  seconds = perf.median_seconds(runner.run, settings.repeats)
  device = runner.device or peaks.device["jax"]
  row = dict(name=case.name, framework=case.framework, mode=case.mode, group=case.group,
             dtype=runner.dtype, device=device, seconds=seconds,
             utt_per_s=settings.batch / seconds, compile_s=runner.compile_s, flops=runner.flops,
             gflop_per_s=None, frac_f32_peak=None, frac_own_peak=None,
             xla_memory_bytes=runner.memory, rss_step_bytes=perf.peak_rss_growth(before_runs),
             rss_build_bytes=rss_build, note=runner.note, **runner.extra)
  if runner.flops:
    rate = runner.flops / seconds / 1e9
    f32, own = peaks.f32(case.framework, device), peaks.of(case.framework, runner.dtype, device)
    row.update(gflop_per_s=rate, frac_f32_peak=rate / f32 if f32 else None,
               frac_own_peak=rate / own if own else None)
  return row


def compare(jax_row: dict, torch_row: dict) -> dict:
  """wavejax / PyTorch utt/s of two rows, or why there is none: rows of different devices
  measure the devices as much as the code, so no ratio is formed between them."""
  pair = dict(jax=jax_row["name"], torch=torch_row["name"], jax_device=jax_row["device"],
              torch_device=torch_row["device"], ratio=None, refused=None)
  if perf.same_device(jax_row["device"], torch_row["device"]):
    pair["ratio"] = jax_row["utt_per_s"] / torch_row["utt_per_s"]
  else:
    pair["refused"] = (f"different devices: {jax_row['name']} ran on {jax_row['device']}, "
                       f"{torch_row['name']} on {torch_row['device']}")
  return pair


def torch_ratios(rows: list[dict]) -> list[dict]:
  """`compare` of every JAX row with every PyTorch row of the same comparison group."""
  return [compare(row, ref) for row in rows
          if row["framework"] == "jax" and row["group"] is not None
          for ref in rows if ref["framework"] == "torch" and ref["group"] == row["group"]]


def target_check(ratios: list[dict]) -> list[dict]:
  """The performance target against each PyTorch reference of the SimpleNet-CNN train step on
  the same device (pairs without a ratio are not judged)."""
  name, factor = TARGET
  return [dict(ratio, target=factor, met=ratio["ratio"] >= factor)
          for ratio in ratios if ratio["jax"] == name and ratio["ratio"] is not None]


def frontend_target_check(rows: list[dict], settings) -> dict | None:
  """The float32 front-end target, judged on the share of this run's f32 ceiling
  (`frac_f32_peak`; the absolute utt/s depends on the machine's peak, and is reported beside it
  at the target's utterance length); None when the row was not measured."""
  name, rate, seconds, share = FRONTEND_TARGET
  row = next((r for r in rows if r["name"] == name), None)
  if row is None or row["frac_f32_peak"] is None:
    return None
  return dict(jax=name, target_utt_per_s=rate, target_seconds=seconds, target_share=share,
              utt_per_s=row["utt_per_s"], share=row["frac_f32_peak"],
              met=row["frac_f32_peak"] >= share,
              rate_comparable=abs(settings.seconds - seconds) < 1e-9)


def environment(load, torch_device: torch_cases.TorchDevice | None) -> dict:
  info = dict(jax=jax.__version__, backend=jax.default_backend(), devices=jax.device_count(),
              jax_device=perf.jax_device_label(), cpus=os.cpu_count(),
              cpu=perf.cpu_model(), python=platform.python_version(),
              load_average_before_after=load)
  if torch_device is not None:
    info.update(torch_cases.environment(torch_device))
  return info


# ----------------------------------------------------------------------------------------------
# Report.


def _fmt(value, width, decimals, scale=1.0):
  return f"{'-':>{width}s}" if value is None else f"{value / scale:{width}.{decimals}f}"


def _pct(value):
  return f"{'-':>7s}" if value is None else f"{100 * value:6.0f}%"


def print_header(settings, peaks: Peaks, env):
  load = env["load_average_before_after"]
  print(f"jax {env['jax']} on {env['backend']} ({env['devices']} device(s)), {env['cpus']} CPUs, "
        f"{env['cpu']}; 1-min load average {load[0]:.1f} before, {load[1]:.1f} after (other "
        "processes skew timings)")
  print(f"batch {settings.batch} x {settings.seconds:g} s = {settings.windows} windows of "
        f"{settings.window}, K={settings.taps}, F={settings.filters}, "
        f"activation={settings.activation}; median of {settings.repeats} after 1 warm-up")
  n = settings.matmul_size
  for framework, device in peaks.device.items():
    rates = ", ".join(f"{key.split('_', 1)[1]} {rate:.0f} GFLOP/s"
                      for key, rate in peaks.gflop_per_s.items() if key.startswith(framework))
    print(f"matmul peak ({n}x{n} @ {n}x{n}, median) {framework} on {device}: {rates}")
  per_utt = settings.forward_flops / 1e9
  jax_f32 = peaks.gflop_per_s["jax_f32"]
  print(f"front-end direct conv work {per_utt:.2f} GFLOP/utt forward, {2 * per_utt:.2f} "
        f"forward+grad -> JAX f32 ceiling {jax_f32 / per_utt:.1f} / "
        f"{jax_f32 / (2 * per_utt):.1f} utt/s")
  if max(load) > 0.5 * env["cpus"]:
    print(f"WARNING: the machine is busy (load {max(load):.1f} on {env['cpus']} CPUs): timings, "
          "PyTorch's above all (its OpenMP threads wait on each other), are not representative")


def print_rows(rows):
  width = max([len(row["device"]) for row in rows] + [6])
  name_width = max([len(row["name"]) for row in rows] + [4])
  header = (f"{'case':{name_width}s} {'mode':8s} {'dtype':8s} {'device':{width}s} {'utt/s':>8s} "
            f"{'compile s':>9s} {'GFLOP/s':>8s} {'%f32pk':>7s} {'%ownpk':>7s} {'XLA MiB':>8s} "
            f"{'RSS+ MiB':>8s}  note")
  print(header)
  print("-" * len(header))
  for row in rows:
    xla = (row["xla_memory_bytes"] or {}).get("total")
    print(f"{row['name']:{name_width}s} {row['mode']:8s} {row['dtype']:8s} "
          f"{row['device']:{width}s} {row['utt_per_s']:8.1f} {_fmt(row['compile_s'], 9, 2)} "
          f"{_fmt(row['gflop_per_s'], 8, 0)} {_pct(row['frac_f32_peak'])} "
          f"{_pct(row['frac_own_peak'])} {_fmt(xla, 8, 1, MIB)} "
          f"{_fmt(row['rss_step_bytes'], 8, 1, MIB)}  {row['note']}")


def print_skipped(skipped):
  for entry in skipped:
    print(f"skipped {entry['name']}: {entry['reason']}")


def print_frontend_target(target):
  if target is None:
    return
  rate = (f"{target['utt_per_s']:.1f} utt/s (target {target['target_utt_per_s']:g}), "
          if target["rate_comparable"] else
          f"utt/s not comparable (target set at {target['target_seconds']:g} s utterances), ")
  print(f"target: {target['jax']} >= {target['target_utt_per_s']:g} utt/s and >= "
        f"{100 * target['target_share']:.0f}% of the f32 ceiling: {rate}"
        f"{100 * target['share']:.0f}% of the ceiling, {'met' if target['met'] else 'NOT met'}")


def print_comparison(ratios, targets, torch_note):
  if not ratios:
    print(f"wavejax / PyTorch: {torch_note}")
  for ratio in ratios:
    if ratio["ratio"] is not None:
      print(f"wavejax / PyTorch  {ratio['jax']:34s} / {ratio['torch']:42s} = "
            f"{ratio['ratio']:.2f}")
  refused: dict[str, list[dict]] = {}
  for ratio in ratios:
    if ratio["ratio"] is None:
      refused.setdefault(ratio["torch"], []).append(ratio)
  for name, pairs in refused.items():
    jax_devices = sorted({pair["jax_device"] for pair in pairs})
    print(f"wavejax / PyTorch  no ratio with {name} ({pairs[0]['torch_device']}): its "
          f"{len(pairs)} wavejax row(s) ran on {', '.join(jax_devices)}; rows of different "
          "devices are not compared")
  for target in targets:
    print(f"target: {target['jax']} >= {target['target']:g}x {target['torch']}: "
          f"{target['ratio']:.2f}x, {'met' if target['met'] else 'NOT met'}")


def print_report(report: dict, settings: Settings) -> None:
  peaks = Peaks(report["matmul_peak_gflop_per_s"], report["matmul_peak_device"])
  print_header(settings, peaks, report["environment"])
  print()
  print_rows(report["rows"])
  print_skipped(report["skipped"])
  print()
  print_comparison(report["torch_ratios"], report["target"], report["torch"])
  print_frontend_target(report["frontend_target"])


def resolve_settings() -> Settings:
  sizes = presets.sizes(_PRESET.value, presets.BENCHMARK)
  pick = lambda flag, key: flag.value if flag.value is not None else sizes[key]
  return Settings(batch=pick(_BATCH, "batch"), seconds=pick(_SECONDS, "seconds"),
                  repeats=pick(_REPEATS, "repeats"), matmul_size=pick(_MATMUL_SIZE, "matmul_size"),
                  activation=_ACTIVATION.value, seed=_SEED.value)


def selected_cases(patterns) -> list[Case]:
  return [case for name, case in CASES.items()
          if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)]


def synthetic_waveforms(settings: Settings) -> np.ndarray:
  rng = np.random.default_rng(settings.seed)
  samples = int(settings.seconds * settings.sample_rate)
  return (0.1 * rng.standard_normal((settings.batch, samples))).astype(np.float32)


def torch_for(cases: list[Case]) -> tuple[torch_cases.TorchDevice | None, str]:
  """The device of the PyTorch rows among `cases` (None when there are none or torch is not
  importable) and a note saying which."""
  if not any(case.framework == "torch" for case in cases):
    return None, "no PyTorch row selected"
  if not torch_cases.available():
    return None, "torch is not importable: PyTorch rows skipped"
  device = torch_cases.current_device()
  return device, f"PyTorch rows on {device.label}"


def measure(settings: Settings, cases: list[Case], torch_device=None,
            torch_note: str = "") -> dict:
  """Runs `cases` (PyTorch ones only with a `torch_device`) and returns the report."""
  waveforms = synthetic_waveforms(settings)
  cases = [c for c in cases if torch_device is not None or c.framework != "torch"]
  load_before = os.getloadavg()[0]
  uses_torch = any(c.framework == "torch" for c in cases)
  peaks = measure_peaks(settings, torch_device if uses_torch else None)
  rows, skipped = [], []
  for case in cases:
    try:
      rows.append(run_case(case, settings, waveforms, peaks))
      logging.info("%s: %.2f utt/s", case.name, rows[-1]["utt_per_s"])
    except Skip as e:
      skipped.append(dict(name=case.name, reason=str(e)))
      logging.info("%s: skipped: %s", case.name, e)
  ratios = torch_ratios(rows)
  return dict(settings=dataclasses.asdict(settings),
              environment=environment((load_before, os.getloadavg()[0]), torch_device),
              matmul_peak_gflop_per_s=peaks.gflop_per_s, matmul_peak_device=peaks.device,
              matmul_peak_method=(f"{settings.matmul_size}^2 matmul, median of "
                                  f"{max(settings.repeats, 3)} runs after a warm-up, on each "
                                  "framework's device"),
              torch=torch_note, rows=rows, skipped=skipped, torch_ratios=ratios,
              target=target_check(ratios), frontend_target=frontend_target_check(rows, settings))


def main(argv):
  del argv
  settings = resolve_settings()
  cases = selected_cases(_CASES.value)
  if not cases:
    raise errors.ConfigError(f"--cases={','.join(_CASES.value)} matches no case; names look like "
                             "jax/frontend/auto/fwd or torch/train_step/simplenet_cnn")
  report = measure(settings, cases, *torch_for(cases))
  report["preset"] = _PRESET.value
  print_report(report, settings)
  if _OUT.value:
    common.write_json(_OUT.value, report)
  return 0


if __name__ == "__main__":
  cli.run(main, "benchmark")
