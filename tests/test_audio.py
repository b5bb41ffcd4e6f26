"""Decoding, downmix, resampling, pad/cut and the decoded cache."""

import os

import numpy as np
import pytest
import soundfile

from wavejax import errors
from wavejax.data import audio, cache
from wavejax.data.manifest import Manifest, Utterance


def tone(rate, seconds, freq=440.0, channels=1):
  t = np.arange(int(rate * seconds)) / rate
  wave = 0.5 * np.sin(2 * np.pi * freq * t)
  return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def test_resample_and_downmix_keep_the_tone(tmp_path):
  path = tmp_path / "stereo 48k é.wav"
  soundfile.write(path, tone(48000, 1.0, channels=2), 48000, subtype="PCM_24")
  wave = audio.read(path, 16000)
  assert wave.dtype == np.float32 and wave.shape == (16000,)
  spectrum = np.abs(np.fft.rfft(wave))
  assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins
  assert abs(np.sqrt(np.mean(wave[1000:-1000] ** 2)) - 0.5 / np.sqrt(2)) < 0.01


def test_fit_length_pads_and_cuts():
  wave = np.arange(10, dtype=np.float32)
  np.testing.assert_array_equal(audio.fit_length(wave, 4), [0, 1, 2, 3])
  np.testing.assert_array_equal(audio.fit_length(wave, 12), list(range(10)) + [0, 0])


def test_bad_files_raise_audio_error_naming_the_file(tmp_path):
  text = tmp_path / "notes.wav"
  text.write_text("not audio")
  with pytest.raises(errors.AudioError, match="notes.wav"):
    audio.read(text, 16000)
  empty = tmp_path / "empty.wav"
  soundfile.write(empty, np.zeros(0), 16000)
  with pytest.raises(errors.AudioError, match="no samples"):
    audio.read(empty, 16000)
  nan = tmp_path / "nan.wav"
  soundfile.write(nan, np.array([0.0, np.nan, 0.1]), 16000, subtype="FLOAT")
  with pytest.raises(errors.AudioError, match="NaN"):
    audio.read(nan, 16000)


def test_cache_decodes_once_and_notices_changes(tmp_path):
  paths = []
  for i in range(3):
    paths.append(tmp_path / f"{i}.wav")
    soundfile.write(paths[-1], tone(16000, 0.5 + 0.25 * i, freq=200 * (i + 1)), 16000)
  manifest = Manifest(tuple(Utterance(str(p), p.stem, 1, "01F", "F", "sad", 0.5)
                            for p in paths), dataset="t", root=str(tmp_path))
  first = cache.load_waveforms(manifest, 16000, 1.0, cache_dir=tmp_path / "c")
  assert first.shape == (3, 16000)
  np.testing.assert_allclose(first[0, :8000], audio.read(paths[0], 16000), atol=1e-6)
  assert np.all(first[0, 8000:] == 0)
  files = list((tmp_path / "c").glob("*.npy"))
  assert len(files) == 1
  mtime = files[0].stat().st_mtime_ns
  cache.load_waveforms(manifest, 16000, 1.0, cache_dir=tmp_path / "c")
  assert files[0].stat().st_mtime_ns == mtime
  soundfile.write(paths[1], tone(16000, 0.3), 16000)
  os.utime(paths[1], ns=(1, 1))
  changed = cache.load_waveforms(manifest, 16000, 1.0, cache_dir=tmp_path / "c")
  assert len(list((tmp_path / "c").glob("*.npy"))) == 2
  assert np.all(changed[1, 4800:] == 0)
