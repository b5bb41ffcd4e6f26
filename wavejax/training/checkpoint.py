"""Orbax checkpoints of a training run: the latest state (to resume) and the best-on-validation
parameters (to report and predict).

`latest/<step>` is numbered by the optimiser step (after an epoch, or mid-epoch when a run is
preempted), `best/<epoch>` by epoch; each keeps one checkpoint. Orbax writes a checkpoint into a
temporary folder, renames it when complete and only then deletes the previous one, so a save that
fails or is killed part-way never replaces a good checkpoint (tests/test_checkpoint.py). Every
process of a multi-process run calls save and restore; Orbax coordinates them.
"""

from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp

from wavejax import errors


def _manager(directory: pathlib.Path, cleanup: bool) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                         enable_async_checkpointing=False,
                                         cleanup_tmp_directories=cleanup)
  return ocp.CheckpointManager(directory.absolute(), options=options,
                               item_names=("state", "meta"))


class Checkpointer:
  """`latest/` holds the whole train state, `best/` the model variables of the epoch with the best
  validation metric; each with a JSON `meta` dict.

  cleanup=True (the trainer) deletes temporary folders left by interrupted saves; readers that may
  run beside a training run (predict) leave them. `kinds` opens only some of the two (a group
  keeps its members' latest state in one checkpoint of its own and only their best in their
  folders: `training.group`).
  """

  def __init__(self, directory, cleanup: bool = False, kinds=("latest", "best")):
    directory = pathlib.Path(directory)
    self.latest = _manager(directory / "latest", cleanup) if "latest" in kinds else None
    self.best = _manager(directory / "best", cleanup) if "best" in kinds else None

  def save_latest(self, step: int, state, meta: dict) -> None:
    """`step`: the optimiser step of `state` (the checkpoint's folder name)."""
    _save(self.latest, step, state, meta)

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
    for manager in (self.latest, self.best):
      if manager is not None:
        manager.close()


def _save(manager, step, item, meta) -> None:
  try:
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(item),
                                               meta=ocp.args.JsonSave(meta)), force=True)
    manager.wait_until_finished()
  except OSError as e:
    raise errors.CheckpointError(
        f"{manager.directory}/{step}: writing the checkpoint failed ({e}); the previous one is "
        "kept: free disk space (or fix the folder's permissions) and rerun to resume") from e


def _restore(manager, target):
  step = manager.latest_step()
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  except (ValueError, KeyError, FileNotFoundError) as e:
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    reason = reason if len(reason) <= 200 else reason[:200] + "..."
    raise errors.CheckpointError(
        f"{manager.directory}/{step}: checkpoint does not match this model/config or is damaged "
        f"({reason}); use the config that wrote it, or delete that step's folder (a damaged "
        "save) and rerun") from e
  return restored.state, restored.meta
