"""Decoding: any file soundfile reads -> mono float32 at the model rate, padded or cut (Sec. 4.1).

The paper pads or cuts every utterance to 6 s at 16 kHz (96,000 samples). Whatever libsndfile
decodes is accepted: 8/16/24/32-bit PCM and float WAV, FLAC, OGG/Vorbis, MP3, AIFF, ..., mono,
stereo or multichannel (averaged), at any integer rate (polyphase resampling). A file that cannot
give a usable waveform (missing, a directory, empty, not audio, a truncated header, no samples,
NaN or infinite samples, data cut short of what the header declares) raises a one-line
`AudioError` naming the file and what is wrong. Silent files decode normally (all zeros);
`is_silent` lets callers report them.

A WAV (RIFF, RF64, W64) or AIFF file cut by an interrupted copy still opens: libsndfile reads the
frames that are there and says nothing, so `stored_frames` compares the frame count the header
declares with what the file's size holds. (A cut FLAC or OGG file fails to decode on its own.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import struct

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
  check_complete(path, int(file_rate))
  return data, int(file_rate)


# Phrase of the error for a file cut short; the data summary counts these as "truncated".
CUT = "the file was cut"


def check_complete(path, sample_rate: int) -> None:
  """Raises `AudioError` when the file holds fewer frames than its header declares."""
  try:
    frames = stored_frames(path)
  except OSError:
    return  # (the decoder read it: nothing more to say)
  if frames is None or frames[1] >= frames[0]:
    return
  declared, held = frames
  raise errors.AudioError(
      f"{path}: {CUT}: its header declares {declared} frames ({declared / sample_rate:.2f} s) but "
      f"it holds {held} ({100.0 * held / declared:.0f}%); restore the whole file (an interrupted "
      "copy?) or remove it from the dataset")


def stored_frames(path) -> tuple[int, int] | None:
  """`(frames the header declares, whole frames the file holds)` of a WAV, RF64, W64 or AIFF file;
  None for other formats or a header that does not say (a streamed file's length 0 or ~0)."""
  with open(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    head = f.read(16)
    if head[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64") and head[8:12] == b"WAVE":
      return _riff_frames(f, size, ">" if head[:4] == b"RIFX" else "<")
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
      return _aiff_frames(f, size)
    if head[:4] == b"riff" and head[4:16] == _W64_GUID_TAIL:
      return _w64_frames(f, size)
  return None


# The 12 bytes that follow the tag in every Sony Wave64 chunk GUID (`riff`, `fmt `, `data`, ...).
_W64_GUID_TAIL = bytes.fromhex("2e91cf11a5d628db04c10000")
_UNKNOWN_SIZES = (0, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF)
_MAX_CHUNKS = 256


def _held(declared_bytes: int, data_start: int, size: int, frame_bytes: int):
  if declared_bytes in _UNKNOWN_SIZES or frame_bytes <= 0:
    return None
  return declared_bytes // frame_bytes, max(0, size - data_start) // frame_bytes


def _riff_frames(f, size: int, order: str):
  position, frame_bytes, data64 = 12, 0, None
  for _ in range(_MAX_CHUNKS):
    f.seek(position)
    header = f.read(8)
    if len(header) < 8:
      return None
    tag, length = header[:4], struct.unpack(order + "I", header[4:])[0]
    if tag == b"ds64":  # RF64: the real sizes (riff, data, sample count) as 64-bit numbers
      body = f.read(16)
      data64 = struct.unpack("<Q", body[8:16])[0] if len(body) == 16 else None
    elif tag == b"fmt ":
      body = f.read(14)
      frame_bytes = struct.unpack(order + "H", body[12:14])[0] if len(body) == 14 else 0
    elif tag == b"data":
      if length == 0xFFFFFFFF and data64 is not None:
        length = data64
      return _held(length, position + 8, size, frame_bytes)
    position += 8 + length + (length & 1)
  return None


def _aiff_frames(f, size: int):
  position, frames, frame_bytes, aifc = 12, None, 0, False
  f.seek(8)
  aifc = f.read(4) == b"AIFC"
  for _ in range(_MAX_CHUNKS):
    f.seek(position)
    header = f.read(8)
    if len(header) < 8:
      return None
    tag, length = header[:4], struct.unpack(">I", header[4:])[0]
    if tag == b"COMM":
      body = f.read(22)
      if len(body) < 8:
        return None
      channels, frames, bits = struct.unpack(">hIh", body[:8])
      compression = body[18:22] if aifc and len(body) >= 22 else b"NONE"
      if compression not in (b"NONE", b"sowt", b"twos", b"fl32", b"FL32", b"fl64", b"FL64",
                             b"raw "):
        return None  # compressed: the bits per sample do not give the bytes per frame
      frame_bytes = channels * ((bits + 7) // 8)
    elif tag == b"SSND":
      offset = f.read(4)
      if frames is None or len(offset) < 4:
        return None
      start = position + 16 + struct.unpack(">I", offset)[0]
      return _held(frames * frame_bytes, start, size, frame_bytes)
    position += 8 + length + (length & 1)
  return None


def _w64_frames(f, size: int):
  position, frame_bytes = 40, 0  # riff GUID, 64-bit size, wave GUID
  for _ in range(_MAX_CHUNKS):
    f.seek(position)
    header = f.read(24)
    if len(header) < 24:
      return None
    tag, length = header[:4], struct.unpack("<Q", header[16:24])[0]  # length includes the header
    if tag == b"fmt ":
      body = f.read(14)
      frame_bytes = struct.unpack("<H", body[12:14])[0] if len(body) == 14 else 0
    elif tag == b"data":
      return _held(length - 24, position + 24, size, frame_bytes)
    if length < 24:
      return None
    position += (length + 7) // 8 * 8
  return None


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
  if not os.access(path, os.R_OK):
    raise errors.AudioError(f"{path}: the file is not readable (permission denied); check its "
                            "permissions or remove it from the dataset")


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
