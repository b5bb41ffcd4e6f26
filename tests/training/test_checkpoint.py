"""Checkpoints: a save that fails part-way never replaces the previous good checkpoint."""

import logging as std_logging
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


def test_a_reader_follows_a_checkpoint_replaced_while_it_reads(tmp_path):
  """predict beside a training run: the best checkpoint it listed is replaced by a newer one."""
  writer = checkpoint.Checkpointer(tmp_path, cleanup=True)
  writer.save_best(1, {"w": jnp.ones(3)}, {"epoch": 1})
  reader = checkpoint.Checkpointer(tmp_path, read_only=True)
  writer.save_best(2, {"w": jnp.full(3, 2.0)}, {"epoch": 2})  # deletes best/1 (max_to_keep=1)
  weights, meta = reader.restore_best({"w": jnp.zeros(3)})
  assert meta == {"epoch": 2} and weights["w"].tolist() == [2.0, 2.0, 2.0]
  reader.close()
  writer.close()


def test_an_existing_best_step_of_an_abandoned_attempt_is_replaced(tmp_path):
  """A run that restarted before epoch 3 saves best/3 again: the old attempt's step is replaced,
  not refused as existing."""
  checkpointer = checkpoint.Checkpointer(tmp_path, cleanup=True)
  checkpointer.save_best(2, {"w": jnp.ones(3)}, {"epoch": 2})
  checkpointer.save_best(3, {"w": jnp.ones(3)}, {"epoch": 3})
  checkpointer.save_best(3, {"w": jnp.full(3, 5.0)}, {"epoch": 3})
  assert steps(tmp_path / "best") == [3]
  weights, _ = checkpointer.restore_best({"w": jnp.zeros(3)})
  assert weights["w"].tolist() == [5.0, 5.0, 5.0]
  assert not [p for p in os.listdir(tmp_path / "best") if not p.isdigit()]
  checkpointer.close()


def test_restored_values_are_checked(tmp_path):
  checkpointer = checkpoint.Checkpointer(tmp_path, cleanup=True)
  checkpointer.save_latest(6, {"w": jnp.array([1.0, jnp.nan])}, {"epoch": 1})
  with pytest.raises(errors.CheckpointError, match=r"latest/6: damaged checkpoint \(it holds NaN "
                     r"or infinite values\); delete .*latest/6 and rerun: the fold trains again"):
    checkpointer.restore_latest({"w": jnp.zeros(2)})
  checkpointer.close()


def test_a_long_reason_keeps_the_operating_systems_words():
  middle = ValueError("open " + "a/" * 200 + " [Errno 28] No space left on device " + "b" * 300)
  wrapped = RuntimeError("orbax failed")
  wrapped.__cause__ = middle
  text = checkpoint.reason(wrapped)
  assert text.startswith("open a/a/") and "No space left on device" in text
  assert len(text) < 220
  assert checkpoint.reason(ValueError("short one\nsecond line")) == "short one"
  assert checkpoint.reason(ValueError("c" * 300)) == "c" * 100 + " ... " + "c" * 100


def test_only_orbaxs_leftovers_of_a_reported_error_are_dropped_from_the_logs():
  def record(message):
    return std_logging.LogRecord("asyncio", std_logging.ERROR, "asyncio/base_events.py", 1,
                                 message, None, None)

  leftovers = ["Future exception was never retrieved\nfuture: <Future finished exception="
               "ValueError('OUT_OF_RANGE: Error reading \"d/\" in OCDBT database at ...')>",
               "Task was destroyed but it is pending! task: <Task coro=<orbax ... _save()>>",
               "Exception in callback ...: RuntimeError('Event loop is closed')"]
  unrelated = ["Future exception was never retrieved\nfuture: <Future exception=KeyError('x')>",
               "Task was destroyed but it is pending! task: <Task coro=<mine()>>"]
  quiet = checkpoint._QuietOrbaxFailures()
  assert [quiet.filter(record(m)) for m in leftovers] == [False, False, False]
  assert [quiet.filter(record(m)) for m in unrelated] == [True, True]
