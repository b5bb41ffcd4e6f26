r"""Checks and times the fused filter-energy kernel (`wavejax.models.windowed.fused`) on a GPU.

One short run (under ~3 minutes on an H200) on the default backend:

  1. correctness: the fused kernel (float32, precision HIGHEST) against the "toeplitz" method
     under `jax.default_matmul_precision("highest")` and against float64 numpy, forward, kernel
     and bias gradients, on fresh random inputs of three shapes (the paper's, an odd one, K > L
     with several tap blocks); the same for TF32 (default precision) and bfloat16 operands
     against float64, reported with the bound they are held to;
  2. throughput: forward and forward + kernel/bias gradient, jitted, median of `--repeats` runs
     after warm-up, for float32 (default precision: TF32) and bfloat16 operands at the paper's
     shape (L=640, K=256, F=64, 150 windows per 6 s utterance) for each `--batches`; utt/s and
     the share of the bfloat16 matmul peak measured here (a jitted 8192^3 product), plus the
     "toeplitz" method's bfloat16 forward + gradient at the largest batch as a baseline;
     "fwd+grad" is `value_and_grad` (the energies are needed, as in training), "grad" the
     backward kernel alone;
  3. tiling: forward and backward-kernel times for a list of tile settings (`TUNING`), at the
     largest batch; a failing setting prints its one-line error and the run goes on.

It prints one table at the end and writes everything as JSON to `--out`.

  python -m experiments.fused_gpu_check --out=/tmp/fused_gpu.json
  python -m experiments.fused_gpu_check --batches=32 --notune   # the checks and one timing

On a backend other than GPU it runs the kernel in Pallas' interpreter (slow: use small
`--batches` and `--notune`).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from jax import lax

from wavejax import atomic, cli
from wavejax.models import windowed
from wavejax.models.windowed import fused as fused_energy

_OUT = flags.DEFINE_string("out", None, "Write the results as JSON to this path.")
_BATCHES = flags.DEFINE_list("batches", ["32", "256"], "Utterances (150 windows each) per step.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed runs per measurement, median kept.")
_TUNE = flags.DEFINE_bool("tune", True, "Time the tile settings of `TUNING`.")
_BUDGET = flags.DEFINE_float("budget_s", 120.0,
                             "Stop starting new tile settings after this many seconds.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random inputs.")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 8192, "Square bf16 matmul for the peak.")
_COPY_MIB = flags.DEFINE_integer("copy_mib", 4096, "float32 MiB for the copy bandwidth.")

WINDOWS_PER_UTTERANCE = 150
PAPER = dict(length=640, taps=256, filters=64)
# (L, K, F, windows): the paper's shape on few windows; L, F and N that tile nothing; K > L.
CHECK_SHAPES = ((640, 256, 64, 24), (37, 9, 3, 37), (100, 300, 20, 5))
# Relative L2 error bounds against float64 (energies; gradients) per variant: float32 at
# HIGHEST; TF32 (inputs rounded to 10 mantissa bits inside the kernel: the gradient's error is
# dominated by outputs whose sign that rounding flips, a sanity bound); bfloat16 against float64
# on the bfloat16-rounded inputs. The fused float32 result is also held to TOEPLITZ_BOUND
# against the "toeplitz" method's.
BOUNDS = {"f32-highest": (1e-5, 1e-4), "f32-tf32": (2e-3, 1e-1), "bf16": (1e-4, 1e-2)}
TOEPLITZ_BOUND = 1e-4
# Tile settings timed in step 3 at the paper's shape: (dtype, options), forward and backward
# timed apart.
TUNING = (
    ("bfloat16", dict()),
    ("bfloat16", dict(grad_phases=1, grad_block_rows=128, grad_block_taps=256,
                      grad_num_warps=8, grad_num_stages=1)),
    ("bfloat16", dict(grad_phases=1, grad_block_rows=128, grad_block_taps=256,
                      grad_num_stages=1)),
    ("bfloat16", dict(grad_phases=2)),
    ("bfloat16", dict(grad_phases=4)),
    ("bfloat16", dict(grad_block_rows=32, grad_num_stages=3)),
    ("bfloat16", dict(grad_block_taps=256)),
    ("bfloat16", dict(phases=4)),
    ("bfloat16", dict(phases=16, num_stages=1)),
    ("bfloat16", dict(block_rows=128, num_stages=1)),
    ("bfloat16", dict(num_warps=8)),
    ("float32", dict(phases=4, grad_phases=4)),
    ("float32", dict(phases=1, grad_phases=1, grad_block_rows=128, grad_block_taps=256,
                     grad_num_warps=8, grad_num_stages=1)),
)


def numpy_reference(frames, kernel, bias, grad, activation):
  """float64 (energies, dkernel, dbias) for the cotangent `grad` of the energies."""
  frames, kernel, bias, grad = (np.asarray(x, np.float64) for x in (frames, kernel, bias, grad))
  taps = kernel.shape[0]
  x = np.lib.stride_tricks.sliding_window_view(frames, taps, axis=1)  # [N, L, K]
  length = x.shape[1]
  y = np.einsum("ntk,kf->ntf", x, kernel, optimize=True) + bias
  if activation == "relu":
    pooled, slope = np.maximum(y, 0.0), (y > 0).astype(np.float64)
  else:
    pooled, slope = np.abs(y), np.where(y < 0, -1.0, 1.0)
  g = slope * grad[:, None, :] / length
  return (pooled.mean(axis=1), np.einsum("ntk,ntf->kf", x, g, optimize=True),
          g.sum(axis=(0, 1)))


def relative_l2(actual, expected) -> float:
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-300))


def energy_and_grads(method, activation, precision=None, **tiles):
  """jitted (frames, kernel, bias, cotangent) -> (energies, dkernel, dbias)."""
  def energy(frames, kernel, bias):
    if method == "fused":
      return fused_energy.fused_filter_energy(frames, kernel, bias, activation=activation,
                                              precision=precision, **tiles)
    return windowed.filter_energy(frames, kernel, bias, activation=activation,
                                       method=method)

  def run(frames, kernel, bias, cotangent):
    out, vjp = jax.vjp(lambda k, b: energy(frames, k, b), kernel, bias)
    return (out, *vjp(cotangent))
  return jax.jit(run)


def random_case(rng, length, taps, filters, num):
  frames = rng.standard_normal((num, length + taps - 1)).astype(np.float32)
  kernel = (rng.standard_normal((taps, filters)) / np.sqrt(taps)).astype(np.float32)
  bias = (0.3 * rng.standard_normal(filters)).astype(np.float32)
  cotangent = rng.standard_normal((num, filters)).astype(np.float32)
  return frames, kernel, bias, cotangent


def check_correctness(rng) -> list[dict]:
  """Per shape and activation: fused float32 (HIGHEST, TF32) and bfloat16, "toeplitz" float32.

  bfloat16 rows are held to their bound against float64 on the bfloat16-rounded inputs (the
  kernel's own error); the error against the float32 inputs is reported too: it is dominated
  by outputs near zero whose sign the input rounding flips, which moves the kernel gradient.
  """
  rows = []
  variants = (
      ("f32-highest", "fused", np.float32, lax.Precision.HIGHEST),
      ("f32-tf32", "fused", np.float32, lax.Precision.DEFAULT),
      ("bf16", "fused", jnp.bfloat16, None),
      ("toeplitz-f32-highest", "toeplitz", np.float32, None),
  )
  for length, taps, filters, num in CHECK_SHAPES:
    for activation in ("none", "relu"):
      frames, kernel, bias, cotangent = random_case(rng, length, taps, filters, num)
      expected = numpy_reference(frames, kernel, bias, cotangent, activation)
      rounded = [np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32))
                 for x in (frames, kernel)]
      expected_bf16 = numpy_reference(*rounded, bias, cotangent, activation)
      shape = f"L={length} K={taps} F={filters} N={num} {activation}"
      results = {}
      for name, method, dtype, precision in variants:
        row = dict(shape=shape, variant=name)
        try:
          args = [jnp.asarray(x, dtype) for x in (frames, kernel)]
          args += [jnp.asarray(bias), jnp.asarray(cotangent)]
          with jax.default_matmul_precision("highest"):  # explicit precisions override it
            got = energy_and_grads(method, activation, precision)(*args)
          got = [np.asarray(jnp.asarray(x, jnp.float32)) for x in got]
          results[name] = got
          reference = expected_bf16 if dtype == jnp.bfloat16 else expected
          row["rel_l2_vs_f64"] = [relative_l2(a, b) for a, b in zip(got, reference)]
          if dtype == jnp.bfloat16:
            row["rel_l2_vs_f64_f32_inputs"] = [relative_l2(a, b) for a, b in zip(got, expected)]
          bound = BOUNDS.get(name)
          if bound is not None:
            limits = (bound[0], bound[1], bound[1])
            row["bound"] = bound
            row["pass"] = all(e <= b for e, b in zip(row["rel_l2_vs_f64"], limits))
        except Exception as e:  # noqa: BLE001 - report and go on
          row["error"] = one_line(e)
          row["pass"] = False
        rows.append(row)
      fused_row = rows[-len(variants)]
      if "f32-highest" in results and "toeplitz-f32-highest" in results:
        fused_row["rel_l2_vs_toeplitz"] = [
            relative_l2(a, b)
            for a, b in zip(results["f32-highest"], results["toeplitz-f32-highest"])]
        fused_row["pass"] = fused_row["pass"] and all(
            e <= TOEPLITZ_BOUND for e in fused_row["rel_l2_vs_toeplitz"])
      for row in rows[-len(variants):]:
        print_check(row)
  return rows


def print_check(row):
  errs = row.get("rel_l2_vs_f64")
  text = "error: " + row["error"] if "error" in row else (
      "vs f64 (out, dk, db) " + " ".join(f"{e:.1e}" for e in errs))
  if "rel_l2_vs_f64_f32_inputs" in row:
    text += "  f32 inputs " + " ".join(f"{e:.1e}" for e in row["rel_l2_vs_f64_f32_inputs"])
  if "rel_l2_vs_toeplitz" in row:
    text += "  vs toeplitz " + " ".join(f"{e:.1e}" for e in row["rel_l2_vs_toeplitz"])
  verdict = "" if "pass" not in row else ("PASS" if row["pass"] else "FAIL")
  print(f"  {verdict:4s} {row['shape']:28s} {row['variant']:22s} {text}", flush=True)


def one_line(error: Exception) -> str:
  text = f"{type(error).__name__}: {error}".strip().splitlines()
  return (text[0] if text else type(error).__name__)[:300]


def median_time(fn, args, repeats) -> tuple[float, float]:
  """(median seconds of `repeats` runs after two warm-ups, seconds of the first run)."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - start
  for _ in range(2):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times), first


