"""Orbax checkpoints of a training run: the latest state (to resume) and the best-on-validation
parameters (to report and predict). Orbax writes each checkpoint to a temporary folder and renames
it when complete, so a crash mid-write never replaces a good checkpoint.
"""

from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp

from wavejax import errors


def _manager(directory: pathlib.Path) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(directory.absolute(), options=options,
                               item_names=("state", "meta"))


class Checkpointer:
  """`latest/` holds the whole train state after the last finished epoch, `best/` the model
  variables of the epoch with the best validation metric; each with a JSON `meta` dict."""

  def __init__(self, directory):
    directory = pathlib.Path(directory)
    self.latest = _manager(directory / "latest")
    self.best = _manager(directory / "best")

  def save_latest(self, epoch: int, state, meta: dict) -> None:
    _save(self.latest, epoch, state, meta)

  def save_best(self, epoch: int, weights: dict, meta: dict) -> None:
    """`weights`: the model variables to keep, e.g. {"params": ..., "batch_stats": ...}."""
    _save(self.best, epoch, weights, meta)

  def restore_latest(self, target):
    """`(state, meta)` of the latest checkpoint laid out like `target`, or None if there is none."""
    return _restore(self.latest, target)

  def restore_best(self, target: dict):
    """`(weights, meta)` of the best checkpoint laid out like `target`, or None."""
    return _restore(self.best, target)

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def _save(manager, epoch, item, meta) -> None:
  manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(item),
                                              meta=ocp.args.JsonSave(meta)), force=True)
  manager.wait_until_finished()


def _restore(manager, target):
  epoch = manager.latest_step()
  if epoch is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  try:
    restored = manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  except (ValueError, KeyError, FileNotFoundError) as e:
    raise errors.CheckpointError(
        f"{manager.directory}/{epoch}: checkpoint does not match this model/config ({e}); "
        "resume with the config that wrote it or use a new --workdir") from e
  return restored.state, restored.meta
