r"""Throughput of wavejax's front-end and of every zoo model's train step, against PyTorch and the
machine's matmul peak.

Everything is measured in ONE run on the same synthetic batch (default 32 utterances of 6 s at
16 kHz = 150 windows of 640 samples each; SimpleNet: 64 filters of 256 taps; 4 classes, random
labels, weights 1):

  jax/frontend/<method>/<mode>   `SimpleNetFrontend` forward and forward + parameter gradient for
                                 every `filter_energy` method
  jax/op-bf16/<method>/<mode>    the bare op with bfloat16 frames and kernel
  jax/train_step/<model>         `wavejax.training.steps.train_step` of every zoo model (one per
  config in
                                 configs/, built as the trainer builds it: `create_model(
                                 config.model, num_classes=4)`, `create_train_state`, jitted with
                                 the state donated), Adam update and batch-norm statistics included
  jax-bf16/train_step/simplenet_cnn  the same with `config.model.compute_dtype="bfloat16"` (products
                                 in bfloat16, parameters and sums in float32), where the config
                                 has that field
  torch/frontend/...             the front-end in PyTorch (conv1d per window), f32 and bf16 autocast
  torch/train_step/simplenet_cnn       SimpleNet-CNN in PyTorch (`experiments/torch_reference.py`),
  torch-bf16/train_step/simplenet_cnn  f32 and under bfloat16 autocast, started from the JAX
                                 model's initial weights; the row's note (JSON: max_abs_logit_diff)
                                 gives the largest |logit| difference to the JAX model in eval
                                 mode on the batch, measured before timing

Commands (from the repository root; PyTorch rows need torch importable, e.g.
`pip install -e '.[bench]'`, or PYTHONPATH pointing at an install):

  python -m experiments.benchmark --out=/tmp/benchmark.json
  python -m experiments.benchmark --preset=smoke --out=/tmp/smoke.json
  python -m experiments.benchmark --cases='*/train_step/*' --batch=8
  python -m experiments.benchmark --cases='jax/frontend/*,torch/frontend/*'

Columns (JSON field in brackets):
  utt/s [utt_per_s]   batch / median wall time of `--repeats` runs after one warm-up run
  compile s [compile_s]  JAX: `jit(...).lower(...).compile()`, timed on its own, without the
                      persistent compilation cache (PyTorch: eager, none)
  GFLOP/s [gflop_per_s]  useful FLOPs per run / median time. Front-end rows: the direct
                      convolution, 2 * L * K * F per window forward and twice that forward + kernel
                      gradient (no input gradient is needed), whatever the method executes (the
                      Toeplitz matmul does (P + K) / K times more). Train-step rows: the matrix
                      products and convolutions in the jaxpr of the same step built with the
                      front-end's `method="conv"` (the direct convolution), scan bodies times their
                      length, elementwise work left out [flops]; the PyTorch rows use the JAX
                      count of the same model. XLA's `compiled.cost_analysis()["flops"]` is kept
                      as [xla_cost_flops] but not used: it counts a loop body once (a 10-step
                      `lax.scan` as 1 step), so it undercounts Toeplitz chunks and LSTMs.
  %f32pk, %ownpk [frac_f32_peak, frac_own_peak]  GFLOP/s over the measured f32 matmul peak and over
                      the peak of the row's own framework and dtype
  XLA MiB [xla_memory_bytes]  JAX rows: `compiled.memory_analysis()`, argument + output - aliased
                      (donated) + temporary buffers of the executable: the memory the step needs
                      (JAX 0.10.2 on CPU also reports `peak_memory_in_bytes`, but without the
                      temporaries, so it is not used)
  RSS+ MiB [rss_step_bytes]  the process's peak resident memory during the timed runs minus its
                      resident memory before them (Linux: the peak is reset per row through
                      /proc/self/clear_refs), i.e. the working memory of a step beyond the inputs
                      and state; [rss_build_bytes] is the same over building + compiling. Coarse:
                      allocators may reuse memory freed by earlier rows. The only memory figure for
                      PyTorch rows.

The matmul peak: an n x n @ n x n matmul (`--matmul_size`, 4096), median of max(repeats, 3) runs
after a warm-up: JAX jitted in f32 and bf16 (f32 accumulation), PyTorch's `@` in f32 and bf16 when
present. The report
then gives wavejax / PyTorch utt/s ratios for rows of the same comparison group (the front-end of
the same mode; the train step of the same model, against PyTorch f32 and bf16 autocast), and checks
the performance target: jax/train_step/simplenet_cnn >= 2x each PyTorch reference in the same run.
`--out` writes rows, peaks, ratios, the target, settings and machine information as JSON.

PyTorch's f32 conv1d weight gradient for this shape (1 input channel, 256 taps) takes a slow path
in the PyPI 2.14.1 build measured here (~95 % of its step in `convolution_backward`), so its
front-end forward + gradient rows take minutes at batch 32, and its f32 train step contains the
same gradient. PyTorch's OpenMP threads also collapse on a busy machine (the report warns when the
load average exceeds half the cores): run the full benchmark on a quiet one.

New rows are added with `@register(name, framework, mode, group)` on a function
`(settings, waveforms) -> Runner`; `flops=None` leaves the FLOP columns empty.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import importlib.util
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from jax.extend import core as jax_core

from wavejax import config as wavejax_config
from wavejax.analysis import common
from wavejax.config import models as model_configs
from wavejax.models import MODELS, create_model, frontends, windowed, zoo
from wavejax.training import steps

PRESETS = {
    "full": dict(batch=32, seconds=6.0, repeats=5, matmul_size=4096),
    "smoke": dict(batch=2, seconds=0.5, repeats=1, matmul_size=256),
}
# The performance target: the full SimpleNet-CNN train step at least this many times PyTorch's.
TARGET = ("jax/train_step/simplenet_cnn", 2.0)
# The front-end target: forward + kernel gradient at least this many 6 s utterances/s in float32,
# which is this share of the direct-convolution ceiling of the machine it was set on (60 of ~71
# utt/s). It is judged on the share, the figure comparable across machines.
FRONTEND_TARGET = ("jax/frontend/auto/fwd+grad", 60.0, 6.0, 0.85)
MIB = 2.0**20

_PRESET = flags.DEFINE_enum("preset", "full", list(PRESETS), "Default sizes (smoke: seconds).")
_BATCH = flags.DEFINE_integer("batch", None, "Utterances per step (preset: 32 / 2).")
_SECONDS = flags.DEFINE_float("seconds", None, "Utterance length in seconds (preset: 6 / 0.5).")
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
  """A prepared step: `run()` executes it once and blocks until the result is ready."""
  run: Callable[[], object]
  compile_s: float | None
  flops: float | None  # useful FLOPs per run
  dtype: str = "float32"
  note: str = ""
  memory: dict | None = None  # XLA's memory analysis of the executable, bytes
  extra: dict = dataclasses.field(default_factory=dict)  # more JSON fields of the row


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  framework: str
  mode: str
  group: str | None  # rows of one group are compared across frameworks
  build: Callable[[Settings, np.ndarray], Runner]


CASES: dict[str, Case] = {}


def register(name: str, framework: str, mode: str, group: str | None = None):
  """Adds a benchmark row: `build(settings, waveforms) -> Runner`."""
  def decorator(build):
    CASES[name] = Case(name, framework, mode, group, build)
    return build
  return decorator


# ----------------------------------------------------------------------------------------------
# What a compiled step costs.


def xla_memory(compiled) -> dict | None:
  """Buffer sizes of an executable (bytes) from XLA's memory analysis, and the total it needs."""
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  sizes = {kind: int(getattr(stats, f"{kind}_size_in_bytes"))
           for kind in ("argument", "output", "alias", "temp")}
  sizes["total"] = sizes["argument"] + sizes["output"] - sizes["alias"] + sizes["temp"]
  return sizes


