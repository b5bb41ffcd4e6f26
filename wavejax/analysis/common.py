"""Plumbing shared by the analysis experiments: configs by name, JSON of numpy, optional figures."""

from __future__ import annotations

import importlib.util
import pathlib

import ml_collections
import numpy as np
from absl import logging

from wavejax import config as wavejax_config
from wavejax import errors, plots, results

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def one_fold_presets(full_epochs: int, smoke_epochs: int) -> dict:
  """Size presets of the experiments that train one fold of the built-in corpus: "full" (a few
  minutes on 2 CPU cores) and "smoke" (seconds, for tests)."""
  return {
      "full": {"data.builtin.utterances_per_speaker": 20, "data.builtin.clip_seconds": 2.0,
               "data.val_size": 8, "train.num_epochs": full_epochs},
      "smoke": {"data.builtin.utterances_per_speaker": 6, "data.builtin.clip_seconds": 1.0,
                "data.val_size": 4, "train.batch_size": 8, "train.num_epochs": smoke_epochs},
  }


def available_configs(configs_dir=CONFIGS) -> list[str]:
  """The model configs of `configs/` (every `<name>.py` but `base`)."""
  return sorted(p.stem for p in pathlib.Path(configs_dir).glob("*.py")
                if p.stem not in ("__init__", "base"))


def load_config(model: str, overrides: dict | None = None, configs_dir=CONFIGS,
                arg: str = "") -> ml_collections.ConfigDict:
  """`configs/<model>.py:get_config(arg)` with dotted-field `overrides` applied."""
  path = pathlib.Path(configs_dir) / f"{model}.py"
  if not path.exists():
    raise errors.ConfigError(f"{path}: no such model config; choose one of "
                             f"{available_configs(configs_dir)}")
  spec = importlib.util.spec_from_file_location(f"wavejax_analysis_config_{model}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  for dotted, value in (overrides or {}).items():
    wavejax_config.set_field(config, dotted, value)
  return config


def to_jsonable(value):
  """Nested dicts/lists of numpy arrays and scalars -> plain JSON types."""
  if isinstance(value, dict):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  return value


def write_json(path, data) -> str:
  results.write_json(path, to_jsonable(data))
  return str(path)


class Figures:
  """Saves figures when matplotlib is installed; otherwise says once how to get them."""

  def __init__(self, directory):
    self.directory = pathlib.Path(directory)
    self.paths: list[str] = []
    self._warned = False

  def save(self, make, name: str, *args, **kwargs) -> list[str]:
    """`plots.save(make(*args, **kwargs), directory / name)`, or nothing without matplotlib."""
    if not plots.available():
      if not self._warned:
        logging.warning("no figures: matplotlib is not installed (%s); the JSON has all numbers",
                        plots.INSTALL_HINT)
        self._warned = True
      return []
    written = plots.save(make(*args, **kwargs), self.directory / name)
    self.paths += written
    return written

