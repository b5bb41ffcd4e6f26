"""RAVDESS, CREMA-D and EmoDB loaders on small trees written here with the real naming quirks."""

import collections
import json
import pathlib
import subprocess
import sys
import zlib

import numpy as np
import pytest
import soundfile

from wavejax import data, errors
from wavejax.config import base_config
from wavejax.data import audio, cremad, emodb, folds, pipeline, ravdess, summary


def write_wav(path: pathlib.Path, seconds=0.05, rate=16000, channels=1, freq=None):
  """A short tone; its pitch follows from the file name, so distinct files differ in content."""
  path.parent.mkdir(parents=True, exist_ok=True)
  freq = freq or 100 + zlib.crc32(path.name.encode()) % 999983 / 333.0
  t = np.arange(int(seconds * rate)) / rate
  wave = 0.1 * np.sin(2 * np.pi * freq * t)
  soundfile.write(path, np.stack([wave] * channels, 1) if channels > 1 else wave, rate,
                  subtype="PCM_16")


def data_config(dataset, root, tmp_path, **fields):
  config = base_config().data
  config.dataset, config.root, config.cache_dir = dataset, str(root), str(tmp_path / "cache")
  config.clip_seconds = 0.1
  config.num_workers = 2
  for key, value in fields.items():
    config[key] = value
  return config


# ---------------------------------------------------------------- RAVDESS

def ravdess_name(emotion, intensity, statement, repetition, actor, channel=1):
  fields = (3, channel, emotion, intensity, statement, repetition, actor)
  return "-".join(f"{field:02d}" for field in fields) + ".wav"


def ravdess_names(actors=range(1, 25)):
  """Every speech file name of the full corpus (60 per actor): neutral has no strong intensity."""
  for actor in actors:
    for emotion in range(1, 9):
      for intensity in (1,) if emotion == 1 else (1, 2):
        for statement in (1, 2):
          for repetition in (1, 2):
            yield actor, ravdess_name(emotion, intensity, statement, repetition, actor)


def make_ravdess(root: pathlib.Path, full=False):
  """`Audio_Speech_Actors_01-24/Actor_XX/...` at 48 kHz, with the archive's clutter."""
  speech = root / "Audio_Speech_Actors_01-24"
  names = list(ravdess_names())
  if not full:  # 4 files per actor: neutral, calm (strong), happy, fearful
    keep = {(1, 1), (2, 2), (3, 1), (6, 2)}
    names = [(a, n) for a, n in names
             if (int(n[6:8]), int(n[9:11])) in keep and n[12:17] == "01-01"]
  for actor, name in names:
    write_wav(speech / f"Actor_{actor:02d}" / name, seconds=0.01 if full else 0.05, rate=48000,
              channels=2 if actor == 5 else 1)
  if not full:
    write_wav(speech / "Actor_01" / ravdess_name(3, 1, 1, 1, 1, channel=2))  # song: ignored
    write_wav(speech / "Actor_02" / ravdess_name(1, 2, 1, 1, 2))  # neutral has no strong: bad
    (speech / "__MACOSX" / "Actor_01").mkdir(parents=True)
    (speech / "__MACOSX" / "Actor_01" / f"._{ravdess_name(1, 1, 1, 1, 1)}").write_bytes(b"\0\5")
    (speech / "Actor_03" / ".DS_Store").write_bytes(b"\0")
    (speech / "Actor_03" / "notes.wav.txt").write_text("x")
  return root


def test_ravdess_full_naming_gives_the_reference_counts(tmp_path):
  manifest = data.scan("ravdess", make_ravdess(tmp_path, full=True))
  assert len(manifest) == 1440 and not manifest.notes
  labels = collections.Counter(manifest.field("label"))
  assert labels["neutral"] == 96
  assert all(labels[name] == 192 for name in ravdess.LABELS.values() if name != "neutral")
  assert len(folds.select(manifest, "emotion")) == 672
  calm = data.scan("ravdess", tmp_path, calm_as_neutral=True)
  assert len(folds.select(calm, "emotion")) == 864
  per_session = collections.Counter(manifest.field("session"))
  assert [per_session[s] for s in range(1, 6)] == [360, 360, 240, 240, 240]