def xla_cost_flops(compiled) -> float | None:
  """XLA's FLOP estimate of an executable (a loop body counted once)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None


def jaxpr_flops(jaxpr) -> float:
  """FLOPs of the matrix products and convolutions of a jaxpr, loop bodies times their length."""
  return sum(_equation_flops(eqn) for eqn in jaxpr.eqns)


def _equation_flops(eqn) -> float:
  name = eqn.primitive.name
  if name == "dot_general":
    (contracting, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contracting)
  if name == "conv_general_dilated":
    # Per output element: every input feature (of its group) x kernel tap.
    rhs = eqn.invars[1].aval.shape
    out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs) / out_features
  inner = [jaxpr_flops(sub) for sub in _sub_jaxprs(eqn.params)]
  if name == "scan":
    return eqn.params["length"] * sum(inner)
  if name == "cond":
    return max(inner, default=0.0)
  return sum(inner)  # jit, custom_jvp_call, checkpoint, ...; a while body counts once


def _sub_jaxprs(params: dict):
  for value in params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jax_core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax_core.Jaxpr):
        yield item


# ----------------------------------------------------------------------------------------------
# JAX front-end and op rows.


def jax_runner(fn, *args, flops=None, dtype="float32", note=""):
  """Jits `fn`, times its compilation separately and returns a blocking runner."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - start
  return Runner(lambda: jax.block_until_ready(compiled(*args)), compile_s, flops, dtype, note,
                xla_memory(compiled), {"xla_cost_flops": xla_cost_flops(compiled)})


