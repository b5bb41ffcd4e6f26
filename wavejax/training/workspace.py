"""A workdir's record of the config and corpus it was trained with, the check that keeps runs of
two configs (or two corpora) out of one workdir, and the locks that keep two processes out of one
workdir or fold.

- `config.json` (per fold): the config, compared with every later run's except `IGNORED_FIELDS`.
- `corpus.json` (per workdir): what identifies the corpus (`corpus_identity`); a later run
  compares it, so `data.root` may move (it is in `CORPUS_FIELDS`, not compared as a value) while
  a different corpus is refused.
- `running.lock` (per workdir, per fold): the owner's host and pid, heartbeat and stale-lock
  takeover of `training.sweep`'s cell locks (the same file a sweep cell uses, so a sweep worker
  that holds its cell's lock trains that fold without taking it twice).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pathlib
import re

import jax
import numpy as np

from wavejax import config as wavejax_config
from wavejax import errors
from wavejax.reporting import results
from wavejax.training import sweep

# Fields that do not change the numbers: where the data is read or cached from, how many processes
# decode it, and what is monitored (TensorBoard, filter snapshots, profiler traces) or where the
# clips live during training. A rerun may change them and resume.
IGNORED_FIELDS = (
    "data.cache_dir",
    "data.num_workers",
    "train.tensorboard",
    "train.filter_images_every",
    "train.profile_steps",
    "train.data_on_device",
)
# Fields whose change is checked through the corpus they lead to (`check_corpus`), not compared.
CORPUS_FIELDS = ("data.root",)

CONFIG_FILE = "config.json"
CORPUS_FILE = "corpus.json"
LOCK_FILE = "running.lock"


def config_json(config) -> dict:
  """The config as plain JSON, without the fold (one workdir holds every fold)."""
  data = json.loads(config.to_json_best_effort(sort_keys=True))
  data.pop("fold", None)
  return data


def read_json(path: pathlib.Path, fix: str, required=()) -> dict:
  """The JSON object in `path`, which wavejax wrote; a damaged one is a one-line `ResultsError`
  naming it and `fix`."""
  try:
    data = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise errors.ResultsError(f"{path}: damaged ({errors.one_line(e)}); {fix}") from e
  missing = [key for key in required if not isinstance(data, dict) or key not in data]
  if not isinstance(data, dict) or missing:
    raise errors.ResultsError(f"{path}: damaged (no {', '.join(missing) or 'JSON object'}); "
                              f"{fix}")
  return data


def check_config(config, fold_dir: pathlib.Path) -> bool:
  """Refuses to mix runs of different configs in one workdir: the fold's own recorded config and
  those of the workdir's other folds must all match `config` (but `IGNORED_FIELDS`).

  Returns True when a `CORPUS_FIELDS` field changed: then `check_corpus` must compare the corpus.
  """
  current = config_json(config)
  recorded = sorted(fold_dir.parent.glob(f"fold_*/{CONFIG_FILE}"))
  own = fold_dir / CONFIG_FILE
  moved = False
  for path in sorted(recorded, key=lambda p: p != own):  # the fold's own first
    stored = read_json(path, "if it was written by this same config, delete it and rerun (it is "
                       "written again); otherwise use a new --workdir", required=("model",))
    changed = [field for field in differences(stored, current) if field not in IGNORED_FIELDS]
    moved = moved or any(field in CORPUS_FIELDS for field in changed)
    changed = sorted(field for field in changed if field not in CORPUS_FIELDS)
    if changed:
      raise errors.ConfigError(
          f"{path.parent} was written by a different config (changed: {', '.join(changed[:5])}); "
          "use a new --workdir or the original config")
  if moved and not (fold_dir.parent / CORPUS_FILE).exists() and not (
      fold_dir.parent / "folds.json").exists():
    raise errors.ConfigError(
        f"{fold_dir.parent} was written with another config.data.root and records no corpus to "
        "compare with; use a new --workdir or the original config.data.root")
  return moved


def record_config(config, fold_dir: pathlib.Path) -> None:
  """Writes the fold's `config.json` (once; `check_config` compares later runs with it)."""
  path = fold_dir / CONFIG_FILE
  if not path.exists():
    results.write_json(path, config_json(config))


def differences(stored: dict, current: dict, prefix: str = "") -> list[str]:
  """Dotted fields that differ; a field missing from `stored` whose current value is its
  `wavejax_config.ADDED_FIELDS` value (the behaviour before the field existed) does not."""
  out = []
  for key in set(stored) | set(current):
    old, new = stored.get(key), current.get(key)
    if isinstance(old, dict) and isinstance(new, dict):
      out += differences(old, new, f"{prefix}{key}.")
    elif key not in stored and wavejax_config.ADDED_FIELDS.get(f"{prefix}{key}", object()) == new:
      continue
    elif old != new:
      out.append(f"{prefix}{key}")
  return out


# ------------------------------------------------------------------------------------------------
# The corpus


