"""A trained run loaded for use: `load_model(workdir, fold=None)` -> `LoadedModel`.

Loads the config (`fold_<k>/config.json`) and the best-on-validation checkpoint
(`fold_<k>/checkpoints/best`) of a finished or interrupted run; `LoadedModel` decodes files as
the trainer did (mono, resampled, padded or cut to the run's clip length) and gives class
probabilities. `python -m wavejax.predict` is its command line.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from wavejax import config as wavejax_config
from wavejax import errors
from wavejax.data import audio, folds, pipeline
from wavejax.models import create_model
from wavejax.training import checkpoint, steps

_FOLD_DIR = re.compile(r"fold_(\d+)$")


@dataclasses.dataclass
class LoadedModel:
  """A trained model ready to classify waveforms.

  Attributes:
    workdir, fold, fold_dir: where it came from.
    epoch: the epoch of the best checkpoint.
    config: the run's config.
    classes: class names, in the order of the model's outputs.
    model: the Flax module; variables: its `{"params", "batch_stats"?}`.
    sample_rate, clip_seconds: the input the model expects.
  """
  workdir: pathlib.Path
  fold: int
  fold_dir: pathlib.Path
  epoch: int
  config: ml_collections.ConfigDict
  classes: tuple
  model: Any
  variables: dict
  sample_rate: int
  clip_seconds: float
  _apply: Any = dataclasses.field(default=None, repr=False)

  @property
  def num_samples(self) -> int:
    return audio.clip_samples(self.sample_rate, self.clip_seconds)

  def probabilities(self, waveforms: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """`[B, classes]` softmax probabilities of `[B, T]` (or one `[T]`) waveforms at
    `sample_rate`; each is padded or cut to the run's clip length first."""
    waveforms = np.asarray(waveforms, np.float32)
    waveforms = waveforms[None] if waveforms.ndim == 1 else waveforms
    finite = np.isfinite(waveforms).reshape(len(waveforms), -1).all(axis=1)
    if not finite.all():
      bad = int(np.flatnonzero(~finite)[0])
      raise errors.AudioError(f"waveform {bad} has NaN or infinite samples; pass finite audio")
    fitted = np.stack([audio.fit_length(w, self.num_samples) for w in waveforms])
    if self._apply is None:
      self._apply = jax.jit(lambda v, x: jax.nn.softmax(self.model.apply(v, x, train=False)))
    out = []
    for start in range(0, len(fitted), batch_size):
      chunk = fitted[start:start + batch_size]
      padded = np.concatenate([chunk, np.zeros((batch_size - len(chunk), chunk.shape[1]),
                                                np.float32)])
      out.append(np.asarray(self._apply(self.variables, jnp.asarray(padded)))[:len(chunk)])
    probabilities = (np.concatenate(out) if out else
                     np.zeros((0, len(self.classes)), np.float32))
    if not np.isfinite(probabilities).all():
      raise errors.CheckpointError(
          f"{self.fold_dir / 'checkpoints' / 'best' / str(self.epoch)}: the model gives NaN or "
          "infinite probabilities for finite audio (its weights are unusable); delete "
          f"{self.fold_dir} and rerun the training command to train the fold again, or use "
          "another fold (--fold)")
    return probabilities

  def predict(self, waveforms: np.ndarray) -> list[dict]:
    """`[{"label", "probabilities": {class: p}}]` per waveform."""
    return [self._entry(p) for p in self.probabilities(waveforms)]

  def predict_files(self, paths) -> list[dict]:
    """`[{"path", "label", "probabilities"}]` per file (decoded like the training data).

    Raises:
      AudioError: on a file that cannot be decoded.
    """
    paths = [str(p) for p in paths]
    waveforms = [audio.load(p, self.sample_rate, self.clip_seconds) for p in paths]
    for path, waveform in zip(paths, waveforms):
      if not np.isfinite(waveform).all():
        raise errors.AudioError(f"{path}: has NaN or infinite samples; repair or re-export it")
    if not waveforms:
      return []
    return [{"path": path, **entry}
            for path, entry in zip(paths, self.predict(np.stack(waveforms)))]

  def _entry(self, probabilities: np.ndarray) -> dict:
    return {"label": self.classes[int(np.argmax(probabilities))],
            "probabilities": {c: float(p) for c, p in zip(self.classes, probabilities)}}