def _cotangent_weights(settings, shape):
  """Fixed per-window, per-filter loss weights, so every cotangent differs."""
  rng = np.random.default_rng(settings.seed + 1)
  return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def _frontend_case(method: str, mode: str):
  def build(settings, waveforms):
    module = zoo.build(
        frontends.SimpleNetFrontend, model_configs.simplenet_frontend_config(),
        num_filters=settings.filters, kernel_size=settings.taps,
        window_ms=1000.0 * settings.window / settings.sample_rate,
        sample_rate=settings.sample_rate, kernel_init="glorot", compression="none",
        activation=settings.activation, method=method)
    waves = jnp.asarray(waveforms)
    params = module.init(jax.random.key(settings.seed), waves[:1])
    flops = settings.forward_flops * settings.batch
    note = f"auto -> {_resolved(method, settings)}" if method == "auto" else ""
    if mode == "fwd":
      return jax_runner(module.apply, params, waves, flops=flops, note=note)
    weights = _cotangent_weights(settings, (settings.batch, settings.windows, settings.filters))
    loss = lambda p, w: jnp.sum(module.apply(p, w) * weights)
    return jax_runner(jax.value_and_grad(loss), params, waves, flops=2 * flops, note=note)
  return build


def _resolved(method, settings):
  return windowed.resolve_method(method, settings.window, settings.taps, settings.filters)


def _op_case(method: str, mode: str, dtype):
  """The bare op on pre-cut frames (as `SimpleNetFrontend` cuts them), in `dtype`."""
  def build(settings, waveforms):
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
    flops = settings.forward_flops * settings.batch
    name = jnp.dtype(dtype).name
    if mode == "fwd":
      return jax_runner(energy, kernel, bias, frames, flops=flops, dtype=name)
    weights = _cotangent_weights(settings, (num, settings.filters))
    loss = lambda k, b, f: jnp.sum(energy(k, b, f) * weights)
    grad = jax.value_and_grad(loss, argnums=(0, 1))
    return jax_runner(grad, kernel, bias, frames, flops=2 * flops, dtype=name)
  return build


for _method in windowed.METHODS:
  for _mode in ("fwd", "fwd+grad"):
    register(f"jax/frontend/{_method}/{_mode}", "jax", _mode, f"frontend/{_mode}")(
        _frontend_case(_method, _mode))
for _method in ("conv", "toeplitz", "winograd"):
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
  return jaxpr_flops(jax.make_jaxpr(train_step_fn(config))(state, setup.batch).jaxpr)


def _train_step_case(name: str, dtype: str = "float32"):
  def build(settings, waveforms):
    overrides = {"model.compute_dtype": dtype} if dtype != "float32" else {}
    setup = train_setup(name, settings, waveforms, overrides)
    flops = train_step_flops(name, settings, setup)
    start = time.perf_counter()
    compiled = jax.jit(train_step_fn(setup.config), donate_argnums=0).lower(
        setup.state, setup.batch).compile()
    compile_s = time.perf_counter() - start
    carry = {"state": setup.state}

    def run():  # the donated state is replaced by the new one, as in training
      carry["state"], metrics = compiled(carry["state"], setup.batch)
      return jax.block_until_ready((carry["state"], metrics))

    return Runner(run, compile_s, flops, dtype, memory=xla_memory(compiled),
                  extra={"xla_cost_flops": xla_cost_flops(compiled)})
  return build


for _name in MODELS:
  register(f"jax/train_step/{_name}", "jax", "train", f"train_step/{_name}")(
      _train_step_case(_name))
if "compute_dtype" in wavejax_config.base_config().model:  # mixed precision, as torch autocast
  register("jax-bf16/train_step/simplenet_cnn", "jax", "train", "train_step/simplenet_cnn")(
      _train_step_case("simplenet_cnn", "bfloat16"))


# ----------------------------------------------------------------------------------------------
# PyTorch rows (only when torch is importable; it is the optional extra `bench`).


def torch_available() -> bool:
  return importlib.util.find_spec("torch") is not None