def test_ravdess_fields_gender_and_pair_folds(tmp_path):
  manifest = data.scan("ravdess", make_ravdess(tmp_path))
  assert len(manifest) == 24 * 4
  by_id = {u.utt_id: u for u in manifest}
  utt = by_id["03-01-02-02-01-01-07"]
  assert (utt.speaker, utt.gender, utt.label, utt.emotion) == ("07", "M", "calm", "")
  assert utt.extra == {"intensity": "strong", "statement": "01", "repetition": "01"}
  assert by_id["03-01-01-01-01-01-08"].gender == "F"
  assert by_id["03-01-06-02-01-01-08"].label == "fear"
  assert manifest.label_set == tuple(sorted(ravdess.LABELS.values()))
  assert len(manifest.label_set) == 8
  # Actor pairs (1, 2), (3, 4), ... dealt round robin: 3/3/2/2/2 pairs, each fold gender-balanced.
  speakers = collections.defaultdict(set)
  for u in manifest:
    speakers[u.session].add(u.speaker)
  assert speakers[1] == {"01", "02", "11", "12", "21", "22"}
  assert [len(speakers[s]) for s in range(1, 6)] == [6, 6, 4, 4, 4]
  for s in range(1, 6):
    genders = collections.Counter(u.gender for u in manifest if u.session == s)
    assert genders["F"] == genders["M"]
  assert any("song" in n for n in manifest.notes)
  assert any("invalid RAVDESS field(s) intensity 02" in n for n in manifest.notes)
  assert not any("__MACOSX" in n or "DS_Store" in n for n in manifest.notes)


def test_ravdess_options_and_errors(tmp_path):
  root = make_ravdess(tmp_path)
  calm = data.scan("ravdess", root / "Audio_Speech_Actors_01-24", calm_as_neutral=True)
  assert {u.emotion for u in calm if u.label == "calm"} == {"neutral"}
  assert {u.label for u in calm if u.emotion == "neutral"} == {"neutral", "calm"}
  three = data.scan("ravdess", root, num_folds=3)
  assert three.sessions == (1, 2, 3)
  with pytest.raises(errors.ConfigError, match="at most"):
    data.scan("ravdess", root, num_folds=13)
  (tmp_path / "empty").mkdir()
  with pytest.raises(errors.DatasetError, match="no RAVDESS speech file"):
    data.scan("ravdess", tmp_path / "empty")
  with pytest.raises(errors.DatasetError, match="not a directory"):
    data.scan("ravdess", tmp_path / "nope")


def test_ravdess_through_the_pipeline(tmp_path):
  root = make_ravdess(tmp_path)
  config = data_config("ravdess", root, tmp_path)
  manifest, waveforms = pipeline.load_dataset(config, task="emotion")
  assert len(manifest) == 24 * 2 and waveforms.shape == (48, 1600)  # neutral + happy
  assert {u.label for u in manifest} == {"neutral", "happy"}
  # 48 kHz stereo -> 16 kHz mono, 50 ms of tone then zeros.
  assert np.abs(waveforms[0, :700]).max() > 0.05 and np.all(waveforms[:, 820:] == 0)
  full, _ = pipeline.load_dataset(config, task="label")
  assert len(full) == 96 and folds.task_classes("label", full) == full.label_set
  assert folds.labels(full, "label").max() == 7 or len(set(full.field("label"))) < 8


# ---------------------------------------------------------------- CREMA-D

DEMOGRAPHICS = {1001: "Male", 1002: "Female", 1003: "Female", 1005: "Male", 1011: "Male",
                1015: "Male", 1076: "Female", 1089: "Female", 1090: "Male", 1091: "Female"}


