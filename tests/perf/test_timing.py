"""wavejax.perf.timing: the median of blocking calls, compilation timed apart, the matmul peak.

No speed is asserted: the clock is replaced by a scripted one where durations matter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wavejax import perf
from wavejax.perf import timing


class ScriptedClock:
  """`perf_counter` that advances by the given durations, one per timed call."""

  def __init__(self, durations):
    self.durations, self.now, self.started = list(durations), 0.0, False

  def __call__(self):
    if self.started:
      self.now += self.durations.pop(0)
    self.started = not self.started
    return self.now


def test_median_seconds_times_each_call_after_the_warm_up(monkeypatch):
  calls = []
  monkeypatch.setattr(timing.time, "perf_counter", ScriptedClock([3.0, 1.0, 2.0, 10.0, 0.5]))
  assert perf.median_seconds(lambda: calls.append(1), 5, warmup=2) == 2.0
  assert len(calls) == 7  # 2 warm-up calls, untimed, and 5 timed


def test_median_seconds_needs_a_run():
  with pytest.raises(ValueError, match="repeats=0"):
    perf.median_seconds(lambda: None, 0)


def test_compile_timed_returns_a_working_executable():
  cpu = jax.devices("cpu")[0]
  x = jax.device_put(jnp.arange(6.0).reshape(2, 3), cpu)
  compiled, seconds = perf.compile_timed(lambda x: x.sum(axis=1), x)
  assert seconds > 0
  np.testing.assert_array_equal(perf.blocking(compiled, x)(), [3.0, 12.0])


def test_compile_timed_donates_when_asked():
  cpu = jax.devices("cpu")[0]
  x = jax.device_put(jnp.ones((4,)), cpu)
  compiled, _ = perf.compile_timed(lambda x: x + 1, x, donate_argnums=0)
  np.testing.assert_array_equal(compiled(x), [2.0] * 4)
  assert x.is_deleted()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_matmul_peak_times_the_product_on_the_given_device(monkeypatch, dtype):
  cpu = jax.devices("cpu")[0]
  results = []

  def fake_median(run, repeats):
    results.append(run())
    return 0.25

  monkeypatch.setattr(timing, "median_seconds", fake_median)
  n = 32
  assert perf.matmul_peak(n, dtype, 3, device=cpu, seed=7) == 2.0 * n**3 / 0.25
  (product,) = results
  assert product.dtype == jnp.float32 and product.devices() == {cpu}
  rng = np.random.default_rng(7)
  a, b = (np.asarray(jnp.asarray(rng.standard_normal((n, n), np.float32), dtype), np.float64)
          for _ in range(2))
  np.testing.assert_allclose(np.asarray(product), a @ b, rtol=1e-4, atol=1e-3)
