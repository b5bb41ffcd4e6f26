"""Checkpoints: a save that fails part-way never replaces the previous good checkpoint."""

import os

import jax.numpy as jnp
import orbax.checkpoint as ocp
import pytest

from wavejax import errors
from wavejax.training import checkpoint


def steps(directory):
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
  checkpointer = checkpoint.Checkpointer(tmp_path)
  checkpointer.save_latest(12, {"w": jnp.ones(3)}, {"epoch": 1})
  original = ocp.handlers.StandardCheckpointHandler.async_save

  async def write_then_fail(self, directory, *args, **kwargs):
    futures = await original(self, directory, *args, **kwargs)
    for f in futures or []:
      f.result()  # the arrays of step 24 are on disk (in Orbax's temporary folder)...
    raise OSError(28, "No space left on device")  # ...and the save fails before its commit

  monkeypatch.setattr(ocp.handlers.StandardCheckpointHandler, "async_save", write_then_fail)
  with pytest.raises(errors.CheckpointError,
                     match=r"latest/24: writing the checkpoint failed .*No space left.*kept"):
    checkpointer.save_latest(24, {"w": jnp.full(3, 2.0)}, {"epoch": 2})
  monkeypatch.undo()
  assert steps(tmp_path / "latest") == [12]
  assert any(name.startswith("24.") for name in os.listdir(tmp_path / "latest"))  # the debris
  checkpointer.close()

  reopened = checkpoint.Checkpointer(tmp_path, cleanup=True)  # what a rerun does
  state, meta = reopened.restore_latest({"w": jnp.zeros(3)})
  assert meta == {"epoch": 1} and state["w"].tolist() == [1.0, 1.0, 1.0]
  reopened.save_latest(24, {"w": jnp.full(3, 2.0)}, {"epoch": 2})
  assert os.listdir(tmp_path / "latest") == ["24"]  # max_to_keep=1; the debris is gone
  assert reopened.restore_latest({"w": jnp.zeros(3)})[1] == {"epoch": 2}
  reopened.close()


def test_restore_of_an_empty_folder_is_none(tmp_path):
  checkpointer = checkpoint.Checkpointer(tmp_path)
  assert checkpointer.restore_latest({"w": jnp.zeros(3)}) is None
  assert checkpointer.restore_best({"w": jnp.zeros(3)}) is None
  checkpointer.close()