def make_cremad(root: pathlib.Path, with_csv=True):
  """`AudioWAV/` clips, `AudioMP3/`, `VideoDemographics.csv` and the known silent clip."""
  wav = root / "AudioWAV"
  for actor in DEMOGRAPHICS:
    for sentence, emotion, level in (("DFA", "ANG", "XX"), ("TIE", "NEU", "XX"),
                                     ("IEO", "HAP", "HI"), ("IEO", "HAP", "LO"),
                                     ("ITH", "DIS", "XX"), ("MTI", "SAD", "XX")):
      if (actor, sentence, emotion) == (1076, "MTI", "SAD"):
        soundfile.write(wav / "1076_MTI_SAD_XX.wav", np.zeros(0), 16000)  # no signal
        continue
      write_wav(wav / f"{actor}_{sentence}_{emotion}_{level}.wav")
  write_wav(wav / "1001_DFA_ANG_XX (1).wav")  # a stray copy: not a CREMA-D name
  (root / "AudioMP3").mkdir()
  (root / "AudioMP3" / "1001_DFA_ANG_XX.mp3").write_bytes(b"ID3")
  if with_csv:
    rows = ['"ActorID","Age","Sex","Race","Ethnicity"']
    rows += [f'{actor},30,"{sex}","Caucasian","Not Hispanic"'
             for actor, sex in DEMOGRAPHICS.items()]
    (root / "VideoDemographics.csv").write_text("\n".join(rows) + "\n")
  return root


def test_cremad_gender_join_labels_and_silent_clip(tmp_path):
  manifest = data.scan("cremad", make_cremad(tmp_path / "CREMA-D"))
  assert len(manifest) == 10 * 6 - 1
  by_id = {u.utt_id: u for u in manifest}
  assert "1076_MTI_SAD_XX" not in by_id
  assert any("1076_MTI_SAD_XX" in n and "no signal" in n for n in manifest.notes)
  assert any("(1).wav" in n for n in manifest.notes)
  assert by_id["1002_IEO_HAP_HI"].gender == "F" and by_id["1001_DFA_ANG_XX"].gender == "M"
  assert by_id["1002_IEO_HAP_HI"].extra == {"sentence": "IEO", "level": "high"}
  assert by_id["1091_ITH_DIS_XX"].label == "disgust" and by_id["1091_ITH_DIS_XX"].emotion == ""
  assert manifest.label_set == ("angry", "disgust", "fear", "happy", "neutral", "sad")
  # 5 F and 5 M actors dealt round robin: one of each per fold.
  for session in range(1, 6):
    genders = {u.speaker: u.gender for u in manifest if u.session == session}
    assert sorted(genders.values()) == ["F", "M"]
  assert len(folds.select(manifest, "emotion")) == 10 * 5 - 1  # all but DIS


def test_cremad_audio_folder_as_root_and_csv_problems(tmp_path):
  root = make_cremad(tmp_path / "CREMA-D")
  assert len(data.scan("cremad", root / "AudioWAV")) == 59
  csv_path = root / "VideoDemographics.csv"
  csv_path.write_text('"ActorID","Age","Sex"\n1001,30,"Male"\n')
  manifest = data.scan("cremad", root)
  assert {u.gender for u in manifest if u.speaker == "1002"} == {""}
  assert any("actor 1002: not in VideoDemographics.csv" in n for n in manifest.notes)
  csv_path.write_text('"ActorID","Age","Sex"\n1001,30,"Robot"\n')
  with pytest.raises(errors.LabelFileError, match="VideoDemographics.csv:2"):
    data.scan("cremad", root)
  csv_path.write_text('"Name","Age"\n')
  with pytest.raises(errors.LabelFileError, match="no ActorID and Sex columns"):
    data.scan("cremad", root)


def test_cremad_without_csv_uses_the_reference_table(tmp_path):
  manifest = data.scan("cremad", make_cremad(tmp_path / "c", with_csv=False))
  genders = {u.speaker: u.gender for u in manifest}
  assert all(genders[str(a)] == s[0] for a, s in DEMOGRAPHICS.items() if str(a) in genders)
  assert any("VideoDemographics.csv: not found" in n for n in manifest.notes)
  assert len(cremad.FEMALE_ACTORS) == 43