def corpus_identity(data) -> dict:
  """What identifies a fold's corpus (`loop.FoldData`): its dataset, class names and a digest of
  every utterance's id, session, speaker and class."""
  rows = sorted(f"{u.utt_id}\t{u.session}\t{u.speaker}\t{data.classes[int(target)]}"
                for u, target in zip(data.manifest, data.targets))
  return {"dataset": data.manifest.dataset, "classes": list(data.classes),
          "num_utterances": len(rows),
          "sha256": hashlib.sha256("\n".join(rows).encode()).hexdigest()}


def check_corpus(data, workdir: pathlib.Path, root_changed: bool) -> None:
  """Refuses a corpus other than the one the workdir was trained on (`corpus.json`; for workdirs
  of older versions, the utterances and sessions of `folds.json` when `data.root` changed)."""
  workdir = pathlib.Path(workdir)
  path = workdir / CORPUS_FILE
  if path.exists():
    stored = read_json(path, "delete it and rerun (it is written again from the corpus)",
                       required=("sha256",))
    current = corpus_identity(data)
    if stored == current:
      return
    changed = [key for key in ("dataset", "classes", "num_utterances") if stored.get(key) !=
               current[key]] or ["utterance ids, sessions, speakers or labels"]
  elif root_changed:
    assignment = read_json(workdir / "folds.json", "use a new --workdir",
                           required=("utterances",))["utterances"]
    current = {u.utt_id: u.session for u in data.manifest}
    if assignment == current:
      return
    changed = ["utterance ids or sessions"]
  else:
    return
  raise errors.ConfigError(
      f"{data.manifest.root}: not the corpus {workdir} was trained on (differs from {path.name} in"
      f" {', '.join(changed)}); point config.data.root at that corpus or use a new --workdir")


def record_corpus(data, workdir: pathlib.Path) -> None:
  path = pathlib.Path(workdir) / CORPUS_FILE
  if not path.exists():
    results.write_json(path, corpus_identity(data))


# ------------------------------------------------------------------------------------------------
# Temporary files


def remove_stale_temporaries(directory: pathlib.Path) -> None:
  """Deletes the temporary files (`atomic.temporary_path`, the metrics log's) that processes of
  this host left in `directory` when they were killed mid-write; a live process's are kept."""
  patterns = (re.compile(rf"^\..+\.{re.escape(sweep.HOST)}\.(\d+)\.[0-9a-f]{{8}}\.tmp$"),
              re.compile(r"^\.metrics\.jsonl\.(\d+)\.tmp$"))
  try:
    names = [p for p in pathlib.Path(directory).iterdir() if p.name.endswith(".tmp")]
  except OSError:
    return
  for path in names:
    match = next((m for m in (p.match(path.name) for p in patterns) if m), None)
    if match and not sweep.pid_alive(int(match[1])):
      with contextlib.suppress(OSError):
        path.unlink()


# ------------------------------------------------------------------------------------------------
# Locks


def _primary_decides(ok: bool) -> bool:
  """Process 0's `ok`, on every process (only process 0 takes locks)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


def busy_message(directory: pathlib.Path, path: pathlib.Path, owner) -> str:
  holder = (f"{owner.host} pid {owner.pid}" if owner is not None and owner.pid else
            "an unknown process (its lock file is unreadable)")
  return (f"{directory} is in use by {holder} (lock {path}); wait for that run to end, or, if "
          f"that process is gone, delete {path} and rerun")


def held_by_other(path: pathlib.Path, timeout_s: float = sweep.DEFAULT_LOCK_TIMEOUT_S):
  """The owner of the live lock `path` when it is another process's, else None."""
  owner = sweep.read_owner(path)
  if owner is None or sweep.holds(path):
    return None
  return owner if sweep.stale_reason(path, owner, timeout_s) is None else None


@contextlib.contextmanager
def owned(directory, others=(), timeout_s: float = sweep.DEFAULT_LOCK_TIMEOUT_S):
  """Holds `directory`'s lock while the body runs (raising `errors.LockError` naming the holder
  when another live process holds it), after checking that no other process holds one of the
  locks `others` (an enclosing workdir's, or the folds' in it). A lock this process holds already
  (a sweep cell's) is used as it is; a dead holder's lock is taken over (`sweep.acquire_lock`)."""
  directory = pathlib.Path(directory)
  path = directory / LOCK_FILE
  existed = directory.exists()
  lock, message = None, None
  if jax.process_index() == 0:
    if not sweep.holds(path):
      lock = sweep.acquire_lock(path, timeout_s)
      if lock is None:
        message = busy_message(directory, path, sweep.read_owner(path))
    for other in ([] if message else others):
      owner = held_by_other(pathlib.Path(other), timeout_s)
      if owner is not None:
        message = busy_message(pathlib.Path(other).parent, pathlib.Path(other), owner)
        break
  if not _primary_decides(message is None):
    if lock is not None:
      lock.release()
    raise errors.LockError(message or f"{directory}: process 0 of this run could not take its "
                           "lock; see its error")
  try:
    yield
  finally:
    if lock is not None:
      lock.release()
      if not existed:
        with contextlib.suppress(OSError):
          directory.rmdir()  # only when empty: a command refused before it wrote anything
