"""From a data config to numpy batches: dataset loading, epoch order, fixed-size padded batches."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator

import numpy as np

from wavejax import errors
from wavejax.data import DATASETS, cache, folds, scan, synthetic
from wavejax.data.manifest import Manifest

# config.data fields forwarded to a loader's scan() when its signature accepts them.
SCAN_OPTIONS = ("merge_excited", "missing_audio", "calm_as_neutral", "num_folds")


def dataset_root(data_config):
  """`config.data.root`, or the built-in corpus (generated on first use) when it is None."""
  if data_config.root is not None:
    return data_config.root
  if data_config.dataset != "iemocap":
    raise errors.ConfigError(
        f"config.data.root is not set for dataset {data_config.dataset!r}; the built-in corpus "
        "has the IEMOCAP layout, so set --config.data.root=<folder> or dataset=iemocap")
  builtin = data_config.builtin
  return synthetic.ensure_corpus(data_config.cache_dir, seed=builtin.seed,
                                 utterances_per_speaker=builtin.utterances_per_speaker)


def clip_seconds(data_config) -> float:
  """`data.builtin.clip_seconds` on the built-in corpus, else `data.clip_seconds`."""
  return data_config.builtin.clip_seconds if data_config.root is None else data_config.clip_seconds


def load_manifest(data_config, task: str | None = None) -> Manifest:
  """Scans the dataset; keeps the utterances usable for `task` (all when None).

  With `config.data.fold_assignment` set, the sessions (fold groups) come from that file.
  """
  if data_config.dataset not in DATASETS:
    raise errors.ConfigError(f"config.data.dataset={data_config.dataset!r} is not a known "
                             f"dataset; choose one of {sorted(DATASETS)}")
  manifest = scan(data_config.dataset, dataset_root(data_config),
                  **scan_options(data_config.dataset, data_config))
  if task is not None:
    manifest = folds.select(manifest, task)
  if data_config.get("fold_assignment"):
    manifest = folds.apply_assignment(manifest, data_config.fold_assignment)
  return manifest


def load_dataset(data_config, task: str | None = None) -> tuple[Manifest, np.ndarray]:
  """Scans the dataset and returns its manifest and `[N, clip samples]` float32 waveforms.

  Args:
    data_config: `config.data`.
    task: keep only the utterances usable for this task (`folds.select`); None keeps all.

  Returns:
    The manifest of the decoded utterances and their waveforms, row i for utterance i. With
    `config.data.bad_audio="skip"` files that cannot be decoded are left out of both.
  """
  manifest = load_manifest(data_config, task)
  return cache.load(
      manifest, data_config.sample_rate, clip_seconds(data_config),
      cache_dir=None if data_config.cache_dir is None else f"{data_config.cache_dir}/decoded",
      num_workers=data_config.get("num_workers"), bad_audio=data_config.get("bad_audio", "error"))


def scan_options(dataset: str, data_config) -> dict:
  accepted = inspect.signature(importlib.import_module(DATASETS[dataset]).scan).parameters
  return {name: data_config[name] for name in SCAN_OPTIONS
          if name in accepted and name in data_config}


def epoch_order(indices: np.ndarray, targets: np.ndarray, *, seed: int, fold: int, epoch: int,
                balanced: bool = False) -> np.ndarray:
  """The training order of one epoch, a function of (seed, fold, epoch) only.

  balanced=True draws the same number of examples with replacement, each class equally likely.
  """
  rng = np.random.default_rng([seed, fold, epoch])
  if not balanced:
    return rng.permutation(indices)
  classes, inverse, counts = np.unique(targets[indices], return_inverse=True, return_counts=True)
  probabilities = 1.0 / (len(classes) * counts[inverse])
  return rng.choice(indices, size=len(indices), replace=True, p=probabilities)


def evaluation_batch_sizes(count: int, batch_size: int, multiple: int = 1) -> list[int]:
  """The batch sizes that cover `count` examples at evaluation: full batches of `batch_size`, then
  the rest in the smallest `multiple * 2**k` (at most `batch_size`) that holds it.

  Padding the last batch to a power of two wastes less than half of it, while a jitted step
  compiles for at most log2(batch_size / multiple) + 1 shapes; padding every split to
  `batch_size` would run 64 forwards for a 12-utterance validation split.
  """
  full, rest = divmod(count, batch_size)
  sizes = [batch_size] * full
  if rest:
    last = multiple
    while last < rest:
      last *= 2
    sizes.append(min(last, batch_size))
  return sizes


def index_batches(targets: np.ndarray, order: np.ndarray, batch_size: int, *,
                  first_batch: int = 0, rows: slice | None = None) -> Iterator[dict]:
  """Fixed-size batches of `order` as `{indices, labels, weights}`; the last one is padded with
  weight-0 copies of example 0 (`order[0]`).

  `first_batch` skips that many batches (a resumed epoch); `rows` keeps only those rows of every
  batch (one process's share of a global batch).
  """
  rows = slice(None) if rows is None else rows
  for start in range(first_batch * batch_size, len(order), batch_size):
    chosen = order[start:start + batch_size]
    weights = np.ones(batch_size, np.float32)
    if len(chosen) < batch_size:
      weights[len(chosen):] = 0.0
      chosen = np.concatenate([chosen, np.full(batch_size - len(chosen), order[0])])
    chosen, weights = chosen[rows], weights[rows]
    yield {"indices": chosen.astype(np.int32), "labels": targets[chosen].astype(np.int32),
           "weights": weights}


def batches(waveforms: np.ndarray, targets: np.ndarray, order: np.ndarray, batch_size: int, *,
            first_batch: int = 0, rows: slice | None = None) -> Iterator[dict]:
  """`index_batches` with each batch's waveforms loaded: `{waveforms, labels, weights}` (only
  the rows kept are loaded)."""
  for batch in index_batches(targets, order, batch_size, first_batch=first_batch, rows=rows):
    yield {"waveforms": np.asarray(waveforms[batch.pop("indices")]), **batch}


