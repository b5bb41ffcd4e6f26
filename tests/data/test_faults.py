"""Faults of the data side: damaged derived files, a full disk, killed runs, links, cut audio.

Nothing is lost (a file counted once, a cut file reported) and nothing is mixed (a damaged cache is
decoded again, never trained on; one recording never sits under two labels).
"""

import errno
import fcntl
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import soundfile

from wavejax import atomic, data, errors
from wavejax.data import audio, cache, corpus, folds, iemocap, summary
from wavejax.data.manifest import Manifest, Utterance

REPO = pathlib.Path(__file__).resolve().parents[2]
RATE = 16000


def write_tone(path: pathlib.Path, seconds=0.25, freq=300.0, fmt=None):
  path.parent.mkdir(parents=True, exist_ok=True)
  t = np.arange(int(seconds * RATE)) / RATE
  soundfile.write(path, 0.3 * np.sin(2 * np.pi * freq * t), RATE, format=fmt, subtype="PCM_16")
  return path


def tone_manifest(folder: pathlib.Path, count=6, seconds=0.25) -> Manifest:
  utterances = []
  for i in range(count):
    path = write_tone(folder / f"u{i}.wav", seconds, freq=150.0 + 50 * i)
    utterances.append(Utterance(str(path), f"u{i}", 1 + i % 2, f"s{i % 2}", "F", "sad", seconds))
  return Manifest(tuple(utterances), dataset="tones", root=str(folder))


def expected_waveforms(manifest: Manifest, clip_seconds: float) -> np.ndarray:
  return np.stack([audio.load(u.path, RATE, clip_seconds) for u in manifest])


def only_entry(folder: pathlib.Path) -> pathlib.Path:
  [entry] = folder.glob("*.npy")
  return entry


def warnings_naming(caplog, path) -> list[str]:
  return [r.getMessage() for r in caplog.records
          if r.levelname == "WARNING" and str(path) in r.getMessage()]


# ---------------------------------------------------------------- the decoded cache read back


def overwrite_values(entry: pathlib.Path, value: float, rows=slice(None)):
  values = np.load(entry, mmap_mode="r+")
  values[rows] = value
  values.flush()


@pytest.mark.parametrize("damage", ["nan", "other finite values", "one row changed",
                                    "truncated", "record deleted", "record damaged"])
