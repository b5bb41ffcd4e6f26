"""A workdir's record of the config it was trained with, and the check that keeps runs of two
configs out of one workdir."""

from __future__ import annotations

import json
import pathlib

from wavejax import config as wavejax_config
from wavejax import errors
from wavejax.reporting import results


def config_json(config) -> dict:
  """The config as plain JSON, without the fold (one workdir holds every fold)."""
  data = json.loads(config.to_json_best_effort(sort_keys=True))
  data.pop("fold", None)
  return data


def check_config(config, fold_dir: pathlib.Path) -> None:
  """Refuses to mix runs of different configs in one workdir: the fold's own recorded config and
  those of the workdir's other folds must all match `config`."""
  current = config_json(config)
  recorded = sorted(fold_dir.parent.glob("fold_*/config.json"))
  own = fold_dir / "config.json"
  for path in sorted(recorded, key=lambda p: p != own):  # the fold's own first
    changed = sorted(differences(json.loads(path.read_text()), current))
    if changed:
      raise errors.ConfigError(
          f"{path.parent} was written by a different config (changed: {', '.join(changed[:5])}); "
          "use a new --workdir or the original config")


def record_config(config, fold_dir: pathlib.Path) -> None:
  """Writes the fold's `config.json` (once; `check_config` compares later runs with it)."""
  path = fold_dir / "config.json"
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
