"""wavejax.inference.timeline: windows of a long file read in blocks, classified as a timeline."""

import csv
import json
import re
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import soundfile

from helpers import REPO, tiny_config
from wavejax import config as wavejax_config
from wavejax import errors, training
from wavejax.data import audio
from wavejax.inference import model as predict
from wavejax.inference import timeline
from wavejax.reporting import plots, results
from wavejax.training import workspace

RATE = 16000
CLIP = 16000  # 1 s clips (tiny_config)
HOP_SECONDS = 0.5
SEGMENTS = 6
UTTERANCES_PER_SEGMENT = 6
# Of the 6 known segments, at least this many must get their label as the majority of the windows
# lying fully inside them. Measured on CPU: 6 of 6, with the right label on 82-91 % of each
# segment's windows (85 % overall).
MIN_SEGMENTS_RIGHT = 5


def write_noise(path, seconds, rate, channels=1, seed=0, subtype="FLOAT"):
  data = np.random.default_rng(seed).uniform(-0.5, 0.5, (int(seconds * rate), channels))
  soundfile.write(path, data.astype(np.float32), rate, subtype=subtype)
  return str(path)


class StubModel:
  """The `LoadedModel` interface with probabilities that are a known function of the window
  (softmax of 50 * [mean, -mean]), so batching and order can be checked without training."""
  sample_rate, clip_seconds, num_samples = RATE, 1.0, CLIP
  classes = ("up", "down")
  workdir, fold, epoch = "stub", 1, 3

  def __init__(self):
    self.batches = []

  def probabilities(self, waveforms, batch_size=32):
    self.batches.append(len(waveforms))
    return stub_probabilities(np.asarray(waveforms))


def stub_probabilities(waveforms):
  logits = 50 * np.stack([waveforms.mean(axis=1), -waveforms.mean(axis=1)], axis=1)
  e = np.exp(logits - logits.max(axis=1, keepdims=True))
  return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Block reading, no model.


@pytest.mark.parametrize("rate,channels,seconds", [(44100, 2, 4.3), (8000, 3, 2.05),
                                                   (16000, 1, 3.0), (48000, 1, 0.002)])
@pytest.mark.parametrize("block_seconds", [0.25, 1.0])
def test_block_resampling_equals_whole_file(tmp_path, rate, channels, seconds, block_seconds):
  path = write_noise(tmp_path / "x.wav", seconds, rate, channels)
  whole = audio.read(path, RATE)
  info = timeline.FileInfo(path)
  pieces = list(timeline.decoded_blocks(path, RATE, block_seconds, info))
  assert len(pieces) >= int(seconds / block_seconds)  # really read in blocks
  blocks = np.concatenate(pieces)
  assert blocks.shape == whole.shape and blocks.dtype == np.float32
  # The block edges fall on the whole file's resampling grid with full filter context: they
  # agree to float32 rounding (in fact exactly).
  np.testing.assert_allclose(blocks, whole, rtol=0, atol=1e-6)
  assert (info.file_rate, info.channels, info.frames) == (rate, channels, int(seconds * rate))


def test_windows_are_whole_file_slices_padded_at_the_end(tmp_path):
  path = write_noise(tmp_path / "x.wav", 4.3, 44100, 2)
  whole = audio.read(path, RATE)
  hop = 5000
  found = list(timeline.windows(path, RATE, CLIP, hop, block_seconds=0.3))
  starts = [s for s, _ in found]
  assert starts == list(range(0, len(whole) - CLIP + hop, hop))
  assert starts[-1] + CLIP >= len(whole) > starts[-2] + CLIP
  for start, window in found:
    np.testing.assert_array_equal(window, audio.fit_length(whole[start:], CLIP))
  assert np.all(found[-1][1][len(whole) - starts[-1]:] == 0)


def test_window_count():
  assert timeline.window_count(100, 160, 80) == 1
  assert timeline.window_count(160, 160, 80) == 1
  assert timeline.window_count(161, 160, 80) == 2
  assert timeline.window_count(400, 160, 80) == 4  # 0, 80, 160, 240 (reaches 400)
  assert timeline.window_count(1000, 100, 300) == 4  # hop > clip: starts 0..900, none at 1000