def _torch_frontend_case(autocast: bool, mode: str):
  def build(settings, waveforms):
    import torch  # pylint: disable=import-outside-toplevel
    import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
    torch.manual_seed(settings.seed)
    waves = torch.from_numpy(np.ascontiguousarray(waveforms, np.float32))
    weight = (torch.randn(settings.filters, 1, settings.taps) / settings.taps ** 0.5)
    weight.requires_grad_(mode != "fwd")
    bias = torch.zeros(settings.filters, requires_grad=mode != "fwd")
    loss_weights = torch.tensor(np.array(
        _cotangent_weights(settings, (settings.batch, settings.windows, settings.filters))))
    before = (settings.taps - 1) // 2

    def frontend():
      windows = waves[:, :settings.windows * settings.window].reshape(-1, 1, settings.window)
      windows = F.pad(windows, (before, settings.taps - 1 - before))
      with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = F.conv1d(windows, weight, bias)
        if settings.activation == "relu":
          y = torch.relu(y)
        energy = y.abs().mean(-1)
      return energy.float().reshape(settings.batch, settings.windows, settings.filters)

    def forward():
      with torch.no_grad():
        return frontend()

    def forward_backward():
      weight.grad, bias.grad = None, None
      loss = (frontend() * loss_weights).sum()
      loss.backward()
      return loss

    flops = settings.forward_flops * settings.batch * (1 if mode == "fwd" else 2)
    return Runner(forward if mode == "fwd" else forward_backward, None, flops,
                  "bfloat16" if autocast else "float32", _torch_note())
  return build


def _torch_note() -> str:
  import torch  # pylint: disable=import-outside-toplevel
  return f"{torch.__version__}, {torch.get_num_threads()} threads"


def _torch_train_case(autocast: bool):
  """SimpleNet-CNN's train step in PyTorch, from the JAX model's initial weights."""
  def build(settings, waveforms):
    import torch  # pylint: disable=import-outside-toplevel

    from experiments import torch_reference  # pylint: disable=import-outside-toplevel
    torch.manual_seed(settings.seed)
    setup = train_setup("simplenet_cnn", settings, waveforms)
    module = torch_reference.SimpleNetCNN(setup.config.model, settings.num_classes,
                                          waveforms.shape[1])
    torch_reference.load_flax_variables(module, setup.state.variables())
    diff = torch_reference.logits_difference(setup.model, setup.state.variables(), module,
                                             waveforms, autocast=autocast)
    step = torch_reference.make_train_step(module, setup.config.train.learning_rate, autocast)
    inputs = (torch.from_numpy(np.ascontiguousarray(waveforms, np.float32)),
              torch.from_numpy(np.asarray(setup.batch["labels"], np.int64)),
              torch.from_numpy(np.array(setup.batch["weights"], np.float32)))
    flops = train_step_flops("simplenet_cnn", settings, setup)
    note = f"{_torch_note()}; max |logit - jax| {diff:.1e} (eval)"
    return Runner(lambda: step(*inputs), None, flops, "bfloat16" if autocast else "float32",
                  note, extra={"max_abs_logit_diff": diff})
  return build


for _autocast, _label in ((False, "f32"), (True, "bf16-autocast")):
  for _mode in ("fwd", "fwd+grad"):
    register(f"torch/frontend/{_label}/{_mode}", "torch", _mode, f"frontend/{_mode}")(
        _torch_frontend_case(_autocast, _mode))
register("torch/train_step/simplenet_cnn", "torch", "train", "train_step/simplenet_cnn")(
    _torch_train_case(autocast=False))
register("torch-bf16/train_step/simplenet_cnn", "torch", "train", "train_step/simplenet_cnn")(
    _torch_train_case(autocast=True))


# ----------------------------------------------------------------------------------------------
# Measurement.


def time_runner(runner: Runner, repeats: int) -> float:
  """Median wall time of `repeats` runs after one warm-up run."""
  runner.run()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    runner.run()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _status_bytes(field: str) -> int | None:
  """A `/proc/self/status` memory field (VmRSS, VmHWM) in bytes; None off Linux."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) * 1024
  except OSError:
    return None
  return None


def reset_peak_rss() -> int | None:
  """Resets this process's peak resident memory (Linux >= 4.0); returns the current RSS, bytes."""
  try:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
      f.write("5")
  except OSError:
    return None
  return _status_bytes("VmRSS")


def peak_rss_growth(baseline: int | None) -> int | None:
  """Peak resident memory since `reset_peak_rss` over what it returned, bytes."""
  peak = _status_bytes("VmHWM")
  return None if baseline is None or peak is None else max(peak - baseline, 0)