def fold_dirs(workdir) -> dict[int, pathlib.Path]:
  """`{k: workdir/fold_k}` for every fold folder, sorted by k."""
  workdir = pathlib.Path(workdir)
  if not workdir.is_dir():
    raise errors.CheckpointError(f"{workdir}: no such run folder; pass the --workdir of a "
                                 "training run")
  found = {int(m.group(1)): p for p in workdir.iterdir()
           if p.is_dir() and (m := _FOLD_DIR.match(p.name))}
  return dict(sorted(found.items()))


def has_best(fold_dir: pathlib.Path) -> bool:
  best = fold_dir / "checkpoints" / "best"
  return best.is_dir() and any(p.name.isdigit() for p in best.iterdir())


def find_fold(workdir, fold: int | None = None) -> int:
  """`fold` if it has a best checkpoint, else (fold None) the first fold that has one."""
  dirs = fold_dirs(workdir)
  if fold is not None:
    if fold not in dirs or not has_best(dirs[fold]):
      raise errors.CheckpointError(
          f"{pathlib.Path(workdir) / f'fold_{fold}'}: no best checkpoint; pick a fold that "
          f"has one ({', '.join(map(str, [k for k, d in dirs.items() if has_best(d)])) or 'none'})")
    return fold
  for number, directory in dirs.items():
    if has_best(directory):
      return number
  raise errors.CheckpointError(
      f"{workdir}: no fold_<k>/checkpoints/best; train first (python -m wavejax.main "
      f"--workdir={workdir}) or point --workdir at a run with a finished epoch")


def load_config(fold_dir: pathlib.Path) -> ml_collections.ConfigDict:
  path = fold_dir / "config.json"
  try:
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
  except (OSError, ValueError, TypeError, AttributeError) as e:
    raise errors.CheckpointError(
        f"{path}: cannot read the run's config ({errors.one_line(e)}); delete it and rerun the "
        "training command with the config that trained this fold (it is written again), or use "
        "another fold or run") from e
  for section in ("data", "model", "train"):
    if not isinstance(config.get(section), ml_collections.ConfigDict):
      raise errors.CheckpointError(
          f"{path}: damaged (no {section} section); delete it and rerun the training command "
          "with the config that trained this fold (it is written again), or use another fold")
  return wavejax_config.with_added_fields(config)


def _json_classes(path: pathlib.Path):
  try:
    classes = json.loads(path.read_text()).get("classes")
  except (OSError, ValueError, AttributeError):
    return None
  return tuple(classes) if classes else None


def run_classes(fold_dir: pathlib.Path, config) -> tuple:
  """The class names, in output order: from the fold's `result.json` when it finished, else the
  run's `folds.json` (written before training), else the task's fixed classes."""
  for path in (fold_dir / "result.json", fold_dir.parent / "folds.json"):
    classes = _json_classes(path) if path.exists() else None
    if classes:
      return classes
  return tuple(folds.task_classes(config["task"]))


def init_variables(model, config, num_samples: int, fold: int) -> dict:
  """The model's variables at initialisation, exactly as the trainer drew them for `fold`."""
  init_key, _ = steps.init_keys(config.seed, fold)
  variables = jax.jit(model.init)(init_key, jnp.zeros((1, num_samples), jnp.float32))
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def load_model(workdir, fold: int | None = None) -> LoadedModel:
  """The best checkpoint of `workdir`'s fold `fold` (default: the first fold that has one).

  Raises:
    CheckpointError: when the run has no usable checkpoint or config.
  """
  workdir = pathlib.Path(workdir)
  fold = find_fold(workdir, fold)
  fold_dir = workdir / f"fold_{fold}"
  config = load_config(fold_dir)
  classes = run_classes(fold_dir, config)
  sample_rate = int(config.data.sample_rate)
  clip_seconds = float(pipeline.clip_seconds(config.data))
  model = create_model(config.model, num_classes=len(classes))
  target = init_variables(model, config, audio.clip_samples(sample_rate, clip_seconds), fold)
  checkpointer = checkpoint.Checkpointer(fold_dir / "checkpoints", read_only=True)
  try:
    restored = checkpointer.restore_best(target)
  finally:
    checkpointer.close()
  if restored is None:
    raise errors.CheckpointError(f"{fold_dir / 'checkpoints' / 'best'}: empty; train at least "
                                 "one epoch")
  weights, meta = restored
  variables = {"params": weights["params"]}
  if weights.get("batch_stats"):
    variables["batch_stats"] = weights["batch_stats"]
  return LoadedModel(workdir, fold, fold_dir, int(meta.get("epoch", 0)), config, classes, model,
                     variables, sample_rate, clip_seconds)
