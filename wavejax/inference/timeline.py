r"""Classify a long recording as a timeline of clip-length windows.

A trained run classifies clips of `clip_seconds` at `sample_rate`. `timeline` slides such a window
over a file of any length with a hop (default: half a clip) and classifies every window, so an
interview of ten minutes or ten hours becomes a table of (start, end, label, probabilities).

Each window is decoded as the trainer decodes a clip: channels averaged, resampled to the model's
rate with `wavejax.data.audio.resample`, the last (partial) window zero-padded like a short clip
(`audio.fit_length`). A file shorter than a clip gives one segment.

The file is read in blocks, never whole: memory holds one block of the file, a window's worth of
resampled audio and one batch of windows, whatever the file's length. Resampling block by block
gives the same samples as resampling the whole file (`audio.read`): every block starts at a
multiple of the rate ratio's denominator, so its output samples fall on the whole file's output
grid with the same filter phases, and it is resampled with enough input on either side to cover
the resampler's filter; the block's edges then match the whole-file result to float32 rounding.

From Python::

  model = wavejax.load_model("runs/x")
  result = timeline(model, "interview.wav", hop_seconds=1.5)
  result.write_csv("interview.timeline.csv"); result.plot("interview.timeline.png")

From the shell: `python -m wavejax.predict --workdir=RUN --timeline --hop_seconds=1.5 --out=DIR
long.wav` writes `DIR/long.timeline.csv`, `.json` and (with matplotlib) `.png`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import pathlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import soundfile

from wavejax import atomic, errors
from wavejax.data import audio
from wavejax.reporting import plots

if TYPE_CHECKING:
  from wavejax.predict import LoadedModel

# What opening or reading an audio file can raise (libsndfile errors are RuntimeErrors).
_READ_ERRORS = (RuntimeError, OSError, ValueError, TypeError)
# scipy's resample_poly filter reaches 10 * max(up, down) upsampled samples to each side; the
# context read around a block covers twice that.
_FILTER_HALF_LENGTH = 10
_CONTEXT_MARGIN = 2
SUFFIXES = (".timeline.csv", ".timeline.json", ".timeline.png")


# ----------------------------------------------------------------------------------------------
# Reading a file in blocks.


def resample_ratio(file_rate: int, sample_rate: int) -> tuple[int, int]:
  """(up, down): the reduced ratio `audio.resample` resamples `file_rate` to `sample_rate` by."""
  common = math.gcd(int(file_rate), int(sample_rate))
  return int(sample_rate) // common, int(file_rate) // common


def context_frames(file_rate: int, sample_rate: int) -> int:
  """Input frames read on each side of a block so that its resampled edges equal the whole
  file's: the resampler's filter reach, with a margin, rounded up to a multiple of `down`."""
  up, down = resample_ratio(file_rate, sample_rate)
  if up == down:
    return 0
  reach = -(-_CONTEXT_MARGIN * _FILTER_HALF_LENGTH * max(up, down) // up)
  return -(-reach // down) * down


def block_frames(file_rate: int, sample_rate: int, block_seconds: float) -> int:
  """Frames per read: `block_seconds` of the file, rounded up to a multiple of `down` (so every
  block starts on the whole file's output grid)."""
  _, down = resample_ratio(file_rate, sample_rate)
  frames = max(1, math.ceil(block_seconds * file_rate))
  return -(-frames // down) * down


def _open(path) -> soundfile.SoundFile:
  audio.check_file(path)
  try:
    return soundfile.SoundFile(str(path))
  except _READ_ERRORS as e:
    raise errors.AudioError(f"{path}: cannot decode audio ({_reason(e)}); pass a file "
                            "soundfile reads (WAV, FLAC, OGG, MP3, AIFF, ...)") from e


def _reason(error: Exception) -> str:
  text = str(error).strip().splitlines()[0] if str(error).strip() else ""
  return text.split(": ", 1)[-1] if text.startswith("Error opening") else (
      text or type(error).__name__)


def _read_mono(path, f: soundfile.SoundFile, frames: int) -> np.ndarray:
  """Up to `frames` frames from `f`, channels averaged as `audio.read` does."""
  try:
    data = f.read(frames, dtype="float32", always_2d=True)
  except _READ_ERRORS as e:
    raise errors.AudioError(f"{path}: cannot decode audio ({_reason(e)}); the file is damaged, "
                            "repair or replace it") from e
  if not np.all(np.isfinite(data)):
    raise errors.AudioError(f"{path}: the file holds NaN or infinite samples; repair it")
  return data.mean(axis=1, dtype=np.float32)


@dataclasses.dataclass
class FileInfo:
  """Facts learnt while reading: the file's rate and, once read to the end, its frame count."""
  path: str
  file_rate: int = 0
  channels: int = 0
  frames: int = 0

  @property
  def duration_seconds(self) -> float:
    return self.frames / self.file_rate if self.file_rate else 0.0


def decoded_blocks(path, sample_rate: int, block_seconds: float = 1.0,
                   info: FileInfo | None = None) -> Iterator[np.ndarray]:
  """The file as mono float32 at `sample_rate`, in consecutive pieces whose concatenation is
  `audio.read(path, sample_rate)` (to float32 rounding), reading `block_frames` at a time.

  Args:
    path: an audio file.
    sample_rate: the rate to resample to.
    block_seconds: how much of the file one read takes.
    info: filled with the file's rate, channels and (at the end) frame count.

  Raises:
    AudioError: the file is missing, not audio, damaged, has no frames or non-finite samples.
  """
  info = FileInfo(str(path)) if info is None else info
  with _open(path) as f:
    info.file_rate, info.channels = int(f.samplerate), int(f.channels)
    up, down = resample_ratio(info.file_rate, sample_rate)
    context = context_frames(info.file_rate, sample_rate)
    block = block_frames(info.file_rate, sample_rate, block_seconds)
    held, held_start, start, at_end = np.zeros(0, np.float32), 0, 0, False
    while True:
      # Input needed: [start - context, start + block + context).
      while not at_end and held_start + len(held) < start + block + context:
        data = _read_mono(path, f, block)
        at_end = len(data) < block
        held = np.concatenate([held, data])
      total = held_start + len(held)
      info.frames = total
      if total == 0:
        raise errors.AudioError(f"{path}: the file holds no samples; pass a file with audio")
      last = at_end and total <= start + block
      end = total if last else start + block
      first = max(0, start - context)
      piece = audio.resample(held[first - held_start:min(total, end + context) - held_start],
                             info.file_rate, sample_rate)
      offset = (start - first) * up // down
      yield piece[offset:] if last else piece[offset:offset + (end - start) * up // down]
      if last:
        return
      start = end
      keep = max(0, start - context)
      held, held_start = held[keep - held_start:], keep


def window_count(total_samples: int, num_samples: int, hop_samples: int) -> int:
  """Windows of `num_samples` every `hop_samples` over `total_samples`: until one reaches the
  end, never one that starts at or after it, at least one."""
  if total_samples <= num_samples:
    return 1
  reaching_end = 1 + -(-(total_samples - num_samples) // hop_samples)
  return max(1, min(reaching_end, -(-total_samples // hop_samples)))


def windows(path, sample_rate: int, num_samples: int, hop_samples: int,
            block_seconds: float | None = None, info: FileInfo | None = None
            ) -> Iterator[tuple[int, np.ndarray]]:
  """`(start sample, [num_samples] float32 window)` at `sample_rate`, every `hop_samples`; the
  last window is zero-padded (`audio.fit_length`). Holds at most one window and one block."""
  info = FileInfo(str(path)) if info is None else info
  block_seconds = num_samples / sample_rate if block_seconds is None else block_seconds
  held, held_start, index = np.zeros(0, np.float32), 0, 0
  for piece in decoded_blocks(path, sample_rate, block_seconds, info):
    held = np.concatenate([held, piece])
    while (start := index * hop_samples) + num_samples <= held_start + len(held):
      yield start, held[start - held_start:start + num_samples - held_start].copy()
      index += 1
    drop = min(index * hop_samples, held_start + len(held)) - held_start
    held, held_start = held[drop:], held_start + drop
  total = held_start + len(held)
  for remaining in range(index, window_count(total, num_samples, hop_samples)):
    start = remaining * hop_samples
    yield start, audio.fit_length(held[start - held_start:], num_samples)


# ----------------------------------------------------------------------------------------------
# The timeline.


@dataclasses.dataclass(frozen=True)
class Segment:
  """One window: its span in seconds, top label and class probabilities."""
  start: float
  end: float
  label: str
  probabilities: dict


@dataclasses.dataclass
class Timeline:
  """Per-window classification of one file.

  Attributes:
    path: the file.
    classes: class names, in the order of `probabilities`' columns.
    starts, ends: `[S]` window spans in seconds (ends cut at the file's end).
    probabilities: `[S, classes]` softmax probabilities per window.
    hop_seconds, clip_seconds, sample_rate: the window grid (the hop rounded to whole samples).
    duration_seconds: the file's length.
    workdir, fold, epoch: the model that classified it.
  """
  path: str
  classes: tuple
  starts: np.ndarray
  ends: np.ndarray
  probabilities: np.ndarray
  hop_seconds: float
  clip_seconds: float
  sample_rate: int
  duration_seconds: float
  workdir: str = ""
  fold: int | None = None
  epoch: int | None = None

  @property
  def labels(self) -> list[str]:
    return [self.classes[int(i)] for i in np.argmax(self.probabilities, axis=1)]

  @property
  def segments(self) -> list[Segment]:
    return [Segment(float(s), float(e), label, dict(zip(self.classes, map(float, p))))
            for s, e, label, p in zip(self.starts, self.ends, self.labels, self.probabilities)]

  def label_shares(self) -> dict[str, float]:
    """Fraction of the windows whose top label is each class."""
    labels = self.labels
    return {c: labels.count(c) / max(1, len(labels)) for c in self.classes}

  def to_json(self) -> dict:
    return {"file": self.path, "workdir": self.workdir, "fold": self.fold, "epoch": self.epoch,
            "classes": list(self.classes), "sample_rate": self.sample_rate,
            "clip_seconds": self.clip_seconds, "hop_seconds": self.hop_seconds,
            "duration_seconds": self.duration_seconds,
            "segments": [dataclasses.asdict(s) for s in self.segments]}

  def write_json(self, path) -> pathlib.Path:
    """Writes `to_json()` atomically. Raises `WriteError` when `path` cannot be written."""
    return atomic.atomic_write(path, json.dumps(self.to_json(), indent=1) + "\n")

  def write_csv(self, path) -> pathlib.Path:
    """Writes `start,end,label,p_<class>...` rows atomically (`WriteError` on failure)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["start", "end", "label", *(f"p_{c}" for c in self.classes)])
    for s, e, label, p in zip(self.starts, self.ends, self.labels, self.probabilities):
      writer.writerow([repr(float(s)), repr(float(e)), label, *(f"{float(x):.9g}" for x in p)])
    return atomic.atomic_write(path, text.getvalue())

  @classmethod
  def from_json(cls, path) -> Timeline:
    """Reads back a file written by `write_json`."""
    try:
      data = json.loads(pathlib.Path(path).read_text())
      classes = tuple(data["classes"])
      segments = data["segments"]
      return cls(
          data["file"], classes, np.array([s["start"] for s in segments], float),
          np.array([s["end"] for s in segments], float),
          np.array([[s["probabilities"][c] for c in classes] for s in segments],
                   np.float32).reshape(len(segments), len(classes)),
          float(data["hop_seconds"]), float(data["clip_seconds"]), int(data["sample_rate"]),
          float(data["duration_seconds"]), data.get("workdir", ""), data.get("fold"),
          data.get("epoch"))
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise errors.ResultsError(f"{path}: not a timeline JSON file ({type(e).__name__}: {e}); "
                              "write it with Timeline.write_json") from e

  def plot(self, path) -> pathlib.Path:
    """Draws the class probabilities over time (stacked) above a band coloured by the top label;
    writes a PNG atomically.

    Raises:
      PlotsUnavailableError: matplotlib is not installed.
      WriteError: `path` cannot be written.
    """
    plt = _pyplot()
    centres = (self.starts + np.minimum(self.starts + self.clip_seconds,
                                        max(self.duration_seconds, 1e-9))) / 2
    colours = [f"C{i % 10}" for i in range(len(self.classes))]
    figure, (top, band) = plt.subplots(
        2, 1, sharex=True, figsize=(min(40.0, 6.0 + 0.05 * len(self.starts)), 4.2),
        gridspec_kw={"height_ratios": (5, 1)})
    try:
      top.stackplot(centres, self.probabilities.T, labels=self.classes, colors=colours, alpha=0.8)
      top.set(ylim=(0, 1), ylabel="probability",
              title=f"{pathlib.Path(self.path).name}: hop {self.hop_seconds:g} s, clip "
              f"{self.clip_seconds:g} s")
      top.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
      edges = np.concatenate([[0.0], (centres[1:] + centres[:-1]) / 2,
                              [max(self.duration_seconds, centres[-1])]])
      top_class = np.argmax(self.probabilities, axis=1)
      for c, colour in enumerate(colours):
        spans = [(edges[i], edges[i + 1] - edges[i]) for i in np.flatnonzero(top_class == c)]
        band.broken_barh(spans, (0, 1), color=colour)
      band.set(yticks=[], xlabel="time (s)", ylabel="top", xlim=(0, edges[-1]))
      figure.tight_layout()
      with atomic.atomic_open(path, binary=True) as f:
        figure.savefig(f, format="png", dpi=100)
    finally:
      plt.close(figure)
    return pathlib.Path(path)


def _pyplot():
  if not plots.available():
    raise plots.PlotsUnavailableError(f"matplotlib is not installed; for the timeline figure "
                                      f"{plots.INSTALL_HINT}")
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def hop_samples(hop_seconds: float | None, sample_rate: int, clip_seconds: float) -> int:
  """The hop in whole samples at `sample_rate` (default: half a clip).

  Raises:
    ConfigError: the hop is not positive or shorter than one sample.
  """
  seconds = clip_seconds / 2 if hop_seconds is None else float(hop_seconds)
  samples = round(seconds * sample_rate) if math.isfinite(seconds) else 0
  if samples < 1:
    raise errors.ConfigError(f"hop_seconds={hop_seconds}: the hop must be at least one sample "
                             f"(1/{sample_rate} s)")
  return samples


def timeline(loaded_model: LoadedModel, path, hop_seconds: float | None = None,
             batch_size: int = 32, block_seconds: float | None = None) -> Timeline:
  """Classifies every clip-length window of `path`, every `hop_seconds` (default: half a clip).

  Args:
    loaded_model: a `wavejax.inference.model.LoadedModel`.
    path: an audio file of any length, rate and channel count.
    hop_seconds: the step between window starts, rounded to whole samples at the model's rate.
    batch_size: windows classified at once.
    block_seconds: how much of the file one read takes (default: one clip).

  Returns:
    The `Timeline`: window k spans [k * hop, k * hop + clip] seconds, cut at the file's end.

  Raises:
    AudioError: the file cannot be decoded or holds no samples.
    ConfigError: the hop is not positive.
  """
  model = loaded_model
  rate, num_samples = int(model.sample_rate), int(model.num_samples)
  hop = hop_samples(hop_seconds, rate, model.clip_seconds)
  info = FileInfo(str(path))
  starts, probabilities = [], []
  batch, filled = np.zeros((batch_size, num_samples), np.float32), 0
  for start, window in windows(path, rate, num_samples, hop, block_seconds, info):
    starts.append(start)
    batch[filled], filled = window, filled + 1
    if filled == batch_size:
      probabilities.append(model.probabilities(batch, batch_size))
      filled = 0
  if filled:
    probabilities.append(model.probabilities(batch[:filled], batch_size))
  duration = info.duration_seconds
  starts = np.asarray(starts, np.int64)
  return Timeline(str(path), tuple(model.classes), starts / rate,
                  np.minimum((starts + num_samples) / rate, duration),
                  np.concatenate(probabilities).astype(np.float32), hop / rate,
                  float(model.clip_seconds), rate, duration, str(model.workdir), model.fold,
                  model.epoch)


# ----------------------------------------------------------------------------------------------
# The command line (`python -m wavejax.predict --timeline`).


def output_stems(paths: Sequence, out_dir) -> list[pathlib.Path]:
  """`out_dir/<file stem>` per input; one line naming the clash when two inputs share a stem."""
  stems, seen = [], {}
  for path in map(pathlib.Path, paths):
    if path.stem in seen:
      raise errors.ConfigError(f"{path}: has the same name as {seen[path.stem]}; their timelines "
                               f"would overwrite each other in {out_dir}, classify them apart")
    seen[path.stem] = path
    stems.append(pathlib.Path(out_dir) / path.stem)
  return stems


def summary_line(result: Timeline, written: Sequence) -> str:
  shares = ", ".join(f"{c} {100 * s:.1f}%" for c, s in result.label_shares().items())
  return (f"{result.path}: {len(result.starts)} segments ({result.clip_seconds:g} s every "
          f"{result.hop_seconds:g} s over {result.duration_seconds:.1f} s): {shares} -> "
          f"{', '.join(map(str, written))}")


def write_timelines(loaded_model: LoadedModel, paths: Sequence, out_dir,
                    hop_seconds: float | None = None, batch_size: int = 32) -> Iterator[str]:
  """Classifies each file, writes `out_dir/<stem>.timeline.{csv,json}` and, with matplotlib,
  `.png`; yields one summary line per file as it finishes.

  Raises:
    AudioError, ConfigError, WriteError: one line naming the file.
  """
  stems = output_stems(paths, out_dir)
  hop_samples(hop_seconds, loaded_model.sample_rate, loaded_model.clip_seconds)
  for path, stem in zip(paths, stems):
    result = timeline(loaded_model, path, hop_seconds, batch_size)
    csv_path, json_path, png_path = (stem.with_name(stem.name + s) for s in SUFFIXES)
    written = [result.write_csv(csv_path), result.write_json(json_path)]
    if plots.available():
      written.append(result.plot(png_path))
    yield summary_line(result, written)