def matmul_peak(n, repeats) -> float:
  """FLOP/s of a jitted n^3 bfloat16 matmul (float32 accumulation)."""
  key_a, key_b = jax.random.split(jax.random.key(1))
  a = jax.random.normal(key_a, (n, n), jnp.bfloat16)
  b = jax.random.normal(key_b, (n, n), jnp.bfloat16)
  matmul = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
  seconds, _ = median_time(matmul, (a, b), max(repeats, 5))
  return 2.0 * n**3 / seconds


def copy_bandwidth(mib, repeats) -> float:
  """Bytes/s (read + written) of a jitted elementwise op over `mib` MiB of float32."""
  x = jnp.ones((mib * 2**18,), jnp.float32)
  seconds, _ = median_time(jax.jit(lambda x: x * 2.0), (x,), max(repeats, 5))
  return 2.0 * x.nbytes / seconds


@dataclasses.dataclass
class Workload:
  batch: int
  dtype: object
  frames: jax.Array
  kernel: jax.Array
  bias: jax.Array
  cotangent: jax.Array

  @property
  def flops_forward(self) -> float:
    windows = self.batch * WINDOWS_PER_UTTERANCE
    return 2.0 * windows * PAPER["length"] * PAPER["taps"] * PAPER["filters"]


def workload(batch, dtype, seed) -> Workload:
  num = batch * WINDOWS_PER_UTTERANCE
  keys = jax.random.split(jax.random.key(seed), 4)
  frame_len = PAPER["length"] + PAPER["taps"] - 1
  return Workload(
      batch=batch, dtype=dtype,
      frames=jax.random.normal(keys[0], (num, frame_len), dtype),
      kernel=(jax.random.normal(keys[1], (PAPER["taps"], PAPER["filters"])) / 16.0).astype(dtype),
      bias=0.1 * jax.random.normal(keys[2], (PAPER["filters"],)),
      cotangent=jax.random.normal(keys[3], (num, PAPER["filters"])))


