"""Command line: `python -m wavejax.main --config=configs/simplenet_cnn.py [--workdir=DIR]`.

Runs leave-one-session-out cross-validation (paper Sec. 4.1) of the configured model and prints the
results table. Without `--config.data.root` it uses the built-in corpus. Config fields are
overridden with `--config.a.b=value`; the config arg selects task and fold, e.g.
`--config=configs/simplenet_cnn.py:gender,fold=2`.

SIGTERM or SIGINT during training saves a checkpoint and exits with 128 + the signal number (143,
130) and one line `wavejax: preempted by SIGTERM at fold k epoch e step s/n; rerun the same command
to resume`. `--distributed` (or any of `--coordinator_address`, `--num_processes`, `--process_id`)
calls `jax.distributed.initialize` first, for one process per host (TPU pod, SLURM, several GPU
machines); every process runs the same command and process 0 writes the results.
"""

from __future__ import annotations

import datetime
import pathlib

import jax
from absl import flags, logging
from ml_collections import config_flags

from wavejax import cli, errors, runtime, training
from wavejax.reporting import results
from wavejax.training import parallel

_CONFIG = config_flags.DEFINE_config_file("config", None, "Model config file, e.g. "
                                          "configs/simplenet_cnn.py[:task,fold=k].")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where checkpoints and results go; rerun with the same workdir to resume. "
    "Default: runs/<model>_<task>_<time>.")
_FOLDS = flags.DEFINE_list("folds", None, "Folds to run (default: config.fold, else all).")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", None, "Persistent JAX compilation cache directory ('off' to disable). "
    f"Default: ${runtime.ENV_VAR}, else ~/.cache/wavejax/jax-compilation-cache.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Multi-process training: call jax.distributed.initialize before any "
    "JAX computation. On Cloud TPU, SLURM and other detected clusters nothing else is needed; "
    "elsewhere also pass --coordinator_address, --num_processes and --process_id.")
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (implies --distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Number of processes (implies --distributed).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process's index, 0 .. num_processes-1 (implies "
                                   "--distributed).")


def default_workdir(config) -> pathlib.Path:
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  return pathlib.Path("runs") / f"{config.model.name}_{config.task}_{stamp}"


def initialize_distributed() -> None:
  """`jax.distributed.initialize` when --distributed or one of its arguments is given."""
  arguments = {"coordinator_address": _COORDINATOR_ADDRESS.value,
               "num_processes": _NUM_PROCESSES.value, "process_id": _PROCESS_ID.value}
  if not _DISTRIBUTED.value and all(value is None for value in arguments.values()):
    return
  try:
    jax.distributed.initialize(**arguments)
  except (ValueError, RuntimeError, TypeError) as e:
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise errors.ConfigError(
        f"--distributed: jax.distributed.initialize failed ({reason}); pass --coordinator_address="
        "host:port, --num_processes and --process_id where the cluster is not detected") from e
  logging.info("process %d of %d: %d local of %d devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def run(config, workdir, fold_numbers) -> dict:
  _, summary = training.cross_validate(config, workdir, fold_numbers)
  if parallel.is_primary():
    print(results.markdown_table(summary))
    print(f"Results: {pathlib.Path(workdir) / 'summary.md'} (and summary.json, "
          "fold_*/result.json)")
  return summary


def main(argv) -> int:
  if len(argv) > 1:
    cli.fail("wavejax", f"unexpected arguments {argv[1:]}; config fields go as --config.a.b=value")
  config = cli.config_value(_CONFIG, "wavejax")
  if config is None:
    cli.fail("wavejax", "--config is required, e.g. --config=configs/simplenet_cnn.py")
  try:
    fold_numbers = [int(f) for f in _FOLDS.value] if _FOLDS.value else None
  except ValueError:
    cli.fail("wavejax", f"--folds={','.join(_FOLDS.value)} must be integers")
  initialize_distributed()  # before anything else touches JAX
  runtime.enable_compilation_cache(_COMPILATION_CACHE.value)
  if jax.process_count() > 1 and not _WORKDIR.value:
    raise errors.ConfigError("--workdir is required with several processes (they share it)")
  workdir = pathlib.Path(_WORKDIR.value) if _WORKDIR.value else default_workdir(config)
  logging.info("workdir: %s", workdir)
  run(config, workdir, fold_numbers)
  return 0


if __name__ == "__main__":
  cli.run(main, "wavejax")
