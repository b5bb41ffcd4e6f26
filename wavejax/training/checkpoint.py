"""Orbax checkpoints of a training run: the latest state (to resume) and the best-on-validation
parameters (to report and predict).

`latest/<step>` is numbered by the optimiser step (after an epoch, or mid-epoch when a run is
preempted), `best/<epoch>` by epoch; each keeps one checkpoint. Orbax writes a checkpoint into a
temporary folder, renames it when complete and only then deletes the previous one, so a save that
fails or is killed part-way never replaces a good checkpoint (tests/test_checkpoint.py). Every
process of a multi-process run calls save and restore; Orbax coordinates them.

What is read back is checked before use: the meta must be a JSON object with the keys the caller
needs, every floating-point value of the restored tree must be finite, and the tree must hash to
the digest its save recorded in the meta (`DIGEST_KEY`; checkpoints of older versions have none).
Any failure, Orbax's and TensorStore's errors included, is a one-line `CheckpointError` naming the
step folder; `damaged_advice` says what deleting it does.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging as std_logging
import os
import pathlib
import shutil
import sys
import uuid

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from wavejax import errors

# The meta key of the state's digest (sha256 of every leaf's bytes, dtype and shape).
DIGEST_KEY = "state_sha256"
# Orbax's words for a checkpoint of another model (a damaged file gives other errors).
MISMATCH = ("tree structure", "not compatible with the stored shape", "do not match")
# The operating system's error descriptions, longest first ("File too large", ...).
_OS_ERRORS = sorted({os.strerror(code) for code in errno.errorcode}, key=len, reverse=True)
# Folders being deleted are renamed to this prefix first, so a deletion that is cut short never
# leaves a half-deleted step under its step name.
_DELETING = ".deleting-"


def _manager(directory: pathlib.Path, cleanup: bool, read_only: bool) -> ocp.CheckpointManager:
  # A reader creates nothing (Orbax's own read_only option logs warnings on every open).
  options = ocp.CheckpointManagerOptions(max_to_keep=1, create=not read_only,
                                         enable_async_checkpointing=False,
                                         cleanup_tmp_directories=cleanup and not read_only)
  try:
    return ocp.CheckpointManager(directory.absolute(), options=options,
                                 item_names=("state", "meta"))
  except (OSError, ValueError, KeyError) as e:
    raise errors.CheckpointError(
        f"{directory}: cannot open the checkpoint folder ({reason(e)}); check its permissions, "
        "or delete its damaged step folder and rerun") from e


class Checkpointer:
  """`latest/` holds the whole train state, `best/` the model variables of the epoch with the best
  validation metric; each with a JSON `meta` dict.

  cleanup=True (the trainer) deletes temporary folders left by interrupted saves; readers that may
  run beside a training run (predict) leave them, and with read_only=True write nothing (a run on
  a read-only mount can be read). `kinds` opens only some of the two (a group keeps its members'
  latest state in one checkpoint of its own and only their best in their folders:
  `training.group`).
  """

  def __init__(self, directory, cleanup: bool = False, read_only: bool = False,
               kinds=("latest", "best")):
    directory = pathlib.Path(directory)
    if cleanup and not read_only:
      for folder in kinds:
        for leftover in (directory / folder).glob(_DELETING + "*"):
          shutil.rmtree(leftover, ignore_errors=True)
    opened = {kind: _manager(directory / kind, cleanup, read_only) for kind in kinds}
    self.latest, self.best = opened.get("latest"), opened.get("best")

  def save_latest(self, step: int, state, meta: dict) -> None:
    """`step`: the optimiser step of `state` (the checkpoint's folder name)."""
    _save(self.latest, step, state, meta)

  def save_best(self, epoch: int, weights: dict, meta: dict) -> None:
    """`weights`: the model variables to keep, e.g. {"params": ..., "batch_stats": ...}.

    Steps >= `epoch` are an abandoned attempt's (a run that restarted before them): they are
    deleted first, so the new save is neither refused as existing nor outranked by them."""
    self.discard_best_from(epoch)
    _save(self.best, epoch, weights, meta)

  def discard_best_from(self, epoch: int) -> None:
    """Deletes the best checkpoints of epochs >= `epoch`."""
    stale = [step for step in self.best.all_steps() if step >= epoch]
    for step in stale:
      logging.warning("%s/%d: left by an earlier attempt that restarted before it; deleting it",
                      self.best.directory, step)
      _delete(self.best, step)

  def best_steps(self) -> list[int]:
    return sorted(self.best.all_steps())

  def latest_steps(self) -> list[int]:
    return sorted(self.latest.all_steps())

  def restore_latest(self, target, required=("epoch",)):
    """`(state, meta)` of the latest checkpoint laid out like `target`, or None if there is none."""
    return _restore(self.latest, target, None, required)

  def restore_best(self, target: dict, epoch: int | None = None, required=("epoch",)):
    """`(weights, meta)` of the best checkpoint (of `epoch`; default the newest) laid out like
    `target`, or None."""
    return _restore(self.best, target, epoch, required)

  def close(self) -> None:
    for manager in (self.latest, self.best):
      if manager is None:
        continue
      try:
        manager.close()
      except Exception as e:  # pylint: disable=broad-exception-caught
        # Closing waits for pending work; after a failed save that work failed too, and the
        # failure was already raised (as a CheckpointError) by the save.
        logging.info("%s: closing after a failed operation: %s", manager.directory, reason(e))


def reason(error: BaseException, limit: int = 200) -> str:
  """The first line of the message of the error that started `error` (Orbax wraps TensorStore's
  in its own), at most `limit` characters."""
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  text = (str(error).strip().splitlines() or [type(error).__name__])[0]
  if len(text) <= limit:
    return text
  os_error = next((words for words in _OS_ERRORS if words in text), None)
  if os_error is not None:  # e.g. "No space left on device": what the user must fix
    return f"{text[:limit // 2]} ... {os_error} ..."
  return f"{text[:limit // 2]} ... {text[-limit // 2:]}"


def digest(tree) -> str | None:
  """sha256 over every leaf's dtype, shape and bytes (this process's copy of replicated arrays);
  None when a leaf is split across processes (each holds only part of it)."""
  sha = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      if not leaf.is_fully_replicated:
        return None
      leaf = leaf.addressable_data(0)
    value = np.asarray(jax.device_get(leaf))
    sha.update(f"{value.dtype.str}{value.shape}".encode())
    sha.update(np.ascontiguousarray(value).tobytes())
  return sha.hexdigest()


def all_finite(tree) -> bool:
  """True when every floating-point value of `tree` is finite."""
  checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)]
  return bool(jnp.all(jnp.stack(checks))) if checks else True