def step_functions(method, **tiles):
  """jitted "fwd" (energies), "grad" (jax.grad: the fused method skips its forward kernel,
  whose output the gradient does not need) and "fwd+grad" (value_and_grad: both, as in
  training, where the energies feed the network)."""
  def energy(frames, kernel, bias):
    if method == "fused":
      return fused_energy.fused_filter_energy(frames, kernel, bias, **tiles)
    return windowed.filter_energy(frames, kernel, bias, method=method)

  def loss(kernel, bias, frames, cotangent):
    return jnp.sum(energy(frames, kernel, bias) * cotangent)
  return {"fwd": jax.jit(lambda kernel, bias, frames, cotangent: energy(frames, kernel, bias)),
          "grad": jax.jit(jax.grad(loss, argnums=(0, 1))),
          "fwd+grad": jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))}


def time_case(name, method, work, peak, repeats, modes=("fwd", "fwd+grad"), **tiles) -> dict:
  row = dict(case=name, method=method, batch=work.batch, dtype=jnp.dtype(work.dtype).name,
             tiles=tiles)
  functions = step_functions(method, **tiles)
  args = (work.kernel, work.bias, work.frames, work.cotangent)
  for mode in modes:
    try:
      seconds, first = median_time(functions[mode], args, repeats)
      flops = work.flops_forward * (1 if mode == "fwd" else 2)
      row[mode] = dict(seconds=seconds, first_run_s=first, utt_per_s=work.batch / seconds,
                       tflop_per_s=flops / seconds / 1e12, share_of_peak=flops / seconds / peak)
    except Exception as e:  # noqa: BLE001 - report and go on
      row[mode] = dict(error=one_line(e))
    print_timing(row, mode)
  return row


