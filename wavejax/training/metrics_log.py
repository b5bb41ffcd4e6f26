"""Per-epoch metrics of a fold as JSON lines and (optionally) TensorBoard event files.

`MetricsLog(fold_dir, tensorboard=bool)` appends the trainer's per-epoch record (epoch,
train_loss, train_running_acc, utterances_per_s, val{wa,ua,f1,confusion}, test{...}, and
`change_rate{layer: rate}` when tracked) to `fold_dir/metrics.jsonl`, and with `tensorboard=True`
writes every number of it as a scalar (`train/loss`, `val/wa`, `change_rate/frontend`, ...) to
event files under `fold_dir/tensorboard/` (tensorboardX, no TensorFlow needed: `pip install
'wavejax[tensorboard]'`; view with `tensorboard --logdir <workdir>`). `write_filters` saves the
front-end's kernel every time it is called (`fold_dir/filters/epoch_<e>.npz`), its response as a
TensorBoard image, and a Fig. 6-style PNG when matplotlib is installed.

Resuming is safe: the first `write` of epoch e drops the lines of epochs >= e left by a run that
stopped after logging but before its checkpoint, and TensorBoard's `purge_step` does the same for
the event files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
from collections.abc import Mapping

import numpy as np
from absl import logging

from wavejax import errors

JSONL = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
FILTERS_DIR = "filters"


def tensorboard_available() -> bool:
  return importlib.util.find_spec("tensorboardX") is not None


def _json_default(value):
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def scalars(record: Mapping, prefix: str = "") -> dict[str, float]:
  """Every finite number of a (nested) record as `{tag: value}`: `train_loss` -> `train/loss`,
  `val: {wa}` -> `val/wa`; the epoch itself and lists (confusion matrices) are left out."""
  out = {}
  for key, value in record.items():
    if not prefix and key == "epoch":
      continue
    if not prefix and key.startswith("train_"):
      tag = f"train/{key[len('train_'):]}"
    elif not prefix and key == "utterances_per_s":
      tag = "train/utterances_per_s"
    else:
      tag = f"{prefix}{key}"
    if isinstance(value, Mapping):
      out.update(scalars(value, prefix=f"{tag}/"))
    elif isinstance(value, (bool, np.bool_)):
      continue
    elif isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value):
      out[tag] = float(value)
  return out


def _epoch_of(line: str) -> float:
  """The epoch of a JSON line; infinity for a blank or damaged line (one cut short by a full disk
  or a kill), which is then dropped: the resumed run writes its epoch again."""
  try:
    record = json.loads(line)
    return float(record.get("epoch", 0))
  except (ValueError, AttributeError, TypeError):
    return float("inf")


class MetricsLog:
  """JSON lines (always) and TensorBoard scalars (optional) of a fold's epochs."""

  def __init__(self, fold_dir, tensorboard: bool = False):
    self.fold_dir = pathlib.Path(fold_dir)
    self.path = self.fold_dir / JSONL
    self.tensorboard = bool(tensorboard)
    if self.tensorboard and not tensorboard_available():
      raise errors.ConfigError(
          "config.train.tensorboard=True needs tensorboardX: pip install 'wavejax[tensorboard]' "
          "(or set config.train.tensorboard=False)")
    self._writer = None
    self._checked = False

  def write(self, epoch: int, record: Mapping) -> None:
    """Appends `record` (the trainer's per-epoch dict) as epoch `epoch`."""
    epoch = int(epoch)
    if not self._checked:
      self._drop_from(epoch)
      self._checked = True
    line = json.dumps({**record, "epoch": epoch}, sort_keys=True, default=_json_default)
    self.fold_dir.mkdir(parents=True, exist_ok=True)
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(line + "\n")
    if self.tensorboard:
      writer = self._tensorboard(epoch)
      for tag, value in scalars(record).items():
        writer.add_scalar(tag, value, epoch)
      writer.flush()

  def write_filters(self, epoch: int, kernel: np.ndarray, sample_rate: float) -> list[str]:
    """Saves the `[taps, filters]` front-end kernel of `epoch`: npz always, a TensorBoard image
    of its response, and a PNG against the first saved kernel (the trainer saves epoch 0, the
    initial bank, first) when matplotlib is installed. Returns the files written."""
    from wavejax.reporting import plots  # pylint: disable=g-import-not-at-top
    directory = self.fold_dir / FILTERS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    kernel = np.asarray(kernel, np.float32)
    written = [str(directory / f"epoch_{int(epoch):03d}.npz")]
    np.savez(written[0], kernel=kernel, sample_rate=np.float64(sample_rate), epoch=int(epoch))
    if self.tensorboard:
      image = plots.filter_response_image(kernel, sample_rate)
      self._tensorboard(epoch).add_image("filters/response_db", image, epoch, dataformats="HW")
      self._writer.flush()
    if plots.available():
      from wavejax.analysis import learned_filters  # pylint: disable=g-import-not-at-top
      first = np.load(sorted(directory.glob("epoch_*.npz"))[0])["kernel"]
      initial = first if first.shape == kernel.shape else kernel
      indices = learned_filters.select_filters(kernel.shape[1])
      figure = plots.filters_figure(initial, kernel, sample_rate, indices)
      written += plots.save(figure, directory / f"epoch_{int(epoch):03d}", formats=("png",))
    return written

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def records(self) -> list[dict]:
    """The records written so far (for tests and plots)."""
    if not self.path.exists():
      return []
    return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

  def _drop_from(self, epoch: int) -> None:
    """Removes the lines of epochs >= `epoch` (a resumed run rewrites them)."""
    if not self.path.exists():
      return
    kept = [line for line in self.path.read_text().splitlines() if _epoch_of(line) < epoch]
    temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
    temporary.write_text("".join(f"{line}\n" for line in kept))
    os.replace(temporary, self.path)

  def _tensorboard(self, epoch: int):
    if self._writer is None:
      import tensorboardX  # pylint: disable=g-import-not-at-top
      logdir = self.fold_dir / TENSORBOARD_DIR
      self._writer = tensorboardX.SummaryWriter(str(logdir), purge_step=int(epoch))
      logging.info("TensorBoard events in %s", logdir)
    return self._writer