def test_damaged_cache_is_decoded_again_with_one_warning(tmp_path, caplog, monkeypatch, damage):
  # One digest per 2 rows of 4000 samples.
  monkeypatch.setattr(cache, "CHUNK_BYTES", 32000, raising=False)
  manifest = tone_manifest(tmp_path / "audio")
  expected = expected_waveforms(manifest, 0.25)
  first = cache.load_waveforms(manifest, RATE, 0.25, cache_dir=tmp_path / "c")
  np.testing.assert_allclose(first, expected, atol=1e-6)
  entry = only_entry(tmp_path / "c")
  if damage == "nan":
    overwrite_values(entry, np.nan)
  elif damage == "other finite values":
    overwrite_values(entry, 0.25)
  elif damage == "one row changed":
    overwrite_values(entry, 0.01, rows=slice(3, 4))
  elif damage == "truncated":
    os.truncate(entry, entry.stat().st_size // 3)
  elif damage == "record deleted":
    cache.record_path_of(entry).unlink()
  else:
    cache.record_path_of(entry).write_text('{"format": 1, "shape": [6, 4')
  with caplog.at_level("WARNING"):
    again = cache.load_waveforms(manifest, RATE, 0.25, cache_dir=tmp_path / "c")
  np.testing.assert_allclose(again, expected, atol=1e-6)
  [warning] = warnings_naming(caplog, entry)
  assert "decoded again" in warning
  if damage == "nan":
    assert "NaN" in warning
  if damage == "one row changed":
    assert "rows 2-3" in warning
  if damage == "truncated":
    assert "truncated" in warning
  # The new entry is intact: read back without decoding or warning.
  caplog.clear()
  monkeypatch.setattr(cache, "decode_into", None)
  with caplog.at_level("WARNING"):
    np.testing.assert_array_equal(
        cache.load_waveforms(manifest, RATE, 0.25, cache_dir=tmp_path / "c"), again)
  assert not warnings_naming(caplog, entry)


def test_damaged_cache_with_skipped_files_keeps_the_rows_aligned(tmp_path, caplog):
  manifest = tone_manifest(tmp_path / "audio")
  bad = tmp_path / "audio" / "bad.wav"
  bad.write_text("not audio")
  manifest = manifest.replace([*manifest[:2], Utterance(str(bad), "bad", 1, "s", "F", "sad", 0.0),
                               *manifest[2:]])
  kept, waveforms = cache.load(manifest, RATE, 0.25, cache_dir=tmp_path / "c", bad_audio="skip")
  expected = np.array(waveforms)
  overwrite_values(only_entry(tmp_path / "c"), np.inf, rows=slice(0, 1))
  with caplog.at_level("WARNING"):
    again, rebuilt = cache.load(manifest, RATE, 0.25, cache_dir=tmp_path / "c", bad_audio="skip")
  assert again == kept and "bad" not in again.field("utt_id")
  np.testing.assert_array_equal(rebuilt, expected)
  assert warnings_naming(caplog, only_entry(tmp_path / "c"))


# ---------------------------------------------------------------- folds.json read back


def test_damaged_fold_assignment_names_the_file_and_the_fix(tmp_path):
  utterances = [Utterance(f"/x/{i}.wav", f"u{i}", 1 + i % 3, f"s{i % 3}", "F", "sad", 1.0)
                for i in range(9)]
  manifest = Manifest(tuple(utterances), dataset="t", root="/x")
  path = folds.write_assignment(manifest, tmp_path / "folds.json")
  assert folds.read_assignment(path) == {u.utt_id: u.session for u in manifest}
  text = path.read_text()
  edited = json.loads(text)
  edited["utterances"]["u4"] = 1  # moves an utterance to another fold: valid JSON, wrong folds
  for damaged in (text[:len(text) // 2], json.dumps(edited)):
    path.write_text(damaged)
    with pytest.raises(errors.DatasetError) as raised:
      folds.read_assignment(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: not a readable fold assignment") and "\n" not in message
    assert "delete it and rerun" in message


# ---------------------------------------------------------------- a full disk while writing


def no_temporaries(folder: pathlib.Path) -> bool:
  return not [p for p in folder.glob(".*") if p.name.endswith(".tmp")]


def test_full_disk_at_allocation_is_a_write_error_and_nothing_is_left(tmp_path, monkeypatch):
  manifest = tone_manifest(tmp_path / "audio")

  def no_space(fd, offset, length):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  def never(*args, **kwargs):
    raise AssertionError("the memory map was written before its blocks were allocated")

  monkeypatch.setattr(os, "posix_fallocate", no_space)
  monkeypatch.setattr(cache, "decode_into", never)
  with pytest.raises(errors.WriteError) as raised:
    cache.load(manifest, RATE, 0.25, cache_dir=tmp_path / "c")
  message = str(raised.value)
  assert "\n" not in message and "No space left on device" in message
  assert message.startswith(str(tmp_path / "c")) and ".npy" in message.split(":")[0]
  assert no_temporaries(tmp_path / "c") and not list((tmp_path / "c").glob("*.npy"))


@pytest.mark.parametrize("fallocate", ["posix_fallocate", "not supported", "absent"])
def test_blocks_are_allocated_before_the_memmap_is_written(tmp_path, monkeypatch, fallocate):
  """The bus error needs a page of a sparse file: every block exists before decoding writes."""
  if fallocate == "not supported":
    def unsupported(fd, offset, length):
      raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
    monkeypatch.setattr(os, "posix_fallocate", unsupported)
  elif fallocate == "absent":
    monkeypatch.delattr(os, "posix_fallocate")
  manifest = tone_manifest(tmp_path / "audio", count=40, seconds=1.0)
  seen = []
  decode_into = cache.decode_into

  def check_then_decode(manifest, out, *args, **kwargs):
    [temporary] = [p for p in (tmp_path / "c").glob(".*") if p.name.endswith(".tmp")]
    stat = temporary.stat()
    seen.append((stat.st_blocks * 512, stat.st_size))
    return decode_into(manifest, out, *args, **kwargs)

  monkeypatch.setattr(cache, "decode_into", check_then_decode)
  waveforms = cache.load_waveforms(manifest, RATE, 1.0, cache_dir=tmp_path / "c")
  [(allocated, size)] = seen
  assert size >= 40 * RATE * 4 and allocated >= size
  np.testing.assert_allclose(waveforms, expected_waveforms(manifest, 1.0), atol=1e-6)


CHILD = textwrap.dedent("""
    import sys
    from wavejax import errors
    from wavejax.data import cache
    from wavejax.data.manifest import Manifest, Utterance
    paths, cache_dir = sys.argv[1].split(","), sys.argv[2]
    manifest = Manifest(tuple(Utterance(p, str(i), 1, "s", "F", "sad", 1.0)
                              for i, p in enumerate(paths)), dataset="t", root="/")
    {prepare}
    try:
      cache.load(manifest, 16000, 1.0, cache_dir=cache_dir, num_workers=1)
    except errors.WriteError as e:
      print("WriteError:", e)
    else:
      print("written")
""")


def run_child(paths, cache_dir, prepare="", wrap=None, timeout=120):
  command = [sys.executable, "-c", CHILD.format(prepare=prepare),
             ",".join(map(str, paths)), str(cache_dir)]
  if wrap:
    command = wrap(command)
  return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False,
                        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_file_size_limit_fails_at_allocation_not_in_the_memory_map(tmp_path):
  """A real kernel refusal (RLIMIT_FSIZE: EFBIG at allocation) ends as a one-line WriteError."""
  paths = [write_tone(tmp_path / f"{i}.wav", 1.0) for i in range(40)]  # 2.56 MB of cache
  prepare = ("import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
             "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))")
  out = run_child(paths, tmp_path / "c", prepare)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "WriteError:" in out.stdout and "cannot write the decoded cache" in out.stdout
  assert "File too large" in out.stdout
  assert no_temporaries(tmp_path / "c")


def _tmpfs_available() -> bool:
  if not shutil.which("unshare"):
    return False
  probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                          "mount -t tmpfs -o size=1m none /tmp"], capture_output=True,
                         timeout=30, check=False)
  return probe.returncode == 0


@pytest.mark.skipif(not _tmpfs_available(),
                    reason="needs `unshare` to mount a 1 MB tmpfs in a user namespace")
def test_full_tmpfs_is_a_write_error_not_a_bus_error(tmp_path):
  """The reported crash itself: a 2.56 MB cache on a 1 MB file system (exit 135, SIGBUS, before)."""
  paths = [write_tone(tmp_path / f"{i}.wav", 1.0) for i in range(40)]
  small = tmp_path / "small"
  small.mkdir()

  def in_small_tmpfs(command):
    quoted = " ".join(f"'{part}'" for part in command)
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
            f"mount -t tmpfs -o size=1m none '{small}' && {quoted}; "
            f"status=$?; ls -a '{small}/c'; exit $status"]

  out = run_child(paths, small / "c", wrap=in_small_tmpfs)
  assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
  assert "WriteError:" in out.stdout and "No space left on device" in out.stdout
  assert ".tmp" not in out.stdout  # the listing of the cache folder, inside the namespace


def test_killed_decode_leaves_a_temporary_file_the_next_run_removes(tmp_path):
  paths = [write_tone(tmp_path / f"{i}.wav", 1.0) for i in range(4)]
  kill = ("import os, signal\n"
          "cache.decode_into = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)")
  out = run_child(paths, tmp_path / "c", kill)
  assert out.returncode == -signal.SIGKILL
  [left] = [p for p in (tmp_path / "c").glob(".*") if p.name.endswith(".tmp")]
  assert left.stat().st_size >= 4 * RATE * 4
  manifest = Manifest(tuple(Utterance(str(p), str(i), 1, "s", "F", "sad", 1.0)
                            for i, p in enumerate(paths)), dataset="t", root="/")
  waveforms = cache.load_waveforms(manifest, RATE, 1.0, cache_dir=tmp_path / "c")
  assert not left.exists() and no_temporaries(tmp_path / "c")
  np.testing.assert_allclose(waveforms, expected_waveforms(manifest, 1.0), atol=1e-6)


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
  folder = tmp_path / "c"
  folder.mkdir()
  ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                         capture_output=True, text=True, check=True)
  dead = int(ended.stdout)
  names = {
      "dead writer": f".a.npy.{atomic.HOST}.{dead}.0123abcd.tmp",
      "live writer": f".b.npy.{atomic.HOST}.{os.getpid()}.0123abcd.tmp",
      "other host, recent": ".c.npy.node-17.cluster.4242.0123abcd.tmp",
      "other host, old": ".d.npy.node-17.cluster.4242.0123abcd.tmp",
      "locked by its writer": f".e.npy.{atomic.HOST}.{dead}.0123abcd.tmp",
      "not a temporary file": ".keep",
  }
  for name in names.values():
    (folder / name).write_bytes(b"\0" * 100)
  two_days_ago = time.time() - 2 * 24 * 3600
  os.utime(folder / names["other host, old"], (two_days_ago, two_days_ago))
  with open(folder / names["locked by its writer"], "rb") as writer:
    fcntl.flock(writer.fileno(), fcntl.LOCK_EX)  # as a writer in another PID namespace holds it
    cache.load_waveforms(tone_manifest(tmp_path / "audio", count=2), RATE, 0.25, cache_dir=folder)
  left = {kind for kind, name in names.items() if (folder / name).exists()}
  assert left == {"live writer", "other host, recent", "locked by its writer",
                  "not a temporary file"}