def matmul_peaks(settings: Settings) -> dict:
  """Square matmul FLOP/s: jitted JAX f32, JAX bf16 (f32 accumulation), PyTorch when present."""
  n = settings.matmul_size
  rng = np.random.default_rng(settings.seed)
  a = rng.standard_normal((n, n), np.float32)
  b = rng.standard_normal((n, n), np.float32)
  peaks = {}
  for name, dtype in (("jax_f32", jnp.float32), ("jax_bf16", jnp.bfloat16)):
    x, y = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
    runner = jax_runner(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32), x, y)
    peaks[name] = 2.0 * n ** 3 / time_runner(runner, max(settings.repeats, 3)) / 1e9
  if torch_available():
    import torch  # pylint: disable=import-outside-toplevel
    x, y = torch.from_numpy(a), torch.from_numpy(b)
    peaks["torch_f32"] = 2.0 * n ** 3 / time_runner(
        Runner(lambda: x @ y, None, None), max(settings.repeats, 3)) / 1e9
    x16, y16 = x.bfloat16(), y.bfloat16()
    peaks["torch_bf16"] = 2.0 * n ** 3 / time_runner(
        Runner(lambda: x16 @ y16, None, None), max(settings.repeats, 3)) / 1e9
  return peaks


def run_case(case: Case, settings: Settings, waveforms: np.ndarray, peaks: dict) -> dict:
  before_build = reset_peak_rss()
  runner = case.build(settings, waveforms)
  rss_build = peak_rss_growth(before_build)
  before_runs = reset_peak_rss()
  seconds = time_runner(runner, settings.repeats)
  row = dict(name=case.name, framework=case.framework, mode=case.mode, group=case.group,
             dtype=runner.dtype, seconds=seconds, utt_per_s=settings.batch / seconds,
             compile_s=runner.compile_s, flops=runner.flops, gflop_per_s=None,
             frac_f32_peak=None, frac_own_peak=None, xla_memory_bytes=runner.memory,
             rss_step_bytes=peak_rss_growth(before_runs), rss_build_bytes=rss_build,
             note=runner.note, **runner.extra)
  if runner.flops:
    rate = runner.flops / seconds / 1e9
    own = f"{case.framework}_{'bf16' if runner.dtype == 'bfloat16' else 'f32'}"
    row.update(gflop_per_s=rate, frac_f32_peak=rate / peaks["jax_f32"],
               frac_own_peak=rate / peaks[own] if own in peaks else None)
  return row


def torch_ratios(rows: list[dict]) -> list[dict]:
  """utt/s of every JAX row over every PyTorch row of the same comparison group."""
  ratios = []
  for row in rows:
    if row["framework"] != "jax" or row["group"] is None:
      continue
    for ref in rows:
      if ref["framework"] == "torch" and ref["group"] == row["group"]:
        ratios.append(dict(jax=row["name"], torch=ref["name"],
                           ratio=row["utt_per_s"] / ref["utt_per_s"]))
  return ratios


def target_check(ratios: list[dict]) -> list[dict]:
  """The performance target against each PyTorch reference of the SimpleNet-CNN train step."""
  name, factor = TARGET
  return [dict(ratio, target=factor, met=ratio["ratio"] >= factor)
          for ratio in ratios if ratio["jax"] == name]


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


def environment(load) -> dict:
  info = dict(jax=jax.__version__, backend=jax.default_backend(), devices=jax.device_count(),
              cpus=os.cpu_count(), cpu=cpu_model(), python=platform.python_version(),
              load_average_before_after=load)
  if torch_available():
    import torch  # pylint: disable=import-outside-toplevel
    info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
  return info


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------------------------
# Report.


def _fmt(value, width, decimals, scale=1.0):
  return f"{'-':>{width}s}" if value is None else f"{value / scale:{width}.{decimals}f}"


def _pct(value):
  return f"{'-':>7s}" if value is None else f"{100 * value:6.0f}%"


