"""Decoding: any file soundfile reads -> mono float32 at the model rate, padded or cut (Sec. 4.1).

The paper pads or cuts every utterance to 6 s at 16 kHz (96,000 samples).
"""

from __future__ import annotations

import math

import numpy as np
import soundfile
from scipy import signal

from wavejax import errors


def read(path, sample_rate: int) -> np.ndarray:
  """Decodes `path` to a mono float32 waveform at `sample_rate`.

  Multi-channel audio is averaged; other rates are resampled with a polyphase filter.
  """
  try:
    data, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
  except (RuntimeError, soundfile.LibsndfileError, OSError) as e:
    raise errors.AudioError(f"{path}: cannot decode audio ({_reason(e)}); "
                            "replace the file or remove it from the dataset") from e
  if data.shape[0] == 0:
    raise errors.AudioError(f"{path}: the file holds no samples; remove it from the dataset")
  if not np.all(np.isfinite(data)):
    raise errors.AudioError(f"{path}: the file holds NaN or infinite samples; "
                            "repair it or remove it from the dataset")
  waveform = data.mean(axis=1, dtype=np.float32)
  return resample(waveform, file_rate, sample_rate)


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


def _reason(error: Exception) -> str:
  return str(error).splitlines()[0] if str(error) else type(error).__name__
