"""Command line: `python -m wavejax.main --config=configs/simplenet_cnn.py [--workdir=DIR]`.

Runs leave-one-session-out cross-validation (paper Sec. 4.1) of the configured model and prints the
results table. Without `--config.data.root` it uses the built-in corpus. Config fields are
overridden with `--config.a.b=value`; the config arg selects task and fold, e.g.
`--config=configs/simplenet_cnn.py:gender,fold=2`.
"""

from __future__ import annotations

import datetime
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from wavejax import errors, results, runtime, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Model config file, e.g. "
                                          "configs/simplenet_cnn.py[:task,fold=k].")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where checkpoints and results go; rerun with the same workdir to resume. "
    "Default: runs/<model>_<task>_<time>.")
_FOLDS = flags.DEFINE_list("folds", None, "Folds to run (default: config.fold, else all).")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", None, "Persistent JAX compilation cache directory ('off' to disable). "
    f"Default: ${runtime.ENV_VAR}, else ~/.cache/wavejax/jax-compilation-cache.")


def default_workdir(config) -> pathlib.Path:
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  return pathlib.Path("runs") / f"{config.model.name}_{config.task}_{stamp}"


def run(config, workdir, fold_numbers) -> dict:
  _, summary = train.cross_validate(config, workdir, fold_numbers)
  print(results.markdown_table(summary))
  print(f"Results: {pathlib.Path(workdir) / 'summary.md'} (and summary.json, fold_*/result.json)")
  return summary


def main(argv) -> int:
  runtime.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/simplenet_cnn.py")
  workdir = pathlib.Path(_WORKDIR.value) if _WORKDIR.value else default_workdir(config)
  try:
    fold_numbers = [int(f) for f in _FOLDS.value] if _FOLDS.value else None
  except ValueError:
    print(f"wavejax: error: --folds={','.join(_FOLDS.value)} must be integers", file=sys.stderr)
    return 1
  logging.info("workdir: %s", workdir)
  runtime.enable_compilation_cache(_COMPILATION_CACHE.value)
  try:
    run(config, workdir, fold_numbers)
  except errors.WavejaxError as e:
    print(f"wavejax: error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  app.run(main)