# ---------------------------------------------------------------- EmoDB

EMODB_FILES = [f"{spk}{text}{emo}{ver}.wav" for spk in emodb.SPEAKERS
               for text, emo, ver in (("a01", "W", "a"), ("a02", "N", "b"), ("b01", "F", "a"),
                                      ("b03", "T", "c"), ("a05", "L", "a"), ("b10", "E", "b"))]


def make_emodb(root: pathlib.Path):
  for name in EMODB_FILES:
    write_wav(root / "wav" / name)
  for folder in ("lablaut", "labsilb", "silb"):
    (root / folder).mkdir()
    (root / folder / "03a01Wa.lab").write_text("label")
  write_wav(root / "backup" / "03a01Wa.wav")  # the same recording again (same content)
  write_wav(root / "wav" / "17a01Wa.wav")      # not an EmoDB speaker
  write_wav(root / "wav" / "03a01Xa.wav")      # no such emotion letter
  (root / "wav" / "._03a01Wa.wav").write_bytes(b"\0\5")  # AppleDouble: skipped silently
  return root


def test_emodb_regex_speakers_and_fixed_pairs(tmp_path):
  manifest = data.scan("emodb", make_emodb(tmp_path / "emodb"))
  assert len(manifest) == len(EMODB_FILES) == 60
  by_id = {u.utt_id: u for u in manifest}
  assert (by_id["03a01Wa"].speaker, by_id["03a01Wa"].gender, by_id["03a01Wa"].label,
          by_id["03a01Wa"].emotion) == ("03", "M", "angry", "angry")
  assert by_id["08a05La"].label == "boredom" and by_id["08a05La"].emotion == ""
  assert by_id["16b10Eb"].label == "disgust" and by_id["16b01Fa"].emotion == "happy"
  assert by_id["16b01Fa"].extra == {"text": "b01", "version": "a"}
  assert by_id["03a01Wa"].path.endswith("wav/03a01Wa.wav")
  pairs = {s: sorted({u.speaker for u in manifest if u.session == s}) for s in range(1, 6)}
  assert pairs == {1: ["03", "08"], 2: ["09", "10"], 3: ["11", "13"], 4: ["12", "14"],
                   5: ["15", "16"]}
  notes = "\n".join(manifest.notes)
  assert "second copy" in notes and "speaker 17" in notes and "03a01Xa.wav" in notes
  assert "._03a01Wa" not in notes
  assert len(manifest.label_set) == 7
  assert len(folds.select(manifest, "emotion")) == 40
  two = data.scan("emodb", tmp_path / "emodb", num_folds=2)
  assert two.sessions == (1, 2)
  for s in (1, 2):  # 5 speakers each; 2 or 3 of each gender
    genders = {u.speaker: u.gender for u in two if u.session == s}
    assert len(genders) == 5 and set(collections.Counter(genders.values()).values()) == {2, 3}


def test_corpus_assembled_from_symlinked_folders(tmp_path):
  """Actor folders (RAVDESS) and the wav folder (EmoDB) that are symlinks are followed; a link
  loop or a second link to the same folder reads nothing twice."""
  real = make_ravdess(tmp_path / "real")
  linked = tmp_path / "linked" / "Audio_Speech_Actors_01-24"
  linked.mkdir(parents=True)
  for actor in sorted((real / "Audio_Speech_Actors_01-24").glob("Actor_*")):
    (linked / actor.name).symlink_to(actor, target_is_directory=True)
  (linked / "Actor_01" / "loop").symlink_to(linked, target_is_directory=True)
  assert ([u.utt_id for u in data.scan("ravdess", tmp_path / "linked")]
          == [u.utt_id for u in data.scan("ravdess", real)])
  emodb_real = make_emodb(tmp_path / "emodb")
  (tmp_path / "emodb_linked").mkdir()
  (tmp_path / "emodb_linked" / "wav").symlink_to(emodb_real / "wav", target_is_directory=True)
  (tmp_path / "emodb_linked" / "again").symlink_to(emodb_real / "wav", target_is_directory=True)
  assert len(data.scan("emodb", tmp_path / "emodb_linked")) == len(EMODB_FILES)