def test_reads_are_bounded_not_by_the_file(tmp_path, monkeypatch):
  """A 2-minute 44.1 kHz stereo file is read a block (one clip of the file) at a time."""
  path = write_noise(tmp_path / "long.wav", 120, 44100, 2, subtype="PCM_16")
  requested, returned = [], []
  original = soundfile.SoundFile.read

  def read(self, frames=-1, *args, **kwargs):
    requested.append(frames)
    out = original(self, frames, *args, **kwargs)
    returned.append(len(out))
    return out

  monkeypatch.setattr(soundfile.SoundFile, "read", read)
  model = StubModel()
  tracemalloc.start()
  try:
    result = timeline.timeline(model, path, hop_seconds=0.5, batch_size=8)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  bound = timeline.block_frames(44100, RATE, 1.0)
  assert bound == 44100
  assert min(requested) > 0 and max(requested) <= bound and max(returned) <= bound
  assert sum(returned) == 120 * 44100 and len(requested) >= 120
  # Decoded whole, the file would take 42 MB (float32 stereo) and 7.7 MB resampled; a block, its
  # resampling, a window and a batch of 8 windows take about 2 MB.
  assert peak < 2.5e6, peak
  assert len(result.starts) == 239 and max(model.batches) == 8


def test_timeline_with_a_stub_model_matches_the_whole_file(tmp_path):
  path = write_noise(tmp_path / "x.wav", 5.25, 22050, 2)
  whole = audio.read(path, RATE)
  model = StubModel()
  result = timeline.timeline(model, path, hop_seconds=0.3, batch_size=4)
  hop = round(0.3 * RATE)
  count = timeline.window_count(len(whole), CLIP, hop)
  expected = stub_probabilities(np.stack([audio.fit_length(whole[k * hop:], CLIP)
                                          for k in range(count)]))
  np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)
  np.testing.assert_allclose(result.starts, np.arange(count) * 0.3, atol=1e-9)
  duration = int(5.25 * 22050) / 22050
  assert result.duration_seconds == duration
  np.testing.assert_allclose(result.ends, np.minimum(result.starts + 1.0, duration), atol=1e-9)
  assert model.batches == [4] * (count // 4) + ([count % 4] if count % 4 else [])
  assert result.labels == [model.classes[i] for i in expected.argmax(axis=1)]


def test_errors_name_the_file(tmp_path):
  model = StubModel()
  text = tmp_path / "notes.wav"
  text.write_text("not audio at all\n" * 10)
  with pytest.raises(errors.AudioError, match=r"notes\.wav: cannot decode audio"):
    timeline.timeline(model, text)
  empty = tmp_path / "empty.wav"
  soundfile.write(empty, np.zeros((0, 1), np.float32), RATE)
  with pytest.raises(errors.AudioError, match=r"empty\.wav: the file holds no samples"):
    timeline.timeline(model, empty)
  with pytest.raises(errors.AudioError, match=r"missing\.wav: the file does not exist"):
    timeline.timeline(model, tmp_path / "missing.wav")
  good = write_noise(tmp_path / "good.wav", 2.0, RATE)
  with pytest.raises(errors.ConfigError, match="hop_seconds=0"):
    timeline.timeline(model, good, hop_seconds=0)
  result = timeline.timeline(model, good)
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(errors.WriteError, match="a_file"):
    result.write_csv(blocker / "x.timeline.csv")
  with pytest.raises(errors.ConfigError, match="same name"):
    timeline.output_stems([tmp_path / "a" / "x.wav", tmp_path / "b" / "x.flac"], tmp_path)


# ----------------------------------------------------------------------------------------------
# A trained gender model on a file of known segments.


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """Five epochs of the gender task on fold 1 (validation from the training sessions, so the
  selected epoch tracks training)."""
  workdir = tmp_path_factory.mktemp("run")
  config = wavejax_config.resolve(tiny_config(
      tmp_path_factory.mktemp("cache"), task="gender",
      **{"train.num_epochs": 5, "data.val_from": "train", "data.val_size": 8}))
  fold_dir = workdir / "fold_1"
  workspace.record_config(config, fold_dir)
  data = training.load_fold_data(config, 1)
  result = training.FoldTrainer(config, data, fold_dir).run()
  results.save_fold(result, fold_dir / "result.json")
  return predict.load_model(workdir), data


@pytest.fixture(scope="module")
def long_file(run, tmp_path_factory):
  """6 segments of alternating gender, each the 1 s training clips (as the trainer decodes them)
  of 6 training utterances, as one 16 kHz mono file; returns the path, the waveform and
  [(first sample, end sample, label)] per segment. Windows on whole seconds are training clips,
  the others straddle two clips of the same segment."""
  loaded, data = run
  train_ids = [int(i) for i in data.split.train]
  by_class = {c: [i for i in train_ids if data.targets[i] == k]
              for k, c in enumerate(data.classes)}
  pieces, segments, position = [], [], 0
  for s in range(SEGMENTS):
    label = data.classes[s % 2]
    chosen = by_class[label][(s // 2) * UTTERANCES_PER_SEGMENT:
                             (s // 2 + 1) * UTTERANCES_PER_SEGMENT]
    assert len(chosen) == UTTERANCES_PER_SEGMENT
    waveform = np.concatenate([audio.load(data.manifest[i].path, RATE, 1.0)
                               for i in chosen])
    segments.append((position, position + len(waveform), label))
    pieces.append(waveform)
    position += len(waveform)
  waveform = np.concatenate(pieces)
  path = tmp_path_factory.mktemp("long") / "interview.wav"
  soundfile.write(path, waveform, RATE, subtype="FLOAT")
  assert loaded.classes == ("F", "M")
  return str(path), waveform, segments


@pytest.fixture(scope="module")
def long_timeline(run, long_file):
  loaded, _ = run
  return timeline.timeline(loaded, long_file[0], hop_seconds=HOP_SECONDS, batch_size=16)


def majority_per_segment(result, segments):
  """[(majority label of the windows fully inside, their count, share right)] per segment."""
  starts = np.round(result.starts * RATE).astype(int)
  labels = np.array(result.labels)
  out = []
  for first, end, label in segments:
    inside = labels[(starts >= first) & (starts + CLIP <= end)]
    values, counts = np.unique(inside, return_counts=True)
    out.append((values[np.argmax(counts)], len(inside), float(np.mean(inside == label))))
  return out


def test_timeline_finds_the_segments(run, long_file, long_timeline):
  loaded, _ = run
  path, waveform, segments = long_file
  result = long_timeline
  found = majority_per_segment(result, segments)
  assert all(count == 11 for _, count, _ in found)  # 6 s segments, 1 s windows every 0.5 s
  right = sum(majority == label for (majority, _, _), (_, _, label) in zip(found, segments))
  assert right >= MIN_SEGMENTS_RIGHT, found
  # Contiguous windows every hop from 0, each one clip long, the last one reaching the end.
  duration = len(waveform) / RATE
  count = timeline.window_count(len(waveform), CLIP, round(HOP_SECONDS * RATE))
  assert len(result.starts) == count
  np.testing.assert_allclose(result.starts, np.arange(count) * HOP_SECONDS, atol=1e-9)
  np.testing.assert_allclose(result.ends, np.minimum(result.starts + 1.0, duration), atol=1e-9)
  assert result.ends[-1] == pytest.approx(duration) and result.duration_seconds == duration
  assert (result.hop_seconds, result.clip_seconds, result.sample_rate) == (HOP_SECONDS, 1.0, RATE)
  # The same numbers as classifying each window cut from the whole waveform.
  expected = loaded.probabilities(np.stack([audio.fit_length(waveform[round(s * RATE):], CLIP)
                                            for s in result.starts]), batch_size=16)
  np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
  np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)
  shares = result.label_shares()
  assert sum(shares.values()) == pytest.approx(1.0)
  assert shares["F"] == pytest.approx(result.labels.count("F") / count)


def test_csv_json_and_plot_round_trip(run, long_timeline, tmp_path):
  loaded, _ = run
  result = long_timeline
  result.write_csv(tmp_path / "t.csv")
  with open(tmp_path / "t.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["start", "end", "label", "p_F", "p_M"]
  assert len(rows) == len(result.starts)
  np.testing.assert_array_equal([float(r["start"]) for r in rows], result.starts)
  np.testing.assert_array_equal([float(r["end"]) for r in rows], result.ends)
  assert [r["label"] for r in rows] == result.labels
  np.testing.assert_array_equal(
      np.array([[float(r["p_F"]), float(r["p_M"])] for r in rows], np.float32),
      result.probabilities)

  result.write_json(tmp_path / "t.json")
  data = json.loads((tmp_path / "t.json").read_text())
  assert (data["workdir"], data["fold"], data["epoch"]) == (str(loaded.workdir), 1, loaded.epoch)
  assert data["classes"] == ["F", "M"] and data["hop_seconds"] == HOP_SECONDS
  assert data["segments"][3]["label"] == result.labels[3]
  back = timeline.Timeline.from_json(tmp_path / "t.json")
  for field in ("path", "classes", "hop_seconds", "clip_seconds", "sample_rate",
                "duration_seconds", "workdir", "fold", "epoch"):
    assert getattr(back, field) == getattr(result, field), field
  for field in ("starts", "ends", "probabilities"):
    np.testing.assert_array_equal(getattr(back, field), getattr(result, field))
  with pytest.raises(errors.ResultsError, match=r"t\.csv: not a timeline JSON"):
    timeline.Timeline.from_json(tmp_path / "t.csv")

  if plots.available():
    result.plot(tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  else:
    with pytest.raises(plots.PlotsUnavailableError, match="pip install"):
      result.plot(tmp_path / "t.png")
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
      ["t.csv", "t.json"] + (["t.png"] if plots.available() else []))  # no temporaries left


def test_short_file_gives_one_segment(run, long_file, tmp_path):
  loaded, _ = run
  _, waveform, segments = long_file
  short = waveform[segments[1][0]:segments[1][0] + 7000]
  soundfile.write(tmp_path / "short.wav", short, RATE, subtype="FLOAT")
  result = timeline.timeline(loaded, tmp_path / "short.wav")
  assert len(result.starts) == 1 and result.starts[0] == 0.0
  assert result.ends[0] == pytest.approx(7000 / RATE)
  np.testing.assert_allclose(result.probabilities, loaded.probabilities(short), atol=1e-5)


def test_multichannel_and_44k_files_give_the_same_labels(run, long_file, long_timeline, tmp_path):
  loaded, _ = run
  _, waveform, _ = long_file
  stereo = tmp_path / "stereo.wav"
  soundfile.write(stereo, np.stack([1.5 * waveform, 0.5 * waveform], axis=1), RATE,
                  subtype="FLOAT")
  from_stereo = timeline.timeline(loaded, stereo, hop_seconds=HOP_SECONDS, batch_size=16)
  assert from_stereo.labels == long_timeline.labels
  np.testing.assert_allclose(from_stereo.probabilities, long_timeline.probabilities, atol=1e-4)

  at_44k = tmp_path / "at_44k.wav"
  soundfile.write(at_44k, audio.resample(waveform, RATE, 44100), 44100, subtype="FLOAT")
  from_44k = timeline.timeline(loaded, at_44k, hop_seconds=HOP_SECONDS, batch_size=16)
  np.testing.assert_allclose(from_44k.starts, long_timeline.starts, atol=1e-9)
  assert from_44k.duration_seconds == pytest.approx(long_timeline.duration_seconds, abs=1e-4)
  # Resampled there and back: the same labels and nearly the same probabilities.
  agree = np.mean(np.array(from_44k.labels) == np.array(long_timeline.labels))
  assert agree >= 0.97, agree  # measured: 1.0, probabilities within 0.008
  assert np.max(np.abs(from_44k.probabilities - long_timeline.probabilities)) < 0.1


def test_cli_writes_timelines_and_reports_errors(run, long_file, tmp_path):
  loaded, _ = run
  long_path = long_file[0]
  short = tmp_path / "short.wav"
  soundfile.write(short, long_file[1][:5000], RATE, subtype="FLOAT")
  empty = tmp_path / "empty.wav"
  soundfile.write(empty, np.zeros((0, 2), np.float32), RATE)
  out = tmp_path / "out"
  command = [sys.executable, "-m", "wavejax.predict", f"--workdir={loaded.workdir}", "--timeline",
             "--hop_seconds=1.5", f"--out={out}"]
  done = subprocess.run([*command, long_path, str(short), str(empty)], cwd=REPO,
                        capture_output=True, text=True)
  assert done.returncode == 1, done.stderr[-2000:]
  lines = done.stdout.strip().splitlines()
  assert len(lines) == 2 and lines[0].startswith(f"{long_path}: ")
  assert "segments (1 s every 1.5 s over" in lines[0] and "F " in lines[0] and "M " in lines[0]
  assert lines[1].startswith(f"{short}: 1 segments")
  assert done.stderr.strip().splitlines()[-1] == (
      f"wavejax: error: {empty}: the file holds no samples; pass a file with audio")
  expected = {"interview.timeline.csv", "interview.timeline.json", "short.timeline.csv",
              "short.timeline.json"} | ({"interview.timeline.png", "short.timeline.png"}
                                        if plots.available() else set())
  assert {p.name for p in out.iterdir()} == expected
  written = timeline.Timeline.from_json(out / "interview.timeline.json")
  assert written.hop_seconds == 1.5 and written.path == long_path
  reference = timeline.timeline(loaded, long_path, hop_seconds=1.5)
  np.testing.assert_allclose(written.probabilities, reference.probabilities, atol=1e-5)

  # An unwritable --out (a file where the folder belongs): one line naming it (the CLI prints it
  # as the empty file's line above).
  blocker = tmp_path / "blocker"
  blocker.write_text("")
  with pytest.raises(errors.WriteError, match=f"^{re.escape(str(blocker))}/sub: cannot write"):
    list(timeline.write_timelines(loaded, [str(short)], blocker / "sub"))
