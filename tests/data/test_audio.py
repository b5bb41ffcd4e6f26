"""Decoding, downmix, resampling, pad/cut and the decoded cache."""

import os

import numpy as np
import pytest
import soundfile

from wavejax import errors
from wavejax.data import audio, cache, corpus, workers
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


# ------------------------------------------------------------ robustness: one small file per case

def dominant_hz(wave, rate=16000):
  spectrum = np.abs(np.fft.rfft(wave))
  return np.argmax(spectrum) * rate / len(wave)


@pytest.mark.parametrize("fmt, subtype, suffix, tolerance", [
    ("WAV", "PCM_U8", ".wav", 0.02), ("WAV", "PCM_16", ".wav", 1e-3),
    ("WAV", "PCM_24", ".wav", 1e-4), ("WAV", "PCM_32", ".wav", 1e-4),
    ("WAV", "FLOAT", ".wav", 1e-6), ("WAV", "DOUBLE", ".wav", 1e-6),
    ("FLAC", "PCM_16", ".flac", 1e-3), ("FLAC", "PCM_24", ".flac", 1e-4),
    ("OGG", "VORBIS", ".ogg", None), ("OGG", "OPUS", ".opus", None),
    ("MP3", "MPEG_LAYER_III", ".mp3", None), ("AIFF", "PCM_16", ".aiff", 1e-3),
    ("CAF", "PCM_16", ".caf", 1e-3), ("RF64", "PCM_16", ".rf64", 1e-3),
    ("W64", "PCM_16", ".w64", 1e-3),
])
def test_every_sample_format_decodes(tmp_path, fmt, subtype, suffix, tolerance):
  assert suffix in corpus.AUDIO_SUFFIXES
  path = tmp_path / f"tone{suffix}"
  source = tone(16000, 0.5)
  soundfile.write(path, source, 16000, format=fmt, subtype=subtype)
  wave = audio.read(path, 16000)
  assert wave.dtype == np.float32
  # lossy encoders may pad the end by up to one frame
  assert abs(len(wave) - 8000) <= (1 if tolerance else 1200)
  assert abs(dominant_hz(wave) - 440) <= 2
  if tolerance is not None:
    np.testing.assert_allclose(wave, source, atol=tolerance)
  else:  # lossy: the level survives
    assert abs(np.sqrt(np.mean(wave[800:-800] ** 2)) - 0.5 / np.sqrt(2)) < 0.05


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_every_sample_rate_is_resampled(tmp_path, rate):
  path = tmp_path / f"{rate}.wav"
  soundfile.write(path, tone(rate, 1.0, freq=300.0), rate)
  wave = audio.read(path, 16000)
  assert wave.shape == (16000,)
  assert abs(dominant_hz(wave) - 300) <= 1
  assert abs(np.sqrt(np.mean(wave[1000:-1000] ** 2)) - 0.5 / np.sqrt(2)) < 0.01


@pytest.mark.parametrize("channels", [2, 6])
def test_multichannel_is_averaged(tmp_path, channels):
  path = tmp_path / f"{channels}ch.wav"
  data = np.zeros((16000, channels))
  data[:, 0] = tone(16000, 1.0)
  data[:, 1] = -0.25
  soundfile.write(path, data, 16000, subtype="FLOAT")
  wave = audio.read(path, 16000)
  np.testing.assert_allclose(wave, (data[:, 0] - 0.25) / channels, atol=1e-6)


def test_shorter_than_one_window_is_padded(tmp_path):
  path = tmp_path / "tiny.wav"
  soundfile.write(path, np.full(100, 0.5), 8000, subtype="FLOAT")  # 12.5 ms < one 40 ms window
  wave = audio.load(path, 16000, 1.0)
  assert wave.shape == (16000,) and np.all(wave[300:] == 0) and np.abs(wave[:150]).max() > 0.3
  one = tmp_path / "one.wav"
  soundfile.write(one, np.array([0.5]), 44100, subtype="FLOAT")
  assert audio.load(one, 16000, 0.1).shape == (1600,)