def print_header(settings, peaks, env):
  load = env["load_average_before_after"]
  print(f"jax {env['jax']} on {env['backend']} ({env['devices']} device(s)), {env['cpus']} CPUs, "
        f"{env['cpu']}; 1-min load average {load[0]:.1f} before, {load[1]:.1f} after (other "
        "processes skew timings)")
  print(f"batch {settings.batch} x {settings.seconds:g} s = {settings.windows} windows of "
        f"{settings.window}, K={settings.taps}, F={settings.filters}, "
        f"activation={settings.activation}; median of {settings.repeats} after 1 warm-up")
  n = settings.matmul_size
  print(f"matmul peak ({n}x{n} @ {n}x{n}, jitted, median): "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
  per_utt = settings.forward_flops / 1e9
  print(f"front-end direct conv work {per_utt:.2f} GFLOP/utt forward, {2 * per_utt:.2f} "
        f"forward+grad -> JAX f32 ceiling {peaks['jax_f32'] / per_utt:.1f} / "
        f"{peaks['jax_f32'] / (2 * per_utt):.1f} utt/s")
  if max(load) > 0.5 * env["cpus"]:
    print(f"WARNING: the machine is busy (load {max(load):.1f} on {env['cpus']} CPUs): timings, "
          "PyTorch's above all (its OpenMP threads wait on each other), are not representative")


def print_rows(rows):
  header = (f"{'case':38s} {'mode':8s} {'dtype':8s} {'utt/s':>8s} {'compile s':>9s} "
            f"{'GFLOP/s':>8s} {'%f32pk':>7s} {'%ownpk':>7s} {'XLA MiB':>8s} {'RSS+ MiB':>8s}  note")
  print(header)
  print("-" * len(header))
  for row in rows:
    xla = (row["xla_memory_bytes"] or {}).get("total")
    print(f"{row['name']:38s} {row['mode']:8s} {row['dtype']:8s} {row['utt_per_s']:8.1f} "
          f"{_fmt(row['compile_s'], 9, 2)} {_fmt(row['gflop_per_s'], 8, 0)} "
          f"{_pct(row['frac_f32_peak'])} {_pct(row['frac_own_peak'])} "
          f"{_fmt(xla, 8, 1, MIB)} {_fmt(row['rss_step_bytes'], 8, 1, MIB)}  {row['note']}")


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
    print(f"wavejax / PyTorch  {ratio['jax']:34s} / {ratio['torch']:36s} = {ratio['ratio']:.2f}")
  for target in targets:
    print(f"target: {target['jax']} >= {target['target']:g}x {target['torch']}: "
          f"{target['ratio']:.2f}x, {'met' if target['met'] else 'NOT met'}")


def resolve_settings() -> Settings:
  preset = PRESETS[_PRESET.value]
  pick = lambda flag, key: flag.value if flag.value is not None else preset[key]
  return Settings(batch=pick(_BATCH, "batch"), seconds=pick(_SECONDS, "seconds"),
                  repeats=pick(_REPEATS, "repeats"), matmul_size=pick(_MATMUL_SIZE, "matmul_size"),
                  activation=_ACTIVATION.value, seed=_SEED.value)


def selected_cases(patterns) -> list[Case]:
  return [case for name, case in CASES.items()
          if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)]


def main(argv):
  del argv
  settings = resolve_settings()
  rng = np.random.default_rng(settings.seed)
  samples = int(settings.seconds * settings.sample_rate)
  waveforms = (0.1 * rng.standard_normal((settings.batch, samples))).astype(np.float32)
  has_torch = torch_available()
  torch_note = "available" if has_torch else "torch is not importable: PyTorch rows skipped"
  cases = [c for c in selected_cases(_CASES.value) if has_torch or c.framework != "torch"]
  load_before = os.getloadavg()[0]
  peaks = matmul_peaks(settings)
  rows = []
  for case in cases:
    rows.append(run_case(case, settings, waveforms, peaks))
    logging.info("%s: %.2f utt/s", case.name, rows[-1]["utt_per_s"])
  ratios = torch_ratios(rows)
  targets = target_check(ratios)
  env = environment((load_before, os.getloadavg()[0]))
  print_header(settings, peaks, env)
  print()
  print_rows(rows)
  print()
  print_comparison(ratios, targets, torch_note)
  frontend_target = frontend_target_check(rows, settings)
  print_frontend_target(frontend_target)
  if _OUT.value:
    report = dict(settings=dataclasses.asdict(settings), preset=_PRESET.value, environment=env,
                  matmul_peak_gflop_per_s=peaks,
                  matmul_peak_method=(f"jitted {settings.matmul_size}^2 matmul, median of "
                                      f"{max(settings.repeats, 3)} runs after a warm-up"),
                  torch=torch_note, rows=rows, torch_ratios=ratios, target=targets,
                  frontend_target=frontend_target)
    with open(_OUT.value, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2)


if __name__ == "__main__":
  app.run(main)
