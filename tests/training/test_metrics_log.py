"""wavejax.training.metrics_log: JSON lines, TensorBoard events, filter snapshots, resume."""

import json
import struct

import numpy as np
import pytest

from helpers import tiny_config
from wavejax import errors, training
from wavejax.models import filters
from wavejax.training import metrics_log


def record(epoch, loss=0.5):
  metrics = {"wa": 0.5 + epoch / 100, "ua": 0.4, "f1": 0.3, "confusion": [[1, 0], [0, 1]]}
  return {"epoch": epoch, "train_loss": loss, "train_running_acc": 0.6, "train_seconds": 1.0,
          "utterances_per_s": 12.5, "val": metrics, "test": dict(metrics),
          "change_rate": {"frontend": 0.1, "head/Conv_0": np.float32(0.2)}}


def read_events(directory):
  """(tag, step, value) of every scalar and the tags of images in TFRecord event files."""
  from tensorboardX.proto import event_pb2
  scalars, images = [], []
  for path in sorted(directory.glob("events.out.tfevents.*")):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      for value in event.summary.value:
        if value.HasField("image"):
          images.append((value.tag, event.step))
        else:
          scalars.append((value.tag, event.step, value.simple_value))
  return scalars, images


def test_scalar_tags():
  tags = metrics_log.scalars(record(3))
  assert tags["train/loss"] == 0.5 and tags["train/running_acc"] == 0.6
  assert tags["train/utterances_per_s"] == 12.5
  assert tags["val/wa"] == pytest.approx(0.53) and tags["test/f1"] == 0.3
  assert tags["change_rate/head/Conv_0"] == pytest.approx(0.2)
  assert not any("confusion" in t or t == "epoch" for t in tags)


def test_jsonl_lines_and_resume(tmp_path):
  with metrics_log.MetricsLog(tmp_path / "fold_1") as log:
    for epoch in (1, 2, 3):
      log.write(epoch, record(epoch))
  lines = (tmp_path / "fold_1" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
  assert json.loads(lines[0])["val"]["confusion"] == [[1, 0], [0, 1]]
  # A run resumed after epoch 1 (its checkpoint) rewrites epochs 2 and 3.
  with metrics_log.MetricsLog(tmp_path / "fold_1") as log:
    log.write(2, record(2, loss=0.25))
    records = log.records()
  assert [r["epoch"] for r in records] == [1, 2]
  assert records[1]["train_loss"] == 0.25


def test_tensorboard_scalars_and_filter_images(tmp_path):
  pytest.importorskip("tensorboardX")
  fold_dir = tmp_path / "fold_2"
  kernel = filters.fir_filterbank(8, 64, 16000)
  with metrics_log.MetricsLog(fold_dir, tensorboard=True) as log:
    written = log.write_filters(0, kernel, 16000)
    for epoch in (1, 2):
      log.write(epoch, record(epoch))
  scalars, images = read_events(fold_dir / metrics_log.TENSORBOARD_DIR)
  val_wa = [(step, value) for tag, step, value in scalars if tag == "val/wa"]
  assert val_wa == [(1, pytest.approx(0.51)), (2, pytest.approx(0.52))]
  assert ("change_rate/frontend", 2, pytest.approx(0.1)) in scalars
  assert images == [("filters/response_db", 0)]
  saved = np.load(written[0])
  np.testing.assert_array_equal(saved["kernel"], kernel)
  assert written[0].endswith("filters/epoch_000.npz")


def test_filter_image_is_numpy_only():
  from wavejax.reporting import plots
  image = plots.filter_response_image(filters.fir_filterbank(4, 64, 16000), 16000)
  assert image.dtype == np.uint8 and image.shape == (257, 4)
  # Filter 0 passes 0-2 kHz: bright at the bottom rows (low frequencies), dark at the top.
  assert image[-1, 0] > 240 and image[0, 0] < 64


def test_tensorboard_without_tensorboardx_is_a_config_error(tmp_path, monkeypatch):
  monkeypatch.setattr(metrics_log, "tensorboard_available", lambda: False)
  with pytest.raises(errors.ConfigError, match=r"wavejax\[tensorboard\]"):
    metrics_log.MetricsLog(tmp_path, tensorboard=True)


def test_trainer_logs_metrics_change_rate_and_filters(tmp_path):
  config = tiny_config(tmp_path / "cache", **{
      "train.track_change_rate": True, "train.filter_images_every": 1,
      "train.tensorboard": metrics_log.tensorboard_available()})
  result = training.train_fold(config, 1, workdir=tmp_path / "run")
  fold_dir = tmp_path / "run" / "fold_1"
  records = metrics_log.MetricsLog(fold_dir).records()
  assert [r["epoch"] for r in records] == [1, 2]
  for record, epoch in zip(records, result.history):
    assert record["val"] == epoch["val"] and record["train_loss"] == epoch["train_loss"]
    assert record["change_rate"] == pytest.approx(epoch["change_rate"])
    assert record["change_rate"]["frontend"] > 0
  assert sorted(p.name for p in (fold_dir / "filters").glob("*.npz")) == [
      "epoch_000.npz", "epoch_001.npz", "epoch_002.npz"]
  if metrics_log.tensorboard_available():
    scalars, _ = read_events(fold_dir / metrics_log.TENSORBOARD_DIR)
    assert {step for tag, step, _ in scalars if tag == "test/wa"} == {1, 2}
