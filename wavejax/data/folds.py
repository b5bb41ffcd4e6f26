"""Tasks and leave-one-session-out cross-validation (paper Sec. 4.1).

Fold k tests on session k and trains on the others. As in the paper, a small validation set
(32 utterances) is held out of the test session, stratified by label and drawn with a seeded
generator; `val_from="train"` draws it from the training sessions instead, so that the test
session stays whole. For corpora without sessions the loaders set `session` to a speaker group
(`wavejax.data.grouping`); `write_assignment` records the groups in a workdir and
`config.data.fold_assignment` reuses such a file.

Tasks (the utterance field classified, and its classes):
  emotion  the 4-class map across corpora: neutral, happy, sad, angry
  gender   F, M (every utterance must have a known gender)
  label    the corpus' full label set (RAVDESS 8, CREMA-D 6, EmoDB 7 classes) or the labels of a
           `manifest`/`folder` dataset: `Manifest.label_classes`, sorted; needs the manifest
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import pathlib

import numpy as np
from absl import logging

from wavejax import atomic, errors
from wavejax.data.manifest import EMOTIONS, GENDERS, UNKNOWN, Manifest

# task -> (Utterance field, classes); None: the classes come from the manifest.
TASKS = {"emotion": ("emotion", EMOTIONS), "gender": ("gender", GENDERS), "label": ("label", None)}


@dataclasses.dataclass(frozen=True)
class Fold:
  """Indices into a manifest. `test_session` is the held-out session."""
  number: int
  test_session: int
  train: np.ndarray
  val: np.ndarray
  test: np.ndarray


def task_classes(task: str, manifest: Manifest | None = None) -> tuple[str, ...]:
  """The class names of `task`, in the order of the integer targets.

  `label` takes its classes from the manifest (`Manifest.label_classes`), so it needs one.
  """
  classes = TASKS[_check_task(task)][1]
  if classes is not None:
    return classes
  if manifest is None:
    raise errors.ConfigError(f"task {task!r} takes its classes from the dataset; pass the manifest "
                             "to folds.task_classes")
  return manifest.label_classes


def task_field(task: str) -> str:
  """The `Utterance` attribute that `task` classifies."""
  return TASKS[_check_task(task)][0]


def _check_task(task: str) -> str:
  if task not in TASKS:
    raise errors.ConfigError(f"config.task={task!r} is not a task; choose one of {sorted(TASKS)}")
  return task


def select(manifest: Manifest, task: str) -> Manifest:
  """The utterances usable for `task`: those whose field is one of its classes.

  `emotion` drops the corpus labels outside the 4-class map (e.g. RAVDESS calm, CREMA-D disgust);
  `gender` and `label` keep every utterance (an unknown gender is reported by `labels`).
  """
  classes = task_classes(task, manifest)
  field = task_field(task)
  if task == "gender":
    return manifest
  kept = [u for u in manifest if getattr(u, field) in classes]
  if len(kept) == len(manifest):
    return manifest
  if not kept:
    raise errors.DatasetError(
        f"{manifest.root}: no utterance of {manifest.dataset} has a class of task {task!r} "
        f"{classes}; choose --config.task=label to classify its own labels")
  return manifest.replace(kept)


def labels(manifest: Manifest, task: str) -> np.ndarray:
  """Class index of every utterance for `task` (order of `task_classes(task, manifest)`)."""
  classes = task_classes(task, manifest)
  field = task_field(task)
  index = {name: i for i, name in enumerate(classes)}
  values = manifest.field(field)
  unknown = sorted(set(values) - set(index))
  if field == "gender" and UNKNOWN in unknown:
    first = next(u for u in manifest if u.gender == UNKNOWN)
    raise errors.DatasetError(
        f"{manifest.root}: the gender of {values.count(UNKNOWN)} utterance(s) is unknown (first: "
        f"{first.path}); add a gender column to the manifest, or choose task emotion or label")
  if unknown:
    first = next(u for u in manifest if getattr(u, field) in unknown)
    raise errors.DatasetError(
        f"{manifest.root}: {field} values {unknown} are not classes of task {task!r} {classes} "
        f"(first: {first.path}, label {first.label!r}); keep only the usable utterances with "
        "folds.select(manifest, task) or pipeline.load_dataset(config.data, task=config.task)")
  return np.array([index[v] for v in values], np.int32)


def num_folds(manifest: Manifest) -> int:
  return len(manifest.sessions)


def write_assignment(manifest: Manifest, path, classes=None) -> pathlib.Path:
  """Writes the fold assignment (utterance -> session/group, and each fold's speakers) as JSON.

  Fold k tests on the k-th session in sorted order. The file is written atomically, with a
  SHA-256 digest of its content (`digest`) that `read_assignment` checks; pass it back through
  `config.data.fold_assignment` (or `apply_assignment`) to reuse the same folds.
  """
  path = pathlib.Path(path)
  sessions = manifest.sessions
  folds = []
  for number, session in enumerate(sessions, start=1):
    members = [u for u in manifest if u.session == session]
    folds.append({"fold": number, "test_session": session, "num_utterances": len(members),
                  "speakers": sorted({u.speaker for u in members})})
  data = {"dataset": manifest.dataset, "root": manifest.root, "num_folds": len(sessions),
          "classes": None if classes is None else list(classes), "folds": folds,
          "utterances": {u.utt_id: u.session for u in manifest}}
  data["digest"] = _assignment_digest(data)
  return atomic.atomic_write(path, json.dumps(data, indent=1))


def _assignment_digest(data: dict) -> str:
  content = {k: v for k, v in data.items() if k != "digest"}
  return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def read_assignment(path) -> dict[str, int]:
  """utt_id -> session from a file written by `write_assignment`.

  A damaged file (not JSON, cut, edited: its digest or its fold table no longer matches its
  utterances) is a one-line `DatasetError`: it pins the folds of the results beside it, so it is
  never guessed at.
  """
  path = pathlib.Path(path).expanduser()
  try:
    data = json.loads(path.read_text())
    assignment = {str(k): int(v) for k, v in data["utterances"].items()}
    problem = _assignment_problem(data, assignment)
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    problem = f"{type(e).__name__}: {e}"
  if problem:
    raise errors.DatasetError(
        f"{path}: not a readable fold assignment ({problem}); it pins the folds of the results "
        "beside it: restore it from a copy, or delete it and rerun the run that wrote it (without "
        "config.data.fold_assignment) to write it again")
  return assignment


def _assignment_problem(data: dict, assignment: dict[str, int]) -> str | None:
  """Why `data` is not an intact `write_assignment` file, or None (files written before the digest
  was added are checked for consistency only)."""
  if not assignment:
    return "it lists no utterance"
  if "digest" in data and data["digest"] != _assignment_digest(data):
    return "its content does not match its digest: edited or damaged"
  counts = collections.Counter(assignment.values())
  if "num_folds" in data and data["num_folds"] != len(counts):
    return f"num_folds is {data['num_folds']} but the utterances have {len(counts)} groups"
  table = data.get("folds") or []
  if table and {f["test_session"]: f["num_utterances"] for f in table} != dict(counts):
    return "its fold table does not match its utterances"
  return None


def apply_assignment(manifest: Manifest, path) -> Manifest:
  """The manifest with each utterance's session taken from the fold assignment file `path`.

  The file defines the experiment: utterances it does not list (files added since, or files a
  `bad_audio="skip"` run dropped) are left out, with a logged count.
  """
  assignment = read_assignment(path)
  absent = [u.utt_id for u in manifest if u.utt_id not in assignment]
  if len(absent) == len(manifest):
    raise errors.DatasetError(
        f"{path}: none of the {len(manifest)} utterances of {manifest.dataset} is in the fold "
        "assignment; it was written for other data (unset config.data.fold_assignment)")
  if absent:
    logging.warning("%s: %d utterance(s) of %s are not in the fold assignment and are left out "
                    "(first: %s)", path, len(absent), manifest.dataset, absent[0])
  return manifest.replace(dataclasses.replace(u, session=assignment[u.utt_id])
                          for u in manifest if u.utt_id in assignment)


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
