"""wavejax.runtime: the persistent compilation cache switch of the command-line tools."""

import jax
import pytest

from wavejax import runtime


@pytest.fixture
def restore_jax_cache_config():
  saved = (jax.config.jax_compilation_cache_dir,
           jax.config.jax_persistent_cache_min_compile_time_secs)
  yield
  jax.config.update("jax_compilation_cache_dir", saved[0])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", saved[1])


@pytest.mark.parametrize("value", ["off", "0", "", "None"])
def test_off_values_leave_the_cache_off(value, monkeypatch, restore_jax_cache_config):
  monkeypatch.setenv(runtime.ENV_VAR, "/should/not/be/used")
  before = jax.config.jax_compilation_cache_dir
  assert runtime.enable_compilation_cache(value) is None
  assert jax.config.jax_compilation_cache_dir == before


def test_path_beats_the_environment(tmp_path, monkeypatch, restore_jax_cache_config):
  monkeypatch.setenv(runtime.ENV_VAR, str(tmp_path / "from_env"))
  assert runtime.enable_compilation_cache(tmp_path / "given") == tmp_path / "given"
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / "given")
  assert (tmp_path / "given").is_dir() and not (tmp_path / "from_env").exists()


def test_environment_then_default(tmp_path, monkeypatch, restore_jax_cache_config):
  monkeypatch.setenv(runtime.ENV_VAR, str(tmp_path / "from_env"))
  assert runtime.enable_compilation_cache() == tmp_path / "from_env"
  monkeypatch.delenv(runtime.ENV_VAR)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  expected = tmp_path / "xdg" / "wavejax" / "jax-compilation-cache"
  assert runtime.enable_compilation_cache() == expected and expected.is_dir()


def test_a_directory_that_cannot_be_made_turns_the_cache_off(tmp_path, restore_jax_cache_config):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  assert runtime.enable_compilation_cache(blocker / "cache") is None
