"""The front-end formulation "auto" stands for: the static rule, the measurement and its cache."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wavejax.models import windowed
from wavejax.models.windowed import choice


@pytest.fixture
def autotune(monkeypatch, tmp_path):
  """Measurement on, into a fresh cache file; the in-memory cache emptied."""
  monkeypatch.setenv(choice.ENV_VAR, "on")
  monkeypatch.setenv(choice.CACHE_ENV_VAR, str(tmp_path / "methods.json"))
  monkeypatch.setattr(choice, "_memory", {})
  return tmp_path / "methods.json"


def test_static_rule_and_forced_methods(monkeypatch):
  assert choice.static_choice("cpu") == "toeplitz"
  assert choice.static_choice("gpu") == "toeplitz"
  assert choice.static_choice("tpu") == "conv"
  assert windowed.resolve_method("auto", 640, 256, 64) == choice.static_choice(
      jax.default_backend())  # the tests run with the measurement off
  for method in ("conv", "fft", "winograd", "fused"):
    assert windowed.resolve_method(method, 640, 256, 64) == method
  assert "fused" not in choice.candidates("cpu", jnp.float32, 640, 256, 64)
  assert choice.candidates("gpu", jnp.float32, 640, 256, 64)[-1] == "fused"
  assert "fft" not in choice.candidates("gpu", jnp.bfloat16, 640, 256, 64)


def test_the_fastest_measured_formulation_is_chosen_stored_and_read_back(autotune, monkeypatch):
  timed = []

  def fake_measure(names, *args):
    timed.append(names)
    return {"toeplitz": 3e-3, "conv": 1e-3, "fft": 2e-3}

  monkeypatch.setattr(choice, "measure", fake_measure)
  assert windowed.resolve_method("auto", 64, 16, 8, num=40) == "conv"
  assert windowed.resolve_method("auto", 64, 16, 8, num=33) == "conv"  # same power-of-two bucket
  assert len(timed) == 1
  stored = json.loads(autotune.read_text())
  (key, entry), = stored.items()
  assert entry == {"method": "conv", "seconds": {"toeplitz": 3e-3, "conv": 1e-3, "fft": 2e-3}}
  device = jax.devices()[0]
  assert key.startswith(f"{device.device_kind}|{jax.default_backend()}")
  assert "N<=64 L=64 K=16 F=8|float32|none|default" in key
  # A new process (empty memory) reads the file instead of measuring.
  monkeypatch.setattr(choice, "_memory", {})
  assert windowed.resolve_method("auto", 64, 16, 8, num=40) == "conv"
  assert len(timed) == 1
  # Another dtype, activation or precision is another entry.
  windowed.resolve_method("auto", 64, 16, 8, num=40, activation="relu", precision="highest")
  assert len(timed) == 2 and len(json.loads(autotune.read_text())) == 2


def test_a_real_measurement_inside_a_jitted_model(autotune):
  """Measured while the step is traced; the choice is one of the candidates and the energies
  are those of the chosen formulation."""
  rng = np.random.default_rng(0)
  frames = jnp.asarray(rng.normal(size=(6, 48 + 8 - 1)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
  bias = jnp.zeros(4)
  energy = jax.jit(lambda f: windowed.filter_energy(f, kernel, bias, precision="highest"))(frames)
  (entry,) = json.loads(autotune.read_text()).values()
  assert entry["method"] in ("toeplitz", "conv", "fft")
  assert set(entry["seconds"]) == {"toeplitz", "conv", "fft"}
  assert all(seconds > 0 for seconds in entry["seconds"].values())
  expected = windowed.filter_energy(frames, kernel, bias, method="conv", precision="highest")
  np.testing.assert_allclose(energy, expected, rtol=1e-5, atol=1e-6)


def test_a_formulation_that_disagrees_or_fails_is_left_out(autotune, monkeypatch):
  real = windowed.filter_energy

  def broken(frames, kernel, bias, *, method="auto", **options):
    if method == "fft":
      return 2.0 * real(frames, kernel, bias, method="toeplitz", **options)
    if method == "conv":
      raise RuntimeError("no kernel image for this device")
    return real(frames, kernel, bias, method=method, **options)

  monkeypatch.setattr(windowed, "filter_energy", broken)
  times = choice.measure(["toeplitz", "conv", "fft"], 4, 32, 8, 4, jnp.float32, "none", None)
  assert set(times) == {"toeplitz"}


def test_no_measurement_when_off_or_with_several_processes(autotune, monkeypatch):
  monkeypatch.setattr(choice, "measure", lambda *a: pytest.fail("measured"))
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  assert windowed.resolve_method("auto", 64, 16, 8) == choice.static_choice(jax.default_backend())
  monkeypatch.setattr(jax, "process_count", lambda: 1)
  monkeypatch.setenv(choice.ENV_VAR, "off")
  assert windowed.resolve_method("auto", 64, 16, 8) == choice.static_choice(jax.default_backend())
  assert not autotune.exists()


def test_a_damaged_cache_file_is_measured_again(autotune, monkeypatch):
  autotune.write_text("{not json")
  monkeypatch.setattr(choice, "measure", lambda *a: {"toeplitz": 1.0, "conv": 2.0})
  assert windowed.resolve_method("auto", 64, 16, 8) == "toeplitz"
  assert json.loads(autotune.read_text())  # rewritten whole


def test_a_failed_measurement_falls_back_to_the_static_rule(autotune, monkeypatch):
  def failing(*args):
    raise RuntimeError("out of memory")

  monkeypatch.setattr(choice, "measure", failing)
  assert windowed.resolve_method("auto", 64, 16, 8) == choice.static_choice(jax.default_backend())
