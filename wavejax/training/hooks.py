"""Monitors of a fold's training, called by the loop at its start, after every epoch and at the
end. A new monitor is a `Hook` subclass added by `default_hooks` (or passed to `FoldTrainer`);
the loop itself does not change.

The loop calls, in order: `start(trainer, start_epoch)` before the first (or resumed) epoch;
`step_end(trainer, epoch, step)` after each train step is dispatched (the step may still be
running on the device); `epoch_end(trainer, epoch, record)` after each epoch is trained and
evaluated, before its checkpoint (a hook may add fields to `record`, which is stored in the
fold's history); `close()` when training ends, also on an error or preemption.
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np
from absl import logging
from flax import traverse_util

from wavejax import errors
from wavejax.models import frontend_kernel
from wavejax.training import change_rate, metrics_log, parallel


class Hook:
  """A monitor; every method is optional."""

  # False when the hook keeps state that a mid-epoch checkpoint does not hold: a preempted run
  # then resumes from the start of its epoch.
  resumable_mid_epoch = True

  def start(self, trainer, start_epoch: int) -> None:
    pass

  def step_end(self, trainer, epoch: int, step: int) -> None:
    pass

  def epoch_end(self, trainer, epoch: int, record: dict) -> None:
    pass

  def close(self) -> None:
    pass


class ChangeRate(Hook):
  """Fig. 4's per-layer mean |dw/w| per epoch, into the record as "change_rate"."""
  resumable_mid_epoch = False  # its baseline (the previous epoch's weights) is not checkpointed

  def __init__(self):
    self.tracker = change_rate.ChangeRateTracker()

  def start(self, trainer, start_epoch):
    self.tracker.update(start_epoch, trainer.state.params)

  def epoch_end(self, trainer, epoch, record):
    record["change_rate"] = self.tracker.update(epoch, trainer.state.params)


class MetricsLog(Hook):
  """`fold_<k>/metrics.jsonl` (and TensorBoard scalars) every epoch."""

  def __init__(self, log: metrics_log.MetricsLog):
    self.log = log

  def epoch_end(self, trainer, epoch, record):
    self.log.write(epoch, record)

  def close(self):
    self.log.close()


class FilterSnapshots(Hook):
  """The front-end's filters (Sec. 4.3, Fig. 6) before training and every `every` epochs."""

  def __init__(self, log: metrics_log.MetricsLog, every: int, sample_rate: int):
    self.log, self.every, self.sample_rate = log, every, sample_rate

  def start(self, trainer, start_epoch):
    if start_epoch == 0 and trainer.resume.partial is None:
      self.write(trainer, 0)

  def epoch_end(self, trainer, epoch, record):
    if epoch % self.every == 0:
      self.write(trainer, epoch)

  def write(self, trainer, epoch: int) -> None:
    if not self.every:
      return
    try:
      kernel = frontend_kernel(trainer.model, trainer.state.params)
    except errors.ConfigError as e:
      logging.warning("config.train.filter_images_every: %s; not saving filters", e)
      self.every = 0
      return
    self.log.write_filters(epoch, kernel, self.sample_rate)


class ParameterOverview(Hook):
  """Logs, before training, the parameters per module, their total and their bytes."""

  def start(self, trainer, start_epoch):
    logging.info("fold %d: parameters\n%s", trainer.fold, parameter_overview(trainer.state.params))


def parameter_overview(params) -> str:
  """A table of the parameter count and bytes per top-level module and sub-module, and the total."""
  rows, total, total_bytes = [], 0, 0
  for path, leaf in traverse_util.flatten_dict(params, sep="/").items():
    module = path.rsplit("/", 1)[0] if "/" in path else path
    size, nbytes = int(np.prod(leaf.shape)), int(np.prod(leaf.shape)) * leaf.dtype.itemsize
    if rows and rows[-1][0] == module:
      rows[-1] = (module, rows[-1][1] + size, rows[-1][2] + nbytes)
    else:
      rows.append((module, size, nbytes))
    total, total_bytes = total + size, total_bytes + nbytes
  width = max(len(name) for name, _, _ in rows + [("total", 0, 0)])
  lines = [f"  {name:<{width}} {size:>11,d} {nbytes / 1024:>10.1f} KiB" for name, size, nbytes
           in rows]
  lines.append(f"  {'total':<{width}} {total:>11,d} {total_bytes / 1024:>10.1f} KiB")
  return "\n".join(lines)


class ProfileTrace(Hook):
  """A JAX profiler trace of `num_steps` train steps into `fold_<k>/profile`, from the second
  step this process trains (the first one compiles): TensorBoard's profile plugin reads the
  `.xplane.pb`, https://ui.perfetto.dev the `perfetto_trace.json.gz` beside it."""

  def __init__(self, fold_dir, num_steps: int):
    self.directory, self.num_steps = pathlib.Path(fold_dir) / "profile", num_steps
    self.seen, self.tracing = 0, False

  def step_end(self, trainer, epoch, step):
    self.seen += 1
    if self.seen == 1 and not self.tracing:
      jax.block_until_ready(trainer.state)
      jax.profiler.start_trace(str(self.directory), create_perfetto_trace=True)
      self.tracing = True
    elif self.tracing and self.seen == 1 + self.num_steps:
      self.stop(trainer.state)

  def stop(self, state=None) -> None:
    if self.tracing:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.tracing = False
      logging.info("profile of %d steps in %s (tensorboard --logdir=%s, or Perfetto)",
                   self.num_steps, self.directory, self.directory)

  def close(self):
    self.stop()


def default_hooks(config, fold_dir) -> list[Hook]:
  """The monitors `config.train` asks for. Files are written by the primary process only."""
  train = config.train
  hooks = [ParameterOverview()]
  if train.track_change_rate:  # first: the metrics log records its field
    hooks.append(ChangeRate())
  if fold_dir is not None and parallel.is_primary():
    log = metrics_log.MetricsLog(fold_dir, train.tensorboard)  # filters share its TensorBoard
    hooks.append(MetricsLog(log))
    if train.filter_images_every:
      hooks.append(FilterSnapshots(log, int(train.filter_images_every), config.model.sample_rate))
    if train.profile_steps:
      hooks.append(ProfileTrace(fold_dir, int(train.profile_steps)))
  return hooks
