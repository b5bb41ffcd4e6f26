"""Tests of wavejax.data.synthetic: the built-in IEMOCAP-shaped corpus and its cache."""

import collections
import os
import pathlib
import re
import time

import numpy as np
import pytest
import soundfile as sf

from wavejax import errors
from wavejax.data import cache, synthetic

N = 8  # Task utterances per speaker in the test corpus.
# A tolerant summary-line regex (docs/reference.md#iemocap-layout-and-label-rules), and a strict
# one (tab-separated, 4-decimal numbers).
TOLERANT = re.compile(
    r"^\[(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\]\s+(Ses0[1-5][MF]_\S+_[MF]\d{3})\s+([a-z]{3})\s+"
    r"\[([-\d.]+),\s*([-\d.]+),\s*([-\d.]+)\]\s*$")
STRICT = re.compile(r"^\[(\d+\.\d{4}) - (\d+\.\d{4})\]\t(\w+)\t(\w+)\t"
                    r"\[(\d+\.\d{4}), (\d+\.\d{4}), (\d+\.\d{4})\]$")
DIALOG = re.compile(r"^Ses0([1-5])[FM]_(impro|script)\d{2}[ab]?(_\d[b]?)?$")
TASK = {"neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad", "ang": "angry"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return synthetic.generate(tmp_path_factory.mktemp("corpus") / "IEMOCAP_full_release",
                            seed=0, utterances_per_speaker=N)


@pytest.fixture(scope="module")
def labels(root):
  """[(session, dialog, start, end, utt_id, code)] from every summary line."""
  out = []
  for s in synthetic.SESSIONS:
    for path in sorted((root / f"Session{s}" / "dialog" / "EmoEvaluation").glob("*.txt")):
      for line in path.read_text().splitlines():
        if line.startswith("["):
          m = TOLERANT.match(line)
          assert m, f"{path.name}: {line!r}"
          out.append((s, path.stem, float(m.group(1)), float(m.group(2)), m.group(3), m.group(4)))
  return out


def _speaker(utt_id):
  """`01M` for `Ses01F_impro01_M013`: the gender is the last token's first letter."""
  return utt_id[3:5] + utt_id.rsplit("_", 1)[1][0]


def test_layout(root):
  assert (root / "README.txt").is_file()
  assert sorted(p.name for p in root.iterdir()) == ["README.txt"] + [f"Session{s}" for s in
                                                                    range(1, 6)]
  names = set()
  for s in synthetic.SESSIONS:
    dialog = root / f"Session{s}" / "dialog"
    for sub in ("Attribute", "Categorical", "Self-evaluation"):
      assert (dialog / "EmoEvaluation" / sub).is_dir()
    evaluations = {p.stem for p in (dialog / "EmoEvaluation").glob("*.txt")}
    transcripts = {p.stem for p in (dialog / "transcriptions").glob("*.txt")}
    wav_dirs = {p.name for p in (root / f"Session{s}" / "sentences" / "wav").iterdir()}
    assert evaluations == transcripts == wav_dirs and len(evaluations) >= 2
    for name in evaluations:
      m = DIALOG.match(name)
      assert m and int(m.group(1)) == s, name
    names |= evaluations
  assert {"Ses03M_impro05a", "Ses03M_impro08a", "Ses05M_script01_1b"} <= names
  assert {n[5] for n in names} == {"F", "M"}


def test_label_file_format(root, labels):
  path = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
  text = path.read_text()
  assert text.startswith("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n")
  for block in text.strip().split("\n\n")[1:]:
    summary, *ratings = block.split("\n")
    assert STRICT.match(summary), summary
    assert any(re.match(r"^C-E\d:\t\w+;\t\(.*\)$", r) for r in ratings)
    assert any(re.match(r"^A-E\d:\tval \d; act \d; dom  \d;\t\(.*\)$", r) for r in ratings)
  for s, dialog, start, end, utt_id, _ in labels:
    assert utt_id.rsplit("_", 1)[0] == dialog and utt_id.startswith(f"Ses0{s}")
    assert 0 < start < end


def test_every_label_has_its_wav_and_vice_versa(root, labels):
  wavs = {p.stem: p for p in root.glob("Session?/sentences/wav/*/*.wav")}
  assert set(wavs) == {utt for *_, utt, _ in labels}
  for s, dialog, start, end, utt_id, _ in labels:
    assert wavs[utt_id] == root / f"Session{s}" / "sentences" / "wav" / dialog / f"{utt_id}.wav"
    assert sf.info(str(wavs[utt_id])).duration == pytest.approx(end - start, abs=2e-4)


def test_wav_format(root):
  paths = sorted(root.glob("Session?/sentences/wav/*/*.wav"))
  assert paths
  for path in paths:
    info = sf.info(str(path))
    assert (info.samplerate, info.channels) == (16000, 1)
    assert (info.format, info.subtype) == ("WAV", "PCM_16")
    assert synthetic.MIN_DURATION_S <= info.duration <= synthetic.MAX_DURATION_S
    x, _ = sf.read(str(path), dtype="int16")
    assert 0 < np.abs(x.astype(int)).max() < 32767  # Peak-normalised below full scale.


def test_task_counts_per_speaker(labels):
  task = collections.Counter(_speaker(utt) for *_, utt, code in labels if code in TASK)
  assert task == {f"0{s}{g}": N for s in range(1, 6) for g in "FM"}
  for spk in task:
    per_class = collections.Counter(TASK[code] for *_, utt, code in labels
                                    if code in TASK and _speaker(utt) == spk)
    assert set(per_class.values()) == {N // 4}, (spk, per_class)
  codes = collections.Counter(code for *_, code in labels)
  assert codes["hap"] > 0 and codes["exc"] > 0
  assert codes["fru"] + codes["xxx"] + codes["sur"] > 0
  assert set(codes) <= set(TASK) | set(synthetic.EXTRA_CODES)


def test_both_genders_speak_in_every_dialog(labels):
  genders = collections.defaultdict(set)
  for _, dialog, _, _, utt_id, _ in labels:
    genders[dialog].add(utt_id.rsplit("_", 1)[1][0])
  assert all(g == {"F", "M"} for g in genders.values())


def test_transcription_only_turns(root, labels):
  labelled = {utt for *_, utt, _ in labels}
  transcribed = []
  for path in root.glob("Session?/dialog/transcriptions/*.txt"):
    for line in path.read_text().splitlines():
      m = re.match(r"^(\S+) \[(\d{3}\.\d{4})-(\d{3}\.\d{4})\]: .+$", line)
      assert m, line
      transcribed.append(m.group(1))
  assert labelled <= set(transcribed)
  extra = [u for u in transcribed if u not in labelled]
  assert extra and all(re.search(r"_[FM]XX\d$", u) for u in extra)
  assert not any(root.glob("Session?/sentences/wav/*/*XX*.wav"))


def _all_bytes(root):
  return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic(root, tmp_path):
  reference = _all_bytes(root)
  assert _all_bytes(synthetic.generate(tmp_path / "same", seed=0, utterances_per_speaker=N)) == (
      reference)
  other = _all_bytes(synthetic.generate(tmp_path / "other", seed=1, utterances_per_speaker=N))
  shared = [k for k in other if k.suffix == ".wav" and k in reference]
  assert shared and not any(other[k] == reference[k] for k in shared)


def _rms_db(x):
  return 20 * np.log10(np.sqrt(np.mean(x ** 2)))


def _median_f0(x, fs=16000):
  """Median autocorrelation pitch over the loudest 40 % of 40 ms frames with a clear period."""
  frames = np.lib.stride_tricks.sliding_window_view(x, 640)[::160]
  energy = (frames ** 2).mean(axis=1)
  frames = frames[energy > np.percentile(energy, 60)]
  frames = frames - frames.mean(axis=1, keepdims=True)
  ac = np.fft.irfft(np.abs(np.fft.rfft(frames, 1280, axis=1)) ** 2, axis=1)[:, :640]
  lo, hi = fs // 450, fs // 70
  lag = lo + np.argmax(ac[:, lo:hi], axis=1)
  voiced = ac[np.arange(len(ac)), lag] > 0.5 * ac[:, 0]
  return float(np.median(fs / lag[voiced]))


def test_emotion_and_gender_cues_are_audible(root, labels):
  feats = collections.defaultdict(list)
  for s, dialog, _, _, utt_id, code in labels:
    if code in TASK:
      x, fs = sf.read(str(root / f"Session{s}" / "sentences" / "wav" / dialog / f"{utt_id}.wav"))
      feats[_speaker(utt_id), TASK[code]].append((_rms_db(x), _median_f0(x, fs)))
  mean = {k: np.mean(v, axis=0) for k, v in feats.items()}
  speakers = sorted({spk for spk, _ in mean})
  for spk in speakers:  # Higher pitch for every speaker.
    assert mean[spk, "angry"][1] > mean[spk, "sad"][1], spk
    assert mean[spk, "happy"][1] > mean[spk, "sad"][1], spk
  louder = [mean[spk, "angry"][0] - mean[spk, "sad"][0] for spk in speakers]
  assert np.mean(louder) > 2.0 and np.sum(np.array(louder) > 0) >= 8  # Louder, with overlap.
  f0 = {g: np.mean([mean[spk, e][1] for spk in speakers for e in TASK.values() if spk[2] == g])
        for g in "FM"}
  assert f0["F"] > 1.4 * f0["M"]


def test_loader_reads_the_corpus(root):
  iemocap = pytest.importorskip("wavejax.data.iemocap")
  manifest = iemocap.scan(root)
  assert len(manifest) == 10 * N
  for u in manifest:
    assert u.speaker == _speaker(u.utt_id) and u.gender == u.speaker[2]
  assert collections.Counter(manifest.field("speaker")) == {
      f"0{s}{g}": N for s in range(1, 6) for g in "FM"}


def test_generate_refuses_non_empty_root_and_bad_sizes(tmp_path):
  (tmp_path / "junk.txt").write_text("x")
  with pytest.raises(FileExistsError):
    synthetic.generate(tmp_path, utterances_per_speaker=1)
  with pytest.raises(errors.ConfigError):
    synthetic.generate(tmp_path / "new", utterances_per_speaker=0)
  with pytest.raises(errors.ConfigError):
    synthetic.ensure_corpus(tmp_path, seed=-1)


def test_cache_root_follows_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("WAVEJAX_CACHE", str(tmp_path / "a"))
  assert cache.default_cache_dir() == tmp_path / "a"
  monkeypatch.delenv("WAVEJAX_CACHE")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert cache.default_cache_dir() == tmp_path / "xdg" / "wavejax"
  monkeypatch.delenv("XDG_CACHE_HOME")
  assert cache.default_cache_dir() == pathlib.Path.home() / ".cache" / "wavejax"


def test_ensure_corpus_generates_once(tmp_path):
  name = synthetic.corpus_name(seed=3, utterances_per_speaker=1)
  assert f"v{synthetic.GENERATOR_VERSION}" in name and "seed3" in name and "n1" in name
  leftover = tmp_path / f".{name}.tmp-interrupted"
  (leftover / "Session1").mkdir(parents=True)  # A killed run's half-written folder.
  first = synthetic.ensure_corpus(tmp_path, seed=3, utterances_per_speaker=1)
  assert first == tmp_path / name and (first / "README.txt").is_file()
  stamp = {p: p.stat().st_mtime_ns for p in first.rglob("*")}
  started = time.monotonic()
  assert synthetic.ensure_corpus(tmp_path, seed=3, utterances_per_speaker=1) == first
  assert time.monotonic() - started < 0.5
  assert {p: p.stat().st_mtime_ns for p in first.rglob("*")} == stamp
  assert leftover.is_dir()  # Young leftovers may belong to a live process: left alone...
  old = time.time() - 7 * 3600
  os.utime(leftover, (old, old))
  synthetic.ensure_corpus(tmp_path, seed=4, utterances_per_speaker=1)
  assert leftover.is_dir()  # ...and only the same corpus' stale leftovers are removed.
  os.rename(first, tmp_path / "moved")  # Force a regeneration of the same corpus.
  synthetic.ensure_corpus(tmp_path, seed=3, utterances_per_speaker=1)
  assert not leftover.exists()
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
      ["moved", name, synthetic.corpus_name(seed=4, utterances_per_speaker=1)])


def test_ensure_corpus_loser_of_a_race_uses_the_winner(tmp_path, monkeypatch):
  name = synthetic.corpus_name(seed=5, utterances_per_speaker=1)
  generate = synthetic.generate

  def racing_generate(root, **kwargs):
    generate(tmp_path / name, **kwargs)  # Another process finishes first...
    (tmp_path / name / "winner").write_text("")
    return generate(root, **kwargs)

  monkeypatch.setattr(synthetic, "generate", racing_generate)
  assert synthetic.ensure_corpus(tmp_path, seed=5, utterances_per_speaker=1) == tmp_path / name
  assert (tmp_path / name / "winner").exists()  # ...and its copy is kept.
  assert [p.name for p in tmp_path.iterdir()] == [name]  # The loser's temporary copy is gone.


def test_ensure_corpus_cleans_up_when_interrupted(tmp_path, monkeypatch):

  def interrupted(root, **kwargs):
    (pathlib.Path(root) / "Session1").mkdir()
    raise KeyboardInterrupt

  monkeypatch.setattr(synthetic, "generate", interrupted)
  with pytest.raises(KeyboardInterrupt):
    synthetic.ensure_corpus(tmp_path, seed=6, utterances_per_speaker=1)
  assert not any(tmp_path.iterdir())
