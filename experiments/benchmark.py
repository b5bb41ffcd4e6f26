r"""Throughput of SimpleNet's front-end per implementation, against the machine's matmul peak.

Everything is measured in ONE run on the same synthetic batch (default 32 utterances of 6 s at
16 kHz = 150 windows of 640 samples each, 64 filters of 256 taps): the JAX front-end
(`wavejax.models.frontends.SimpleNetFrontend`) forward and forward + parameter gradient for every
`filter_energy` method, the bare op with bfloat16 inputs, and, when `torch` is importable, the same
front-end in PyTorch (conv1d per window) in float32 and under bfloat16 autocast.

Each row: compile time (JAX: `jit(...).lower(...).compile()`, timed on its own), one warm-up run
(excluded), then the median of `--repeats` timed runs. Utterances/s = batch / median. Useful work is
the direct convolution, 2 * L * K * F FLOPs per window forward and twice that forward + kernel
gradient (the input gradient is not needed for training); FLOP/s and the fraction of the measured
peak use that count whatever the method really executes (the Toeplitz matmul does (P + K) / K
times more).

  python experiments/benchmark.py --out=/tmp/benchmark.json
  python experiments/benchmark.py --preset=smoke --out=/tmp/smoke.json
  python experiments/benchmark.py --cases='jax/frontend/*' --batch=8

PyTorch is optional (not a dependency; point PYTHONPATH at an install to get its rows). Its f32
conv1d weight gradient for this shape (1 input channel, 256 taps) takes a slow path in the
PyPI 2.14.1 build measured here (~95 % of its step in `convolution_backward`), so its
forward + gradient rows take minutes at batch 32.

New rows (e.g. a model's full train step) are added with `@register(name, framework, mode)` on a
function `(settings, waveforms) -> Runner`; `flops=None` leaves the FLOP columns empty.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib.util
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from wavejax.models import frontends
from wavejax.models import windowed_conv

PRESETS = {
    "full": dict(batch=32, seconds=6.0, repeats=5, matmul_size=4096),
    "smoke": dict(batch=2, seconds=0.5, repeats=1, matmul_size=256),
}

_PRESET = flags.DEFINE_enum("preset", "full", list(PRESETS), "Default sizes (smoke: seconds).")
_BATCH = flags.DEFINE_integer("batch", None, "Utterances per step (preset: 32 / 2).")
_SECONDS = flags.DEFINE_float("seconds", None, "Utterance length in seconds (preset: 6 / 0.5).")
_REPEATS = flags.DEFINE_integer("repeats", None, "Timed runs per row, median kept (5 / 1).")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", None, "Square matmul for the peak (4096).")
_ACTIVATION = flags.DEFINE_enum("activation", "none", list(windowed_conv.ACTIVATIONS),
                                "Front-end activation.")
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


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  framework: str
  mode: str
  build: Callable[[Settings, np.ndarray], Runner]


CASES: dict[str, Case] = {}


def register(name: str, framework: str, mode: str):
  """Adds a benchmark row: `build(settings, waveforms) -> Runner`."""
  def decorator(build):
    CASES[name] = Case(name, framework, mode, build)
    return build
  return decorator


# ----------------------------------------------------------------------------------------------
# JAX rows.


def jax_runner(fn, *args, flops=None, dtype="float32", note=""):
  """Jits `fn`, times its compilation separately and returns a blocking runner."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - start
  return Runner(lambda: jax.block_until_ready(compiled(*args)), compile_s, flops, dtype, note)