def test_silent_file_decodes_to_zeros_and_is_reported(tmp_path):
  path = tmp_path / "silent.wav"
  soundfile.write(path, np.zeros(4000), 16000)
  wave = audio.read(path, 16000)
  assert np.all(wave == 0) and audio.is_silent(wave)
  assert audio.inspect(path).silent and not audio.inspect(path).error


def write_bad_file(tmp_path, kind):
  """A file (or directory) named .wav that cannot give a waveform; returns (path, message)."""
  path = tmp_path / f"{kind}.wav"
  if kind == "nan":
    soundfile.write(path, np.array([0.0, np.nan, 0.1]), 16000, subtype="FLOAT")
    return path, "NaN or infinite"
  if kind == "inf":
    soundfile.write(path, np.array([0.0, np.inf, 0.1]), 16000, subtype="DOUBLE")
    return path, "NaN or infinite"
  if kind == "zero_bytes":
    path.write_bytes(b"")
    return path, "empty \\(0 bytes\\)"
  if kind == "no_samples":
    soundfile.write(path, np.zeros(0), 16000)
    return path, "no samples"
  if kind == "truncated_header":
    soundfile.write(path, tone(16000, 0.1), 16000)
    path.write_bytes(path.read_bytes()[:20])
    return path, "cannot decode audio"
  if kind == "text":
    path.write_text("this is a text file, not audio\n")
    return path, "cannot decode audio"
  if kind == "directory":
    path.mkdir()
    return path, "is a directory"
  if kind == "missing":
    return path, "does not exist"
  raise ValueError(kind)


