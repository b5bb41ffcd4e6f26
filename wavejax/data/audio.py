"""Decoding: any file soundfile reads -> mono float32 at the model rate, padded or cut (Sec. 4.1).

The paper pads or cuts every utterance to 6 s at 16 kHz (96,000 samples). Whatever libsndfile
decodes is accepted: 8/16/24/32-bit PCM and float WAV, FLAC, OGG/Vorbis, MP3, AIFF, ..., mono,
stereo or multichannel (averaged), at any integer rate (polyphase resampling). A file that cannot
give a usable waveform (missing, a directory, empty, not audio, a truncated header, no samples,
NaN or infinite samples) raises a one-line `AudioError` naming the file and what is wrong. Silent
files decode normally (all zeros); `is_silent` lets callers report them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re

import numpy as np
import soundfile
from scipy import signal

from wavejax import errors

# Peak amplitude at or below which a decoded file counts as silent (-80 dBFS; 16-bit LSB is -90).
SILENCE_PEAK = 1e-4
_DECODE_ERRORS = (RuntimeError, soundfile.LibsndfileError, OSError, ValueError, TypeError)


# The first bytes of the text file Git LFS leaves in place of a file it did not download.
LFS_POINTER = b"version https://git-lfs"


def read(path, sample_rate: int) -> np.ndarray:
  """Decodes `path` to a mono float32 waveform at `sample_rate`.

  Multi-channel audio is averaged; other rates are resampled with a polyphase filter.
  """
  data, file_rate = _decode(path)
  waveform = data.mean(axis=1, dtype=np.float32)
  return resample(waveform, file_rate, sample_rate)


def _decode(path) -> tuple[np.ndarray, int]:
  """`[frames, channels]` float32 samples and the file's rate, or a one-line `AudioError`."""
  check_file(path)
  try:
    data, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
  except _DECODE_ERRORS as e:
    if _is_lfs_pointer(path):
      raise errors.AudioError(f"{path}: a Git LFS pointer, not the audio; fetch the audio "
                              "(`git lfs pull` in the corpus clone) and run again") from e
    raise errors.AudioError(f"{path}: cannot decode audio ({_reason(e)}); "
                            "replace the file or remove it from the dataset") from e
  if data.shape[0] == 0:
    raise errors.AudioError(f"{path}: the file holds no samples; remove it from the dataset")
  if not np.all(np.isfinite(data)):
    raise errors.AudioError(f"{path}: the file holds NaN or infinite samples; "
                            "repair it or remove it from the dataset")
  return data, int(file_rate)


def _is_lfs_pointer(path) -> bool:
  """Looked at only when decoding failed: no extra read of every good file."""
  try:
    with open(path, "rb") as f:
      return f.read(len(LFS_POINTER)) == LFS_POINTER
  except OSError:
    return False


def check_file(path) -> None:
  """Raises `AudioError` unless `path` is an existing, non-empty regular file."""
  if not os.path.lexists(path):
    raise errors.AudioError(f"{path}: the file does not exist; restore it or remove it from the "
                            "dataset")
  if os.path.isdir(path):
    raise errors.AudioError(f"{path}: is a directory, not an audio file; rename it or remove it "
                            "from the dataset")
  if not os.path.isfile(path):
    raise errors.AudioError(f"{path}: is not a regular file (a broken link?); replace it with the "
                            "audio file")
  if os.path.getsize(path) == 0:
    raise errors.AudioError(f"{path}: the file is empty (0 bytes); restore it or remove it from "
                            "the dataset")


def resample(waveform: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
  """Polyphase resampling (scipy.signal.resample_poly) between integer rates."""
  if from_rate == to_rate:
    return waveform.astype(np.float32, copy=False)
  common = math.gcd(int(from_rate), int(to_rate))
  out = signal.resample_poly(waveform, int(to_rate) // common, int(from_rate) // common)
  return out.astype(np.float32)


def fit_length(waveform: np.ndarray, num_samples: int) -> np.ndarray:
  """Cuts the tail beyond `num_samples` or zero-pads up to it."""
  if waveform.shape[0] >= num_samples:
    return waveform[:num_samples]
  return np.pad(waveform, (0, num_samples - waveform.shape[0]))


def load(path, sample_rate: int, clip_seconds: float) -> np.ndarray:
  """`read` followed by `fit_length` to `clip_seconds`."""
  return fit_length(read(path, sample_rate), clip_samples(sample_rate, clip_seconds))


def clip_samples(sample_rate: int, clip_seconds: float) -> int:
  return int(round(sample_rate * clip_seconds))


def is_silent(waveform: np.ndarray) -> bool:
  """True when no sample exceeds `SILENCE_PEAK` in magnitude."""
  return waveform.size == 0 or float(np.max(np.abs(waveform))) <= SILENCE_PEAK


def duration(path) -> float:
  """Duration in seconds from the file header; 0.0 when the header cannot be read.

  Loaders use it to fill `Utterance.duration_s` without failing on a bad file: decoding (with
  the `bad_audio` policy) and the data summary report such files.
  """
  try:
    return float(soundfile.info(str(path)).duration)
  except _DECODE_ERRORS:
    return 0.0


@dataclasses.dataclass(frozen=True)
class FileReport:
  """What `inspect` learns about one file; `error` is "" for a usable file."""
  path: str
  error: str = ""
  sample_rate: int = 0
  channels: int = 0
  frames: int = 0
  format: str = ""
  peak: float = 0.0
  sha1: str = ""

  @property
  def duration_s(self) -> float:
    return self.frames / self.sample_rate if self.sample_rate else 0.0

  @property
  def silent(self) -> bool:
    return not self.error and self.peak <= SILENCE_PEAK


def inspect(path) -> FileReport:
  """Header facts, peak level and content hash of one file, or the reason it is unusable."""
  try:
    data, rate = _decode(path)
    info = soundfile.info(str(path))
  except errors.AudioError as e:
    return FileReport(str(path), error=str(e))
  except _DECODE_ERRORS as e:
    return FileReport(str(path), error=f"{path}: cannot read the header ({_reason(e)})")
  return FileReport(str(path), sample_rate=rate, channels=data.shape[1], frames=data.shape[0],
                    format=f"{info.format} {info.subtype}", peak=float(np.max(np.abs(data))),
                    sha1=_sha1(path))


def _sha1(path) -> str:
  digest = hashlib.sha1()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _reason(error: Exception) -> str:
  text = str(error).strip()
  text = re.sub(r"^Error opening .*?: ", "", text.splitlines()[0]) if text else ""
  return text or type(error).__name__