def test_file_changed_while_decoding_is_not_cached(tmp_path, monkeypatch):
  manifest = tone_manifest(tmp_path / "audio")
  decode_into = cache.decode_into

  def copy_still_running(manifest, out, *args, **kwargs):
    report = decode_into(manifest, out, *args, **kwargs)
    write_tone(pathlib.Path(manifest[2].path), seconds=0.5)
    os.utime(manifest[2].path, ns=(1, 1))
    return report

  monkeypatch.setattr(cache, "decode_into", copy_still_running)
  with pytest.raises(errors.DatasetError, match=r"u2.wav: changed while it was being decoded"):
    cache.load(manifest, RATE, 0.25, cache_dir=tmp_path / "c")
  assert not list((tmp_path / "c").glob("*.npy")) and no_temporaries(tmp_path / "c")


def test_concurrent_loads_decode_once(tmp_path, monkeypatch):
  manifest = tone_manifest(tmp_path / "audio")
  calls = []
  decode_into = cache.decode_into

  def slow_decode(*args, **kwargs):
    calls.append(1)
    time.sleep(0.5)
    return decode_into(*args, **kwargs)

  monkeypatch.setattr(cache, "decode_into", slow_decode)
  start, results = threading.Barrier(2), []

  def load():
    start.wait()
    results.append(cache.load_waveforms(manifest, RATE, 0.25, cache_dir=tmp_path / "c"))

  threads = [threading.Thread(target=load) for _ in range(2)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(60)
  assert len(calls) == 1 and len(results) == 2
  np.testing.assert_array_equal(results[0], results[1])


# ---------------------------------------------------------------- one file, one label


def make_labelled_folders(root: pathlib.Path, per_label=20) -> pathlib.Path:
  for label in ("angry", "neutral", "sad"):
    for i in range(per_label):
      write_tone(root / label / f"{label}_{i}.wav", 0.05, freq=100.0 + 10 * i + len(label))
  return root


def test_link_from_a_label_folder_back_to_the_root_is_an_error(tmp_path):
  root = make_labelled_folders(tmp_path / "f")
  (root / "angry" / "back").symlink_to(root, target_is_directory=True)
  with pytest.raises(errors.DatasetError) as raised:
    data.scan("folder", root, num_folds=2)
  message = str(raised.value)
  assert "\n" not in message and "same file" in message
  assert f"{root}/neutral/neutral_0.wav" in message
  assert f"{root}/angry/back/neutral/neutral_0.wav" in message


def test_a_file_reached_twice_under_one_label_is_counted_once(tmp_path):
  root = make_labelled_folders(tmp_path / "f")
  (root / "angry" / "alias.wav").symlink_to(root / "angry" / "angry_0.wav")
  os.link(root / "sad" / "sad_1.wav", root / "sad" / "hard link.wav")
  (root / "sad" / "loop").symlink_to(root / "sad", target_is_directory=True)
  manifest = data.scan("folder", root, num_folds=2)
  assert len(manifest) == 60
  assert len({corpus.file_identity(u.path) for u in manifest}) == 60
  notes = "\n".join(manifest.notes)
  assert f"alias.wav: the same file as {root / 'angry' / 'angry_0.wav'}" in notes
  assert "hard link.wav: the same file as" in notes or "sad_1.wav: the same file as" in notes


def test_hard_link_under_two_labels_is_an_error(tmp_path):
  root = make_labelled_folders(tmp_path / "f", per_label=4)
  os.link(root / "sad" / "sad_1.wav", root / "angry" / "copy.wav")
  with pytest.raises(errors.DatasetError, match=r"angry/copy.wav \(angry/copy, label 'angry'\) "
                                                r"and .*sad/sad_1.wav \(sad/sad_1, label 'sad'\) "
                                                r"are the same file"):
    data.scan("folder", root, num_folds=2)


def test_listing_rows_naming_one_file_twice(tmp_path):
  write_tone(tmp_path / "a.wav")
  (tmp_path / "link.wav").symlink_to(tmp_path / "a.wav")
  write_tone(tmp_path / "b.wav", freq=500.0)
  listing = tmp_path / "list.csv"
  listing.write_text("path,label\na.wav,x\nlink.wav,x\nb.wav,y\n")
  manifest = data.scan("manifest", listing, num_folds=2)
  assert manifest.field("utt_id") == ["a", "b"]
  assert any("link.wav: the same file as" in n for n in manifest.notes)
  listing.write_text("path,label\na.wav,x\nlink.wav,y\nb.wav,y\n")
  with pytest.raises(errors.DatasetError, match=r"a.wav \(a, label 'x'\) and .*link.wav "
                                                r"\(link, label 'y'\) are the same file"):
    data.scan("manifest", listing, num_folds=2)


def test_walk_ends_in_link_loops_and_notes_unlistable_folders(tmp_path, monkeypatch):
  root = tmp_path / "corpus"
  write_tone(root / "a" / "x.wav")
  write_tone(root / "b" / "y.wav")
  (root / "a" / "up").symlink_to(root, target_is_directory=True)
  (root / "b" / "self").symlink_to(root / "b", target_is_directory=True)
  (root / "b" / "again.wav").symlink_to(root / "a" / "x.wav")
  files, notes = corpus.walk(root)
  assert files == [root / "a" / "x.wav", root / "b" / "y.wav"]
  assert any("again.wav: the same file as" in n for n in notes)
  scandir = os.scandir

  def denied(path):
    if pathlib.Path(path) == root / "b":
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    return scandir(path)

  monkeypatch.setattr(os, "scandir", denied)
  files, notes = corpus.walk(root)
  assert files == [root / "a" / "x.wav"]
  assert any(n.startswith(f"{root / 'b'}: cannot list this folder (Permission denied)")
             for n in notes)


def test_iemocap_wavs_linked_to_one_file_under_two_labels(tmp_path):
  from test_iemocap import make_tree  # pylint: disable=import-outside-toplevel
  root = make_tree(tmp_path / "IEMOCAP_full_release")
  wav = root / "Session1/sentences/wav/Ses01F_impro01"
  (wav / "Ses01F_impro01_M000.wav").unlink()  # angry
  (wav / "Ses01F_impro01_M000.wav").symlink_to(wav / "Ses01F_impro01_F000.wav")  # neutral
  with pytest.raises(errors.DatasetError, match=r"\(Ses01F_impro01_F000, label 'neutral'\) "
                                                r"and .*\(Ses01F_impro01_M000, label 'angry'\) "
                                                r"are the same file"):
    iemocap.scan(root)


# ---------------------------------------------------------------- IEMOCAP label lines


def test_iemocap_line_without_vad_is_used_and_logged(tmp_path, caplog):
  from test_iemocap import HEADER, make_tree  # pylint: disable=import-outside-toplevel
  turns = [(1, "Ses01F_impro01", suffix, code)
           for suffix, code in (("F000", "neu"), ("M000", "ang"), ("F001", "sad"))]
  root = make_tree(tmp_path / "IEMOCAP_full_release", turns=turns)
  label_file = root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
  label_file.write_text(HEADER
                        + "[1.0000 - 2.0000]\tSes01F_impro01_F000\tneu\t[2.5000, 3.0000, 2.0000]\n"
                        + "[2.0000 - 3.0000]\tSes01F_impro01_M000\tang\n"
                        + "[3.0000 - 4.0000]\tSes01F_impro01_F0\n")
  with caplog.at_level("WARNING"):
    manifest = iemocap.scan(root)
  assert {u.utt_id: u.emotion for u in manifest} == {"Ses01F_impro01_F000": "neutral",
                                                      "Ses01F_impro01_M000": "angry"}
  messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert any(m.startswith(f"{label_file}:4: summary line without its [V, A, D] part")
             for m in messages)
  assert any(m.startswith(f"{label_file}:5: not a valid") for m in messages)


# ---------------------------------------------------------------- audio that cannot be read


def test_unreadable_file_says_permission_denied(tmp_path, monkeypatch):
  path = write_tone(tmp_path / "locked.wav")
  access = os.access
  monkeypatch.setattr(os, "access", lambda p, mode: str(p) != str(path) and access(p, mode))
  with pytest.raises(errors.AudioError, match=r"locked.wav: the file is not readable \(permission"):
    audio.read(path, RATE)


def cut(path: pathlib.Path, fraction=1 / 3) -> pathlib.Path:
  content = path.read_bytes()
  path.write_bytes(content[:int(len(content) * fraction)])
  return path


@pytest.mark.parametrize("fmt, suffix", [("WAV", ".wav"), ("AIFF", ".aiff"), ("W64", ".w64"),
                                         ("RF64", ".wav")])
def test_cut_file_is_bad_audio_and_a_summary_problem(tmp_path, fmt, suffix):
  manifest = tone_manifest(tmp_path / "audio", count=4)
  path = cut(write_tone(tmp_path / "audio" / f"cut{suffix}", 1.0, fmt=fmt))
  assert soundfile.info(str(path)).frames > 0  # libsndfile opens it and says nothing
  with pytest.raises(errors.AudioError) as raised:
    audio.read(path, RATE)
  message = str(raised.value)
  assert message.startswith(f"{path}: the file was cut: its header declares 16000 frames")
  assert "\n" not in message
  manifest = manifest.replace([*manifest, Utterance(str(path), "cut", 2, "s1", "F", "sad", 1.0)])
  result = summary.summarize(manifest, "emotion", num_workers=1)
  assert result["problem_counts"] == {"truncated": 1}
  assert result["problems"][0]["message"] == message
  with pytest.raises(errors.AudioError, match=f"{path.name}: the file was cut"):
    cache.load(manifest, RATE, 0.25, cache_dir=tmp_path / "c")
  kept, waveforms = cache.load(manifest, RATE, 0.25, cache_dir=tmp_path / "c", bad_audio="skip")
  assert "cut" not in kept.field("utt_id") and waveforms.shape == (4, 4000)