def test_git_lfs_pointer_instead_of_audio_says_so(tmp_path):
  path = tmp_path / "1001_DFA_ANG_XX.wav"
  path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 41004\n")
  with pytest.raises(errors.AudioError,
                     match="1001_DFA_ANG_XX.wav: a Git LFS pointer.*git lfs pull"):
    audio.read(path, 16000)


# ---------------------------------------------------------------- summaries

@pytest.mark.parametrize("dataset, make", [("ravdess", make_ravdess), ("cremad", make_cremad),
                                           ("emodb", make_emodb)])
def test_summary_on_each_fixture(tmp_path, dataset, make):
  root = make(tmp_path / dataset)
  manifest = data.scan(dataset, root)
  result = summary.summarize(manifest, "emotion", clip_seconds=6.0, num_workers=2)
  json.dumps(result)
  assert result["utterances"] == len(manifest)
  assert sum(result["per_class"].values()) == result["in_task"]
  assert sum(f["utterances"] for f in result["folds"]) == result["in_task"]
  assert result["audio"]["readable_files"] == len(manifest)
  kinds = result["problem_counts"]
  assert kinds["not used"] == len(manifest.notes) and kinds["outside task"] >= 1
  text = summary.format_summary(result)
  assert "per class" in text and "fold 1" in text and "problems:" in text
  if dataset == "ravdess":
    assert result["audio"]["sample_rates"] == {"48000": len(manifest)}
    assert result["audio"]["channels"] == {"1": 92, "2": 4}
  if dataset == "emodb":  # backup/03a01Wa.wav is ignored as a second copy of wav/03a01Wa.wav
    assert "second copy" in text
  assert "duplicate" not in kinds


def test_summary_command_on_a_fixture(tmp_path):
  root = make_cremad(tmp_path / "CREMA-D")
  (root / "AudioWAV" / "1003_TIE_NEU_XX.wav").write_text("not audio")
  out = subprocess.run(
      [sys.executable, "-m", "wavejax.data", "summary", "--dataset=cremad", f"--root={root}",
       "--task=label", f"--json={tmp_path / 's.json'}", "--data.num_folds=2"],
      capture_output=True, text=True, timeout=120, check=False)
  assert out.returncode == 0, out.stderr
  assert "task label: 59 of 59 utterances" in out.stdout
  assert "[unreadable]" in out.stdout and "1003_TIE_NEU_XX.wav: cannot decode" in out.stdout
  assert "[silent]" not in out.stdout and "1076_MTI_SAD_XX" in out.stdout
  result = json.loads((tmp_path / "s.json").read_text())
  assert len(result["folds"]) == 2 and result["per_gender"] == {"F": 29, "M": 30}


def test_summary_command_on_the_builtin_corpus(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "wavejax.data", "summary", "--dataset=iemocap", "--task=gender",
       f"--data.cache_dir={tmp_path}", "--data.builtin.utterances_per_speaker=6"],
      capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr
  assert "task gender: 60 of 60 utterances, classes F, M" in out.stdout
  assert "fold 5 session 5: 12 utt, 2 speakers (05F,05M)" in out.stdout
  assert "sample rates: 16000 Hz: 60" in out.stdout and "problems: 0" in out.stdout


def test_summary_command_errors_are_one_line(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "wavejax.data", "summary", "--dataset=emodb",
       f"--root={tmp_path / 'missing'}"], capture_output=True, text=True, timeout=120, check=False)
  assert out.returncode == 1 and "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith("wavejax: error: EmoDB root")