BAD_KINDS = ["nan", "inf", "zero_bytes", "no_samples", "truncated_header", "text", "directory",
             "missing"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_unusable_files_give_one_line_errors_naming_the_file(tmp_path, kind):
  path, message = write_bad_file(tmp_path, kind)
  with pytest.raises(errors.AudioError, match=message) as raised:
    audio.read(path, 16000)
  assert str(raised.value).startswith(f"{path}:") and "\n" not in str(raised.value)
  report = audio.inspect(path)
  assert report.error == str(raised.value) and not report.silent


def test_path_with_spaces_and_non_ascii(tmp_path):
  path = tmp_path / "dossier ünïcode 声" / "fichier à espaces ñ.flac"
  path.parent.mkdir()
  soundfile.write(path, tone(22050, 0.5), 22050, subtype="PCM_16")
  assert audio.read(path, 16000).shape == (8000,)
  manifest = Manifest((Utterance(str(path), "u", 1, "s", "F", "sad", 0.5),), "t", str(tmp_path))
  assert cache.load_waveforms(manifest, 16000, 0.5, cache_dir=tmp_path / "c").shape == (1, 8000)


# ------------------------------------------------------------ the bad-audio policy in the cache

def mixed_manifest(tmp_path):
  """Six good files and three bad ones, interleaved."""
  utterances = []
  for i in range(6):
    path = tmp_path / f"good{i}.wav"
    soundfile.write(path, tone(16000, 0.25, freq=100.0 * (i + 1)), 16000)
    utterances.append(Utterance(str(path), f"good{i}", 1 + i % 2, "s", "F", "sad", 0.25))
  for position, kind in ((1, "text"), (4, "nan"), (7, "directory")):
    path, _ = write_bad_file(tmp_path, kind)
    utterances.insert(position, Utterance(str(path), kind, 1, "s", "F", "sad", 0.0))
  return Manifest(tuple(utterances), dataset="mixed", root=str(tmp_path))


def test_bad_audio_error_names_the_first_bad_file(tmp_path):
  manifest = mixed_manifest(tmp_path)
  with pytest.raises(errors.AudioError, match=r"text.wav: cannot decode.*\[3 unusable") as raised:
    cache.load(manifest, 16000, 0.5, cache_dir=tmp_path / "c")
  assert "\n" not in str(raised.value) and "bad_audio=skip" in str(raised.value)
  with pytest.raises(errors.AudioError, match="text.wav"):
    cache.decode_all(manifest, 16000, 0.5)
  # The decoded entry was kept: the same error comes back from the cache.
  with pytest.raises(errors.AudioError, match="text.wav"):
    cache.load_waveforms(manifest, 16000, 0.5, cache_dir=tmp_path / "c")
  with pytest.raises(errors.ConfigError, match="bad_audio='drop'"):
    cache.load(manifest, 16000, 0.5, cache_dir=tmp_path / "c", bad_audio="drop")


def test_bad_audio_skip_drops_them_consistently(tmp_path, monkeypatch):
  manifest = mixed_manifest(tmp_path)
  kept, waveforms = cache.load(manifest, 16000, 0.5, cache_dir=tmp_path / "c", bad_audio="skip")
  assert [u.utt_id for u in kept] == [f"good{i}" for i in range(6)]
  assert waveforms.shape == (6, 8000)
  for row, utt in enumerate(kept):
    np.testing.assert_allclose(waveforms[row, :4000], audio.read(utt.path, 16000), atol=1e-6)
  # A second run reads the cache (no decoding) and drops the same files.
  monkeypatch.setattr(cache, "decode_into", None)
  again, cached = cache.load(manifest, 16000, 0.5, cache_dir=tmp_path / "c", bad_audio="skip")
  assert again == kept and np.array_equal(cached, waveforms)


def test_every_file_bad_is_a_dataset_error(tmp_path):
  path, _ = write_bad_file(tmp_path, "text")
  manifest = Manifest((Utterance(str(path), "t", 1, "s", "F", "sad", 0.0),), "t", str(tmp_path))
  with pytest.raises(errors.DatasetError, match="none of the 1 files"):
    cache.load(manifest, 16000, 0.5, cache_dir=tmp_path / "c", bad_audio="skip")


def test_worker_processes_give_the_same_waveforms(tmp_path, monkeypatch):
  manifest = mixed_manifest(tmp_path)
  sequential = np.zeros((len(manifest), 8000), np.float32)
  report = cache.decode_into(manifest, sequential, 16000, 0.5, num_workers=1)
  monkeypatch.setattr(workers, "PROCESS_MIN_ITEMS", 1)
  monkeypatch.setattr(workers, "CHUNK_SIZE", 2)
  parallel = np.zeros_like(sequential)
  assert cache.decode_into(manifest, parallel, 16000, 0.5, num_workers=2) == report
  np.testing.assert_array_equal(parallel, sequential)
  assert [i for i, _ in report.bad] == [1, 4, 7]
  # Worker processes that cannot start: the work is done in threads instead.
  monkeypatch.setattr(workers.sys, "executable", str(tmp_path / "no-python"))
  fallback = np.zeros_like(sequential)
  assert cache.decode_into(manifest, fallback, 16000, 0.5, num_workers=2) == report
  np.testing.assert_array_equal(fallback, sequential)


def test_worker_process_protocol(tmp_path):
  process = workers._WorkerProcess()  # pylint: disable=protected-access
  try:
    path = tmp_path / "a.wav"
    soundfile.write(path, tone(8000, 0.25), 8000)
    decode = cache._decode_chunk  # pylint: disable=protected-access
    [(index, wave, error, silent)] = process.call(decode, [(3, str(path))], (16000, 0.5))
    assert (index, error, silent, wave.shape) == (3, "", False, (8000,))
    with pytest.raises(workers.subprocess.SubprocessError, match="TypeError"):
      process.call(decode, [(0, str(path))], ())
  finally:
    process.close()
  assert process.process.returncode == 0


def test_progress_lines_are_logged(tmp_path, monkeypatch):
  lines = []
  monkeypatch.setattr(workers.logging, "info", lambda fmt, *args: lines.append(fmt % args))
  progress = workers.Progress(4, "Decoding x", interval_s=0.0)
  for _ in range(4):
    progress.update()
  progress.finish()
  assert lines[0].startswith("Decoding x: 1/4 files (25%)") and "ETA" in lines[0]
  assert lines[-1].startswith("Decoding x: 4/4 files (100%)")