def damaged_advice(manager, step: int) -> str:
  """What deleting the damaged step folder `step` does, for the error line."""
  folder = pathlib.Path(manager.directory)
  others = sorted(s for s in manager.all_steps() if s != step)
  if folder.name == "latest":
    if others:
      return f"delete {folder / str(step)} and rerun: it resumes from step {others[-1]}"
    return (f"delete {folder / str(step)} and rerun: the fold trains again from its first epoch "
            "(there is no earlier checkpoint)")
  return (f"delete {folder.parent.parent} and rerun the training command: the fold trains again "
          "from its first epoch (its best weights were kept in this checkpoint alone)")


def _save(manager, step, item, meta) -> None:
  meta = {**meta, DIGEST_KEY: digest(item)}
  try:
    if step in manager.all_steps():  # only a caller that knows it is stale gets here
      _delete(manager, step)
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(item),
                                               meta=ocp.args.JsonSave(meta)), force=True)
    manager.wait_until_finished()
  except (OSError, ValueError) as e:  # TensorStore reports a full disk as a ValueError
    with contextlib.suppress(Exception):  # let Orbax's other threads of this save end first
      manager.wait_until_finished()
    kept = sorted(s for s in manager.all_steps() if s != step)
    kept = f"step {kept[-1]}" if kept else "there was none"
    raise errors.CheckpointError(
        f"{manager.directory}/{step}: writing the checkpoint failed ({reason(e)}); the previous "
        f"one is kept ({kept}): free disk space (or fix the folder's permissions) and rerun to "
        "resume") from e


