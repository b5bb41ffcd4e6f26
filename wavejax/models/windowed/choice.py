"""The formulation `method="auto"` stands for: measured on the device, remembered on disk.

The first time a shape is traced with `method="auto"`, `choose` times the candidate formulations
(`candidates`: forward + kernel gradient on the real shape, dtype, activation and precision,
jitted, median of a few runs on random data) on the default device, drops any whose energies do
not match the Toeplitz product's, and keeps the fastest. The choice goes to a JSON file keyed by
device kind, backend and its version, shape (windows rounded up to a power of two), dtype,
activation and precision, and to the log; later traces and later runs on the machine read it
back, so a machine keeps its choice (and its numbers) across resumes.

Nothing is measured, and `static_choice` decides, when $WAVEJAX_AUTOTUNE is "off" (the tests set
it), when several processes train together (they must all compile the same program), or when the
measurement fails. `method=` with any other name forces that formulation.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from wavejax import atomic, errors
from wavejax.models import windowed
from wavejax.models.windowed import fused

ENV_VAR = "WAVEJAX_AUTOTUNE"
CACHE_ENV_VAR = "WAVEJAX_AUTOTUNE_CACHE"
OFF = ("0", "off", "no", "false")
REPEATS = 3
# Largest relative L2 difference from the Toeplitz product's energies a candidate may show
# (bfloat16 products round to ~3 significant digits; TF32 to ~4).
TOLERANCE = 2e-2

_memory: dict[str, str] = {}


def static_choice(backend: str) -> str:
  """The rule without a measurement (docs/performance.md has the numbers behind it).

  CPU and GPU: "toeplitz" (on CPU ~2x "conv" with the gradient; on an NVIDIA H200 1.5x "conv"
  in float32 and 2.1x with bfloat16 operands, which "conv" does not speed up). TPU: "conv", the
  MXU's own convolution, unmeasured against the others.
  """
  return "conv" if backend == "tpu" else "toeplitz"


def candidates(backend: str, dtype, length: int, taps: int, filters: int) -> list[str]:
  """The formulations timed for a shape: never "winograd" (not reproducible to float32)."""
  names = ["toeplitz", "conv"]
  if jnp.dtype(dtype) == jnp.float32:
    names.append("fft")  # XLA's FFTs take no bfloat16
  if backend == "gpu" and fused.supported(length, taps, filters)[0]:
    names.append("fused")
  return names


def enabled() -> bool:
  return os.environ.get(ENV_VAR, "on").strip().lower() not in OFF and jax.process_count() == 1


def cache_path() -> pathlib.Path:
  if os.environ.get(CACHE_ENV_VAR):
    return pathlib.Path(os.environ[CACHE_ENV_VAR])
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base) / "wavejax" / "frontend-methods.json"


def cache_key(num: int, length: int, taps: int, filters: int, dtype, activation: str,
              precision) -> str:
  device = jax.devices()[0]
  backend = device.client.platform_version if hasattr(device, "client") else ""
  windows = 1 << max(0, int(num) - 1).bit_length()
  return (f"{device.device_kind}|{jax.default_backend()} {backend}|jax {jax.__version__}|"
          f"N<={windows} L={length} K={taps} F={filters}|{jnp.dtype(dtype).name}|{activation}|"
          f"{precision or 'default'}")


def choose(num: int, length: int, taps: int, filters: int, dtype, activation: str,
           precision=None) -> str:
  """The formulation for `num` windows of `length` outputs, `taps` x `filters` kernels."""
  backend = jax.default_backend()
  if not enabled():
    return static_choice(backend)
  key = cache_key(num, length, taps, filters, dtype, activation, precision)
  if key in _memory:
    return _memory[key]
  stored = _read_cache().get(key)
  if stored is not None:
    _memory[key] = stored["method"]
    return stored["method"]
  try:
    times = measure(candidates(backend, dtype, length, taps, filters), num, length, taps,
                    filters, dtype, activation, precision)
  except Exception as e:  # pylint: disable=broad-except (any failure: keep the static rule)
    logging.warning("front-end method: measuring failed (%s); using %s", errors.one_line(e),
                    static_choice(backend))
    return static_choice(backend)
  method = min(times, key=times.get) if times else static_choice(backend)
  logging.info("front-end method for %s: %s (ms per forward + gradient: %s); stored in %s",
               key, method, ", ".join(f"{m} {1e3 * t:.2f}" for m, t in times.items()),
               cache_path())
  _memory[key] = method
  _write_entry(key, {"method": method, "seconds": times})
  return method


def measure(names: list[str], num: int, length: int, taps: int, filters: int, dtype,
            activation: str, precision) -> dict[str, float]:
  """Median seconds of a jitted forward + kernel gradient per formulation that runs and agrees
  with "toeplitz" (a failing or disagreeing one is logged and left out)."""
  rng = np.random.default_rng(0)
  with jax.ensure_compile_time_eval():
    frames = jnp.asarray(rng.normal(size=(num, length + taps - 1)), dtype)
    kernel = jnp.asarray(rng.normal(size=(taps, filters)) / np.sqrt(taps), dtype)
    bias = jnp.zeros((filters,), dtype)
    weights = jnp.asarray(rng.normal(size=(num, filters)), jnp.float32)
    times, reference = {}, None
    for name in names:
      def loss(k, b, name=name):
        energy = windowed.filter_energy(frames, k, b, activation=activation, method=name,
                                        precision=precision)
        return jnp.vdot(weights, energy), energy
      step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
      try:
        (_, energy), _ = jax.block_until_ready(step(kernel, bias))
        energy = np.asarray(energy, np.float64)
        if reference is None:
          reference = energy
        elif np.linalg.norm(energy - reference) > TOLERANCE * np.linalg.norm(reference):
          logging.warning("front-end method %s disagrees with toeplitz; not used", name)
          continue
        runs = []
        for _ in range(REPEATS):
          began = time.perf_counter()
          jax.block_until_ready(step(kernel, bias))
          runs.append(time.perf_counter() - began)
        times[name] = statistics.median(runs)
      except Exception as e:  # pylint: disable=broad-except (a candidate that does not compile)
        logging.warning("front-end method %s failed here (%s); not used", name,
                        errors.one_line(e)[:200])
  return times


def _read_cache() -> dict:
  path = cache_path()
  try:
    data = json.loads(path.read_text())
  except FileNotFoundError:
    return {}
  except (OSError, ValueError) as e:
    logging.warning("%s: unreadable (%s); measuring again", path, errors.one_line(e))
    return {}
  return data if isinstance(data, dict) else {}


def _write_entry(key: str, entry: dict) -> None:
  path = cache_path()
  data = _read_cache()
  data[key] = entry
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.atomic_write(path, json.dumps(data, indent=1, sort_keys=True))
  except OSError as e:
    logging.warning("%s: cannot store the front-end method (%s)", path, errors.one_line(e))
