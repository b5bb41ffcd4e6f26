"""The `manifest` (CSV/TSV/JSONL/JSON listing) and `folder` datasets, and the pipeline on them."""

import collections
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from wavejax import data, errors
from wavejax.config import base_config
from wavejax.data import folds, pipeline, summary


def write_wav(path: pathlib.Path, seconds=0.1, rate=16000, freq=300.0):
  path.parent.mkdir(parents=True, exist_ok=True)
  t = np.arange(int(seconds * rate)) / rate
  soundfile.write(path, 0.2 * np.sin(2 * np.pi * freq * t), rate)


def make_listing(root: pathlib.Path, name="list.csv", rows=None):
  """Eight speakers (4 F, 4 M), three labels, relative paths and an extra column."""
  if rows is None:
    rows = []
    for i in range(24):
      speaker = f"spk{i % 8}"
      rows.append({"path": f"audio/{speaker}/clip {i} é.wav",
                   "label": ("dog", "cat", "happy")[i % 3],
                   "speaker": speaker, "gender": "female" if i % 8 < 4 else "M",
                   "mic": f"m{i % 2}"})
  for i, row in enumerate(rows):
    write_wav(root / (row.get("path") or row["file"]), freq=200.0 + 10 * i)
  path = root / name
  if name.endswith((".csv", ".tsv")):
    delimiter = "\t" if name.endswith(".tsv") else ","
    columns = list(rows[0])
    lines = [delimiter.join(columns)]
    lines += [delimiter.join(str(row.get(c, "")) for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
  elif name.endswith(".jsonl"):
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n")
  else:
    path.write_text(json.dumps(rows))
  return path


def test_csv_listing_with_speakers_and_extra_columns(tmp_path):
  path = make_listing(tmp_path)
  manifest = data.scan("manifest", path)
  assert len(manifest) == 24 and manifest.dataset == "manifest"
  first = manifest[0]
  assert first.path == str(tmp_path / "audio/spk0/clip 0 é.wav")
  assert first.utt_id == "audio/spk0/clip 0 é" and first.label == "dog" and first.emotion == ""
  assert first.gender == "F" and first.extra == {"mic": "m0"}
  assert abs(first.duration_s - 0.1) < 1e-6
  assert manifest.label_set == ("cat", "dog", "happy")
  assert folds.task_classes("label", manifest) == ("cat", "dog", "happy")
  # Speakers dealt to 5 gender-balanced groups; each speaker in exactly one.
  sessions = collections.defaultdict(set)
  for u in manifest:
    sessions[u.speaker].add(u.session)
  assert all(len(s) == 1 for s in sessions.values())
  assert manifest.sessions == (1, 2, 3, 4, 5)
  # The 4-class emotion task keeps only the rows labelled with one of its classes.
  assert {u.label for u in folds.select(manifest, "emotion")} == {"happy"}
  # The folder holding one manifest.* file works as a root too.
  path.rename(tmp_path / "manifest.csv")
  again = data.scan("manifest", tmp_path)
  assert again.utterances == manifest.utterances and again.root == str(tmp_path / "manifest.csv")


@pytest.mark.parametrize("name", ["list.tsv", "list.jsonl", "list.json"])
def test_other_listing_formats(tmp_path, name):
  manifest = data.scan("manifest", make_listing(tmp_path, name))
  assert len(manifest) == 24 and manifest[0].extra == {"mic": "m0"}
  assert manifest[3].speaker == "spk3" and manifest[5].gender == "M"


def test_session_column_integers_and_names(tmp_path):
  rows = [{"file": f"a{i}.wav", "Emotion": "sad" if i % 2 else "angry", "group": 3 + i % 2}
          for i in range(6)]
  manifest = data.scan("manifest", make_listing(tmp_path, "a.jsonl", rows))
  assert manifest.sessions == (3, 4) and manifest[0].extra == {}
  assert manifest.field("emotion") == ["angry", "sad"] * 3
  assert folds.num_folds(manifest) == 2
  rows = [{"path": f"b{i}.wav", "label": "x", "session": ("train", "dev", "test")[i % 3]}
          for i in range(6)]
  named = data.scan("manifest", make_listing(tmp_path, "b.csv", rows))
  assert {(u.extra["session"], u.session) for u in named} == {("dev", 1), ("test", 2),
                                                               ("train", 3)}


def test_listing_without_speakers_deals_files_by_label(tmp_path):
  rows = [{"path": f"w/{i}.wav", "label": "ab"[i % 2]} for i in range(10)]
  manifest = data.scan("manifest", make_listing(tmp_path, "c.csv", rows), num_folds=5)
  assert collections.Counter((u.session, u.label) for u in manifest) == {
      (s, label): 1 for s in range(1, 6) for label in "ab"}
  assert set(manifest.field("speaker")) == {""} and set(manifest.field("gender")) == {""}
  with pytest.raises(errors.DatasetError, match="gender of 10 utterance.*unknown"):
    folds.labels(manifest, "gender")


def test_listing_errors_name_the_file_and_line(tmp_path):
  def scan(text, name="l.csv", **options):
    (tmp_path / name).write_text(text)
    return data.scan("manifest", tmp_path / name, **options)

  write_wav(tmp_path / "ok.wav")
  write_wav(tmp_path / "ok2.wav", freq=500.0)
  with pytest.raises(errors.LabelFileError, match="no 'label' column"):
    scan("path,kind\nok.wav,x\n")
  with pytest.raises(errors.LabelFileError, match=r"l.csv:3: the label is empty"):
    scan("path,label\nok.wav,a\nok2.wav,\n")
  with pytest.raises(errors.LabelFileError, match=r"l.csv:3: .*labelled 'b' here but 'a'"):
    scan("path,label\nok.wav,a\nok.wav,b\n")
  repeated = scan("path,label\nok.wav,a\n./ok.wav,a\nok2.wav,a\n", num_folds=2)
  assert len(repeated) == 2 and any("listed again" in n for n in repeated.notes)
  with pytest.raises(errors.LabelFileError, match=r"l.csv:2: gender 'robot'"):
    scan("path,label,gender\nok.wav,a,robot\n")
  with pytest.raises(errors.LabelFileError, match=r"l.jsonl:2: not valid JSON"):
    scan('{"path": "ok.wav", "label": "a"}\n{oops\n', name="l.jsonl")
  with pytest.raises(errors.MissingAudioError, match="gone.wav.*1 missing"):
    scan("path,label\nok.wav,a\nok2.wav,a\ngone.wav,b\n", num_folds=2)
  kept = scan("path,label\nok.wav,a\nok2.wav,a\ngone.wav,b\n", num_folds=2,
              missing_audio="skip")
  assert len(kept) == 2 and kept.notes == (f"{tmp_path / 'gone.wav'}: listed at line 4 but does "
                                            "not exist",)
  with pytest.raises(errors.DatasetError, match="only 2 speakers .*5 folds"):
    scan("path,label\nok.wav,a\nok2.wav,a\n")
  with pytest.raises(errors.DatasetError, match="does not exist"):
    data.scan("manifest", tmp_path / "nothing.csv")
  with pytest.raises(errors.DatasetError, match="expected exactly one of"):
    data.scan("manifest", tmp_path)


def make_folder(root: pathlib.Path):
  for label, count in (("angry", 4), ("neutral", 3), ("whisper", 3)):
    for i in range(count):
      write_wav(root / label / f"{label}_{i}.wav", freq=150.0 + 20 * i + len(label))
  write_wav(root / "neutral" / "extra" / "deep.flac")
  write_wav(root / "loose.wav")
  (root / "angry" / "broken.wav").mkdir()
  (root / ".git").mkdir()
  (root / "empty").mkdir()
  return root


def test_folder_dataset(tmp_path):
  manifest = data.scan("folder", make_folder(tmp_path / "f"), num_folds=3)
  assert len(manifest) == 11 and manifest.label_set == ("angry", "neutral", "whisper")
  by_id = {u.utt_id: u for u in manifest}
  assert by_id["neutral/extra/deep"].label == "neutral"
  assert by_id["angry/angry_0"].emotion == "angry" and by_id["whisper/whisper_0"].emotion == ""
  assert manifest.sessions == (1, 2, 3)
  notes = "\n".join(manifest.notes)
  assert "loose.wav: not inside a label folder" in notes and "broken.wav: a directory" in notes
  assert "empty: label folder without audio" in notes and ".git" not in notes
  with pytest.raises(errors.DatasetError, match="no audio file"):
    data.scan("folder", tmp_path / "f" / "empty")


def test_pipeline_skips_bad_files_and_keeps_manifest_and_waveforms_aligned(tmp_path):
  root = make_folder(tmp_path / "f")
  (root / "angry" / "angry_1.wav").write_text("not audio")
  config = base_config().data
  config.dataset, config.root, config.cache_dir = "folder", str(root), str(tmp_path / "c")
  config.clip_seconds, config.num_folds = 0.2, 3
  with pytest.raises(errors.AudioError, match="angry_1.wav: cannot decode audio"):
    pipeline.load_dataset(config, task="label")
  config.bad_audio = "skip"
  manifest, waveforms = pipeline.load_dataset(config, task="label")
  assert len(manifest) == 10 == waveforms.shape[0]
  assert "angry/angry_1" not in manifest.field("utt_id")
  emotion, emotion_waves = pipeline.load_dataset(config, task="emotion")
  assert {u.label for u in emotion} == {"angry", "neutral"} and len(emotion_waves) == 7
  assert folds.labels(emotion, "emotion").tolist() == [
      ("neutral", "happy", "sad", "angry").index(u.label) for u in emotion]
  # The fold assignment written by this run and reused: the same utterances in the same groups,
  # also under bad_audio="error" (the file leaves the bad file out).
  path = folds.write_assignment(manifest, tmp_path / "run" / "folds.json")
  config.fold_assignment, config.bad_audio = str(path), "error"
  config.num_folds = 2  # ignored: the groups come from the file
  reused, _ = pipeline.load_dataset(config, task="label")
  assert reused == manifest


def test_summary_on_listing_and_folder(tmp_path):
  path = make_listing(tmp_path / "l")
  (tmp_path / "l" / "audio" / "spk1" / "clip 1 é.wav").write_bytes(b"")
  listing = summary.summarize(data.scan("manifest", path), "label", num_workers=1)
  assert listing["problem_counts"] == {"unreadable": 1}
  assert "empty (0 bytes)" in listing["problems"][0]["message"]
  assert listing["per_class"] == {"cat": 8, "dog": 8, "happy": 8}
  folder = summary.summarize(data.scan("folder", make_folder(tmp_path / "f"), num_folds=3),
                             "gender")
  kinds = folder["problem_counts"]
  assert kinds["unknown gender"] == 1 and kinds["not used"] == 3
  text = summary.format_summary(folder)
  assert "? " in text and "[unknown gender]" in text


def test_summary_command_lists_every_missing_file(tmp_path):
  path = make_listing(tmp_path)
  for i in (2, 5):
    next(tmp_path.glob(f"audio/spk{i}/clip {i} é.wav")).unlink()
  out = subprocess.run(
      [sys.executable, "-m", "wavejax.data", "summary", "--dataset=manifest", f"--root={path}",
       "--task=label", "--data.num_workers=1"],
      capture_output=True, text=True, timeout=120, check=False)
  assert out.returncode == 0, out.stderr
  assert "task label: 22 of 22 utterances" in out.stdout
  missing = [line for line in out.stdout.splitlines() if line.startswith("  [missing]")]
  assert len(missing) == 2 and "clip 2 é.wav: listed at line 4 but does not exist" in missing[0]
