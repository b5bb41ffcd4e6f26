"""Plumbing shared by the analysis experiments: configs by name, JSON of numpy, optional figures."""

from __future__ import annotations

import pathlib

import ml_collections
import numpy as np
from absl import logging

from wavejax import config as wavejax_config
from wavejax.reporting import plots, results


def available_configs() -> list[str]:
  """The zoo's model configs (`wavejax.config.models.MODELS`)."""
  return sorted(wavejax_config.models.MODELS)


def load_config(model: str, overrides: dict | None = None,
                arg: str = "") -> ml_collections.ConfigDict:
  """`wavejax.config.get_config(model, arg)` with dotted-field `overrides` applied."""
  return wavejax_config.apply_fields(wavejax_config.get_config(model, arg), overrides or {})


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