def print_timing(row, mode):
  result = row[mode]
  if "error" in result:
    text = "error: " + result["error"]
  else:
    text = (f"{result['seconds'] * 1e3:8.2f} ms {result['utt_per_s']:9.0f} utt/s "
            f"{result['tflop_per_s']:6.1f} TFLOP/s {100 * result['share_of_peak']:5.1f} % pk")
  print(f"  {row['case']:44s} {mode:8s} {text}", flush=True)


def main(argv):
  del argv
  started = time.perf_counter()
  env = dict(jax=jax.__version__, backend=jax.default_backend(),
             devices=[str(d) for d in jax.devices()], python=platform.python_version())
  print(f"fused_gpu_check: jax {env['jax']}, backend {env['backend']}, {env['devices'][0]}")
  rng = np.random.default_rng(_SEED.value)
  repeats = _REPEATS.value

  print("1. correctness (relative L2 error of energies, dkernel, dbias)")
  checks = check_correctness(rng)

  print("2. throughput, paper shape (L=640, K=256, F=64, 150 windows per utterance)")
  peak = matmul_peak(_MATMUL_SIZE.value, repeats)
  bandwidth = copy_bandwidth(_COPY_MIB.value, repeats)
  print(f"  bf16 matmul peak {peak / 1e12:.0f} TFLOP/s, copy {bandwidth / 1e12:.2f} TB/s")
  batches = [int(b) for b in _BATCHES.value]
  timings = []
  for batch in batches:
    for dtype in (jnp.float32, jnp.bfloat16):
      work = workload(batch, dtype, _SEED.value)
      name = f"fused {jnp.dtype(dtype).name} b{batch}"
      timings.append(time_case(name, "fused", work, peak, repeats,
                               modes=("fwd", "grad", "fwd+grad")))
  work = workload(batches[-1], jnp.bfloat16, _SEED.value)
  timings.append(time_case(f"toeplitz bfloat16 b{batches[-1]}", "toeplitz", work, peak,
                           repeats, modes=("fwd+grad",)))

  tuning = []
  if _TUNE.value:
    print(f"3. tile settings (batch {batches[-1]}; grad: the backward kernel alone)")
    works = {"bfloat16": work, "float32": workload(batches[-1], jnp.float32, _SEED.value)}
    for dtype, tiles in TUNING:
      if time.perf_counter() - started > _BUDGET.value:
        print(f"  budget of {_BUDGET.value:.0f} s spent: {dtype} {tiles} and later skipped")
        break
      name = f"{dtype} " + (",".join(f"{k}={v}" for k, v in tiles.items()) or "defaults")
      tuning.append(time_case(name, "fused", works[dtype], peak, repeats,
                              modes=("fwd", "grad"), **tiles))

  print()
  print("summary")
  failed = [r for r in checks if r.get("pass") is False]
  print(f"  correctness: {len(checks) - len(failed)} of {len(checks)} checks pass"
        + ("" if not failed else ", FAIL: " + "; ".join(
            f"{r['shape']} {r['variant']}" for r in failed)))
  print(f"  {'case':48s} {'fwd':>8s} {'grad':>8s} {'fwd+grad':>9s} {'% peak f+g':>10s}  utt/s")
  for row in timings + tuning:
    cells = []
    for mode, width in (("fwd", 8), ("grad", 8), ("fwd+grad", 9)):
      result = row.get(mode, {})
      cells.append(f"{result['utt_per_s']:{width}.0f}" if "utt_per_s" in result
                   else f"{'-':>{width}s}")
    both = row.get("fwd+grad", {})
    cells.append(f"{100 * both['share_of_peak']:10.1f}" if "utt_per_s" in both else f"{'-':>10s}")
    print(f"  {row['case'][:48]:48s} " + " ".join(cells))
  print(f"  total {time.perf_counter() - started:.0f} s")
  if _OUT.value:
    report = dict(environment=env, bf16_matmul_peak_flop_per_s=peak,
                  copy_bytes_per_s=bandwidth, checks=checks, timings=timings, tuning=tuning,
                  settings=dict(batches=batches, repeats=repeats, seed=_SEED.value))
    with atomic.atomic_open(_OUT.value) as f:
      json.dump(report, f, indent=2, default=str)


if __name__ == "__main__":
  cli.run(main, "fused_gpu_check")
