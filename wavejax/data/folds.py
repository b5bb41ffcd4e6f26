"""Leave-one-session-out cross-validation (paper Sec. 4.1).

Fold k tests on session k and trains on the others. As in the paper, a small validation set
(32 utterances) is held out of the test session, stratified by label and drawn with a seeded
generator; `val_from="train"` draws it from the training sessions instead, so that the test
session stays whole.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from wavejax import errors
from wavejax.data.manifest import EMOTIONS, GENDERS, Manifest

TASKS = {"emotion": ("emotion", EMOTIONS), "gender": ("gender", GENDERS)}


@dataclasses.dataclass(frozen=True)
class Fold:
  """Indices into a manifest. `test_session` is the held-out session."""
  number: int
  test_session: int
  train: np.ndarray
  val: np.ndarray
  test: np.ndarray


def task_classes(task: str) -> tuple[str, ...]:
  if task not in TASKS:
    raise errors.ConfigError(f"config.task={task!r} is not a task; choose one of {sorted(TASKS)}")
  return TASKS[task][1]


def labels(manifest: Manifest, task: str) -> np.ndarray:
  """Class index of every utterance for `task` (order of `task_classes(task)`)."""
  classes = task_classes(task)
  field = TASKS[task][0]
  index = {name: i for i, name in enumerate(classes)}
  values = manifest.field(field)
  unknown = sorted(set(values) - set(index))
  if unknown:
    raise errors.DatasetError(
        f"{manifest.root}: {field} values {unknown} are not classes of task {task!r} {classes}")
  return np.array([index[v] for v in values], np.int32)


def num_folds(manifest: Manifest) -> int:
  return len(manifest.sessions)


def leave_one_session_out(manifest: Manifest, fold: int, targets: np.ndarray, *,
                          val_size: int = 32, val_from: str = "test", seed: int = 0) -> Fold:
  """The train/val/test split of fold `fold` (1-based: fold k tests on the k-th session)."""
  sessions = manifest.sessions
  if not 1 <= fold <= len(sessions):
    raise errors.ConfigError(
        f"config.fold={fold} is out of range: {manifest.dataset} has folds 1..{len(sessions)}")
  if val_from not in ("test", "train"):
    raise errors.ConfigError(f"config.data.val_from={val_from!r}: choose 'test' or 'train'")
  test_session = sessions[fold - 1]
  session_of = np.array(manifest.field("session"))
  in_test = np.flatnonzero(session_of == test_session)
  in_train = np.flatnonzero(session_of != test_session)
  rng = np.random.default_rng([seed, fold])
  if val_from == "test":
    val = stratified_sample(in_test, targets[in_test], val_size, rng)
    in_test = np.setdiff1d(in_test, val)
  else:
    val = stratified_sample(in_train, targets[in_train], val_size, rng)
    in_train = np.setdiff1d(in_train, val)
  if min(len(in_train), len(in_test)) == 0:
    raise errors.DatasetError(
        f"fold {fold}: {len(in_train)} training and {len(in_test)} test utterances left after "
        f"holding out {val_size} for validation; lower config.data.val_size")
  return Fold(fold, int(test_session), in_train, np.sort(val), in_test)


def stratified_sample(indices: np.ndarray, targets: np.ndarray, size: int,
                      rng: np.random.Generator) -> np.ndarray:
  """Draws `size` of `indices` with class proportions matching `targets` (largest remainder)."""
  size = min(size, len(indices))
  classes, counts = np.unique(targets, return_counts=True)
  quota = counts * size / counts.sum()
  take = np.floor(quota).astype(int)
  remainder_order = np.argsort(-(quota - take), kind="stable")
  take[remainder_order[:size - take.sum()]] += 1
  chosen = [rng.choice(indices[targets == c], n, replace=False) for c, n in zip(classes, take)]
  return np.sort(np.concatenate(chosen))