def _delete(manager, step: int) -> None:
  """Deletes step `step`: renamed away first (atomic), then removed."""
  folder = pathlib.Path(manager.directory) / str(step)
  doomed = folder.with_name(f"{_DELETING}{step}-{uuid.uuid4().hex[:8]}")
  try:
    folder.rename(doomed)
  except FileNotFoundError:
    pass
  shutil.rmtree(doomed, ignore_errors=True)
  manager.reload()


def _restore(manager, target, step, required, attempts: int = 3):
  steps = manager.all_steps()
  if step is None:
    step = max(steps, default=None)
  if step is None or step not in steps:
    return None
  where = f"{manager.directory}/{step}"
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    state, meta = restored.state, restored.meta
  except Exception as e:  # pylint: disable=broad-exception-caught  (Orbax raises bare Exception)
    if attempts > 1 and not (pathlib.Path(manager.directory) / str(step)).exists():
      # Replaced by a newer checkpoint while this reader (predict beside a training run) read it.
      manager.reload()
      return _restore(manager, target, None, required, attempts - 1)
    if any(text in str(e) for text in MISMATCH):
      raise errors.CheckpointError(
          f"{where}: checkpoint does not match this model/config ({reason(e)}); use the config "
          f"that wrote it, or {damaged_advice(manager, step)}") from e
    raise _damaged(manager, step, e) from e
  if not isinstance(meta, dict) or any(key not in meta for key in required):
    raise _damaged(manager, step, ValueError(f"its meta lacks {', '.join(required)}"))
  recorded = meta.pop(DIGEST_KEY, None)
  if not all_finite(state):
    raise _damaged(manager, step, ValueError("it holds NaN or infinite values"))
  if recorded is not None and recorded != digest(state):
    raise _damaged(manager, step, ValueError("its arrays differ from those saved"))
  return state, meta


def _damaged(manager, step: int, error: BaseException) -> errors.CheckpointError:
  return errors.CheckpointError(
      f"{manager.directory}/{step}: damaged checkpoint ({reason(error)}); "
      f"{damaged_advice(manager, step)}")


def _from_orbax_after_its_error(message: str, error: BaseException | None, source=None) -> bool:
  """True for the noise Orbax's other reads and writes make after the first one failed (the error
  that `_save` / `_restore` report in one line): worker threads logging that same error, TensorStore
  callbacks into Orbax's event loop that is already closed, tasks and coroutines it left behind."""
  if "Event loop is closed" in message or "Event loop is closed" in str(error or ""):
    return True
  code = getattr(source, "cr_code", None)
  if code is not None and "orbax" in code.co_filename:
    return True
  return ("exception was never retrieved" in message or "Task was destroyed" in message) and (
      "orbax" in message or "TensorStore" in message or "OCDBT" in message)


class _QuietOrbaxFailures(std_logging.Filter):
  """Drops Orbax's log records of an error already raised (`_from_orbax_after_its_error`)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    message = record.getMessage()
    if "orbax" in record.pathname and "raised an exception" in message:
      return False
    error = record.exc_info[1] if record.exc_info else None
    return not _from_orbax_after_its_error(message, error)


def _quiet_unraisable(previous):
  def hook(unraisable) -> None:
    if not _from_orbax_after_its_error(str(unraisable.err_msg or ""), unraisable.exc_value,
                                       unraisable.object):
      previous(unraisable)
  hook.wavejax_quiet_orbax = True
  return hook


_FILTER = _QuietOrbaxFailures()
for _name in ("absl", "asyncio", "concurrent.futures"):
  if not any(isinstance(f, _QuietOrbaxFailures) for f in std_logging.getLogger(_name).filters):
    std_logging.getLogger(_name).addFilter(_FILTER)
if not getattr(sys.unraisablehook, "wavejax_quiet_orbax", False):
  sys.unraisablehook = _quiet_unraisable(sys.unraisablehook)