def _cotangent_weights(settings, shape):
  """Fixed per-window, per-filter loss weights, so every cotangent differs."""
  rng = np.random.default_rng(settings.seed + 1)
  return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def _frontend_case(method: str, mode: str):
  def build(settings, waveforms):
    module = frontends.SimpleNetFrontend(
        num_filters=settings.filters, kernel_size=settings.taps,
        window_ms=1000.0 * settings.window / settings.sample_rate,
        sample_rate=settings.sample_rate, kernel_init="glorot",
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
  return windowed_conv.resolve_method(method, settings.window, settings.taps, settings.filters)


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
    energy = lambda k, b, f: windowed_conv.filter_energy(
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


for _method in windowed_conv.METHODS:
  for _mode in ("fwd", "fwd+grad"):
    register(f"jax/frontend/{_method}/{_mode}", "jax", _mode)(_frontend_case(_method, _mode))
for _method in ("conv", "toeplitz"):
  for _mode in ("fwd", "fwd+grad"):
    register(f"jax/op-bf16/{_method}/{_mode}", "jax", _mode)(
        _op_case(_method, _mode, jnp.bfloat16))


# ----------------------------------------------------------------------------------------------
# PyTorch rows (only when torch is importable; it is not a dependency).


def torch_available() -> bool:
  return importlib.util.find_spec("torch") is not None


def _torch_case(autocast: bool, mode: str):
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
    note = f"{torch.__version__}, {torch.get_num_threads()} threads"
    return Runner(forward if mode == "fwd" else forward_backward, None, flops,
                  "bfloat16" if autocast else "float32", note)
  return build


for _autocast, _label in ((False, "f32"), (True, "bf16-autocast")):
  for _mode in ("fwd", "fwd+grad"):
    register(f"torch/frontend/{_label}/{_mode}", "torch", _mode)(_torch_case(_autocast, _mode))


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
  runner = case.build(settings, waveforms)
  seconds = time_runner(runner, settings.repeats)
  row = dict(name=case.name, framework=case.framework, mode=case.mode, dtype=runner.dtype,
             seconds=seconds, utt_per_s=settings.batch / seconds, compile_s=runner.compile_s,
             gflop_per_s=None, frac_f32_peak=None, frac_own_peak=None, note=runner.note)
  if runner.flops:
    rate = runner.flops / seconds / 1e9
    own = f"{case.framework}_{'bf16' if runner.dtype == 'bfloat16' else 'f32'}"
    row.update(gflop_per_s=rate, frac_f32_peak=rate / peaks["jax_f32"],
               frac_own_peak=rate / peaks[own] if own in peaks else None)
  return row


def torch_ratios(rows: list[dict]) -> list[dict]:
  """utt/s of every JAX front-end row over the PyTorch rows of the same mode."""
  ratios = []
  for row in rows:
    if not row["name"].startswith("jax/frontend/"):
      continue
    for ref in rows:
      if ref["framework"] == "torch" and ref["mode"] == row["mode"]:
        ratios.append(dict(jax=row["name"], torch=ref["name"],
                           ratio=row["utt_per_s"] / ref["utt_per_s"]))
  return ratios


def _fmt(value, width, decimals):
  return f"{'-':>{width}s}" if value is None else f"{value:{width}.{decimals}f}"


def _pct(value):
  return f"{'-':>7s}" if value is None else f"{100 * value:6.0f}%"


def print_report(settings, peaks, rows, ratios, torch_note, load):
  print(f"jax {jax.__version__} on {jax.default_backend()} ({jax.device_count()} device(s)), "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; 1-min load "
        f"average {load[0]:.1f} before, {load[1]:.1f} after (other processes skew timings)")
  print(f"batch {settings.batch} x {settings.seconds:g} s = {settings.windows} windows of "
        f"{settings.window}, K={settings.taps}, F={settings.filters}, "
        f"activation={settings.activation}; median of {settings.repeats} after 1 warm-up")
  n = settings.matmul_size
  print(f"matmul peak ({n}x{n} @ {n}x{n}, jitted, median): "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
  per_utt = settings.forward_flops / 1e9
  print(f"direct conv work {per_utt:.2f} GFLOP/utt forward, {2 * per_utt:.2f} forward+grad -> "
        f"JAX f32 ceiling {peaks['jax_f32'] / per_utt:.1f} / "
        f"{peaks['jax_f32'] / (2 * per_utt):.1f} utt/s")
  print()
  header = (f"{'case':38s} {'mode':8s} {'dtype':8s} {'utt/s':>8s} {'compile s':>9s} "
            f"{'GFLOP/s':>8s} {'%f32pk':>7s} {'%ownpk':>7s}  note")
  print(header)
  print("-" * len(header))
  for row in rows:
    print(f"{row['name']:38s} {row['mode']:8s} {row['dtype']:8s} {row['utt_per_s']:8.1f} "
          f"{_fmt(row['compile_s'], 9, 2)} {_fmt(row['gflop_per_s'], 8, 0)} "
          f"{_pct(row['frac_f32_peak'])} {_pct(row['frac_own_peak'])}  {row['note']}")
  print()
  if not ratios:
    print(f"wavejax / PyTorch: {torch_note}")
  for ratio in ratios:
    print(f"wavejax / PyTorch  {ratio['jax']:34s} / {ratio['torch']:34s} = {ratio['ratio']:.2f}")


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
  rows = [run_case(case, settings, waveforms, peaks) for case in cases]
  ratios = torch_ratios(rows)
  load = (load_before, os.getloadavg()[0])
  print_report(settings, peaks, rows, ratios, torch_note, load)
  if _OUT.value:
    report = dict(settings=dataclasses.asdict(settings), preset=_PRESET.value,
                  environment=dict(jax=jax.__version__, backend=jax.default_backend(),
                                   devices=jax.device_count(), cpus=os.cpu_count(),
                                   load_average_before_after=load),
                  matmul_peak_gflop_per_s=peaks,
                  matmul_peak_method=(f"jitted {settings.matmul_size}^2 matmul, median of "
                                      f"{max(settings.repeats, 3)} runs after a warm-up"),
                  torch=torch_note, rows=rows, torch_ratios=ratios)
    with open(_OUT.value, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2)


if __name__ == "__main__":
  app.run(main)
