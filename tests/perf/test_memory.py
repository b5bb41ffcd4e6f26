"""wavejax.perf.memory: XLA's buffer sizes of an executable and the /proc resident-memory probes."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wavejax import perf
from wavejax.perf import memory


def test_xla_memory_of_a_compiled_function_on_cpu():
  cpu = jax.devices("cpu")[0]
  x = jax.device_put(jnp.ones((256, 128), jnp.float32), cpu)  # 128 KiB
  sizes = perf.xla_memory(jax.jit(lambda x: (x @ x.T).sum(0)).lower(x).compile())
  assert sizes["argument"] == 256 * 128 * 4
  assert sizes["output"] == 256 * 4
  assert sizes["alias"] == 0
  assert sizes["temp"] >= 0
  assert sizes["total"] == sizes["argument"] + sizes["output"] + sizes["temp"]


def test_donated_arguments_are_aliased_and_not_counted_twice():
  cpu = jax.devices("cpu")[0]
  x = jax.device_put(jnp.ones((256, 128), jnp.float32), cpu)
  sizes = perf.xla_memory(jax.jit(lambda x: x * 2.0, donate_argnums=0).lower(x).compile())
  assert sizes["argument"] == sizes["output"] == sizes["alias"] == 256 * 128 * 4
  assert sizes["total"] == 256 * 128 * 4 + sizes["temp"]


def test_status_bytes_reads_kilobyte_fields(tmp_path):
  status = tmp_path / "status"
  status.write_text("Name:\tpython\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n")
  assert memory.status_bytes("VmRSS", str(status)) == 1024 * 1024
  assert memory.status_bytes("VmHWM", str(status)) == 2048 * 1024
  assert memory.status_bytes("VmSwap", str(status)) is None
  assert memory.status_bytes("VmRSS", str(tmp_path / "absent")) is None


def test_peak_rss_growth_without_a_baseline_is_unknown():
  assert perf.peak_rss_growth(None) is None


@pytest.mark.skipif(not os.path.exists(memory.CLEAR_REFS), reason="needs Linux's /proc")
def test_peak_rss_growth_sees_a_touched_allocation():
  baseline = perf.reset_peak_rss()
  assert baseline is not None and baseline > 0
  block = np.ones(64 * 2**20 // 8)  # 64 MiB, every page written
  grown = perf.peak_rss_growth(baseline)
  assert grown >= 60 * 2**20, grown
  del block
