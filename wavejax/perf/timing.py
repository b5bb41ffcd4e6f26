"""Wall time of a step, and the matmul peak a device reaches, measured the same way.

A timed call must block until its work is done: a JAX function's result through
`jax.block_until_ready` (dispatch is asynchronous on every backend), a PyTorch CUDA call through
`torch.cuda.synchronize()`; otherwise the clock stops at dispatch. Compilation is timed apart
from the runs (`compile_timed`), and the runs start after a warm-up, so neither the compiler nor
first-call allocation lands in the median.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def median_seconds(run: Callable[[], object], repeats: int, *, warmup: int = 1) -> float:
  """Median wall time of `repeats` calls of `run` after `warmup` untimed calls. `run` must
  return only when its work is done."""
  if repeats < 1:
    raise ValueError(f"repeats={repeats}: must be at least 1")
  for _ in range(warmup):
    run()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def compile_timed(fn: Callable, *args, donate_argnums=()) -> tuple[object, float]:
  """`jax.jit(fn)` lowered and compiled for `args`: (the executable, seconds it took). The
  executable runs where committed `args` live (JAX's default device otherwise)."""
  start = time.perf_counter()
  compiled = jax.jit(fn, donate_argnums=donate_argnums).lower(*args).compile()
  return compiled, time.perf_counter() - start


def blocking(compiled, *args) -> Callable[[], object]:
  """A call of `compiled(*args)` that returns once its outputs are ready."""
  return lambda: jax.block_until_ready(compiled(*args))


def matmul_peak(n: int, dtype=jnp.float32, repeats: int = 3, *, device=None,
                seed: int = 0) -> float:
  """FLOP/s of a jitted `[n, n] @ [n, n]` product in `dtype` (float32 accumulation) on `device`
  (JAX's default device when None), median of `repeats` runs after a warm-up: the ceiling the
  FLOP rates of work on that device are held against. float32 products follow the precision in
  effect (`jax.default_matmul_precision`; TF32 by default on NVIDIA GPUs)."""
  device = device or jax.devices()[0]
  rng = np.random.default_rng(seed)
  a, b = (jax.device_put(jnp.asarray(rng.standard_normal((n, n), np.float32), dtype), device)
          for _ in range(2))
  product = lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32)
  compiled, _ = compile_timed(product, a, b)
  return 2.0 * n**3 / median_seconds(blocking(compiled, a, b), repeats)
