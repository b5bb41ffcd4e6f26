"""IEMOCAP scan on a small tree written in the test, with the real corpus' naming quirks."""

import pathlib
import shutil

import numpy as np
import pytest
import soundfile

from wavejax import data, errors
from wavejax.data import audio, iemocap

HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
RATINGS = ("C-E2:\tNeutral;\t()\nC-E3:\tAnger;\t()\n"
           "A-E3:\tval 3; act 2; dom  2;\t()\nA-F1:\tval 2; act 3; dom  3;\t(mildly aggravated)\n")

# (session, dialog, utterance suffix, code). The mocap letter after SesNN is NOT the speaker.
TURNS = [
    (1, "Ses01F_impro01", "F000", "neu"),
    (1, "Ses01F_impro01", "M000", "ang"),   # male speaker in an F-mocap dialog
    (1, "Ses01F_impro01", "M001", "fru"),   # out of task: dropped
    (1, "Ses01M_script02_1", "F001", "exc"),  # excited -> happy (merged by default)
    (1, "Ses01M_script02_1", "M002", "xxx"),  # no agreement: dropped
    (2, "Ses02F_impro03", "M000", "sad"),
    (2, "Ses02F_impro03", "F000", "hap"),
    (3, "Ses03M_impro05a", "F000", "sad"),  # irregular dialog names
    (3, "Ses03M_impro08b", "M000", "neu"),
    (5, "Ses05M_script01_1b", "F003", "ang"),
    (5, "Ses05M_script01_1b", "M010", "exc"),
    (4, "Ses04F_script03_2", "M005", "hap"),
]


def write_wav(path: pathlib.Path, seconds=0.5, rate=16000):
  path.parent.mkdir(parents=True, exist_ok=True)
  t = np.arange(int(seconds * rate)) / rate
  soundfile.write(path, 0.1 * np.sin(2 * np.pi * 220 * t), rate, subtype="PCM_16")


def summary_line(utt, code, start=1.5, end=3.25, sep="\t"):
  return f"[{start:.4f} - {end:.4f}]{sep}{utt}{sep}{code}{sep}[2.5000, 3.0000, 2.0000]\n"


def make_tree(root: pathlib.Path, turns=TURNS, line_ending="\n"):
  by_file = {}
  for session, dialog, suffix, code in turns:
    utt = f"{dialog}_{suffix}"
    by_file.setdefault((session, dialog), []).append(summary_line(utt, code) + RATINGS)
    write_wav(root / f"Session{session}/sentences/wav/{dialog}/{utt}.wav")
  for (session, dialog), blocks in by_file.items():
    folder = root / f"Session{session}/dialog/EmoEvaluation"
    for sub in ("Categorical", "Attribute", "Self-evaluation"):
      (folder / sub).mkdir(parents=True, exist_ok=True)
    text = HEADER + "\n".join(blocks)
    (folder / f"{dialog}.txt").write_bytes(text.replace("\n", line_ending).encode())
  return root


@pytest.fixture
def corpus(tmp_path):
  return make_tree(tmp_path / "IEMOCAP_full_release")


def test_scan_labels_sessions_and_gender(corpus):
  manifest = data.scan("iemocap", corpus)
  by_id = {u.utt_id: u for u in manifest}
  assert sorted(by_id) == sorted(
      f"{d}_{s}" for _, d, s, c in TURNS if c in ("neu", "ang", "exc", "sad", "hap"))
  assert by_id["Ses01F_impro01_M000"].gender == "M"
  assert by_id["Ses01F_impro01_M000"].speaker == "01M"
  assert by_id["Ses01F_impro01_M000"].emotion == "angry"
  assert by_id["Ses01M_script02_1_F001"].gender == "F"
  assert by_id["Ses01M_script02_1_F001"].emotion == "happy"
  assert by_id["Ses03M_impro05a_F000"].gender == "F"
  assert by_id["Ses03M_impro05a_F000"].session == 3
  assert by_id["Ses05M_script01_1b_F003"].speaker == "05F"
  assert by_id["Ses05M_script01_1b_M010"].emotion == "happy"
  assert by_id["Ses02F_impro03_M000"].path.endswith(
      "Session2/sentences/wav/Ses02F_impro03/Ses02F_impro03_M000.wav")
  assert manifest.sessions == (1, 2, 3, 4, 5)
  assert all(abs(u.duration_s - 0.5) < 1e-6 for u in manifest)
  assert [u.session for u in manifest] == sorted(u.session for u in manifest)


def test_excited_can_be_dropped(corpus):
  kept = data.scan("iemocap", corpus, merge_excited=False)
  assert {u.utt_id for u in kept}.isdisjoint(
      {"Ses01M_script02_1_F001", "Ses05M_script01_1b_M010"})
  assert len(kept) == len(data.scan("iemocap", corpus)) - 2


def test_parent_folder_and_windows_line_endings(tmp_path):
  make_tree(tmp_path / "IEMOCAP_full_release", line_ending="\r\n")
  manifest = data.scan("iemocap", tmp_path)
  assert len(manifest) == 10


def test_ignores_appledouble_and_subfolders(corpus):
  folder = corpus / "Session1/dialog/EmoEvaluation"
  (folder / "._Ses01F_impro01.txt").write_bytes(b"\x00\x05\x16\x07binary resource fork")
  (folder / "Categorical" / "Ses01F_impro01_e2_cat.txt").write_text(
      summary_line("Ses01F_impro01_F099", "ang"))
  assert len(data.scan("iemocap", corpus)) == 10


def test_spaces_instead_of_tabs(tmp_path):
  root = make_tree(tmp_path / "c", turns=TURNS[:2])
  path = root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
  path.write_text(HEADER + summary_line("Ses01F_impro01_F000", "neu", sep="  ")
                  + summary_line("Ses01F_impro01_M000", "ang", sep=" "))
  assert len(data.scan("iemocap", root)) == 2


def test_missing_wav_is_a_clear_error_or_skipped(corpus):
  wav = corpus / "Session2/sentences/wav/Ses02F_impro03/Ses02F_impro03_M000.wav"
  wav.unlink()
  with pytest.raises(errors.MissingAudioError, match="Ses02F_impro03_M000.wav"):
    data.scan("iemocap", corpus)
  assert len(data.scan("iemocap", corpus, missing_audio="skip")) == 9


def test_not_an_iemocap_root(tmp_path):
  (tmp_path / "wavs").mkdir()
  with pytest.raises(errors.DatasetError, match="not an IEMOCAP root"):
    data.scan("iemocap", tmp_path)
  with pytest.raises(errors.DatasetError, match="not a directory"):
    data.scan("iemocap", tmp_path / "nope")


def test_garbage_label_file(corpus):
  path = corpus / "Session4/dialog/EmoEvaluation/Ses04F_script03_2.txt"
  path.write_bytes(b"\xff\xfe this is not a label file \x00\x01")
  with pytest.raises(errors.LabelFileError, match="Ses04F_script03_2.txt"):
    data.scan("iemocap", corpus)


def test_conflicting_duplicate_label(corpus):
  folder = corpus / "Session1/dialog/EmoEvaluation"
  (folder / "Ses01F_impro01_copy.txt").write_text(
      HEADER + summary_line("Ses01F_impro01_F000", "sad"))
  with pytest.raises(errors.LabelFileError, match="Ses01F_impro01_F000"):
    data.scan("iemocap", corpus)


def test_unknown_dataset():
  with pytest.raises(errors.ConfigError, match="not a known dataset"):
    data.scan("timit", "/tmp")


def test_summary_line_regex_matches_reference_example():
  line = "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]"
  match = iemocap.SUMMARY_LINE.match(line)
  assert match and match.group(3) == "Ses01F_impro01_F000" and match.group(6) == "neu"
  assert iemocap.SUMMARY_LINE.match("C-E2:\tNeutral;\t()") is None


def test_session_comes_from_the_utterance_id_not_the_folder(corpus):
  """A stray copy of a Session5 label file in Session4 neither moves its turns to Session 4 nor
  duplicates them."""
  folder = corpus / "Session5/dialog/EmoEvaluation"
  stray = corpus / "Session4/dialog/EmoEvaluation/Ses05M_script01_1b.txt"
  stray.write_bytes((folder / "Ses05M_script01_1b.txt").read_bytes())
  by_id = {u.utt_id: u for u in iemocap.scan(corpus)}
  assert len(by_id) == 10
  moved = by_id["Ses05M_script01_1b_F003"]
  assert (moved.session, moved.speaker) == (5, "05F")
  assert "Session5/sentences" in moved.path


def test_unreadable_wav_is_left_to_decoding(corpus):
  """Scanning does not open the audio for more than its header: a broken file gets duration 0
  and is reported (or skipped) by decoding, with the file named."""
  broken = corpus / "Session2/sentences/wav/Ses02F_impro03/Ses02F_impro03_M000.wav"
  broken.write_bytes(b"")
  manifest = iemocap.scan(corpus)
  by_id = {u.utt_id: u for u in manifest}
  assert by_id["Ses02F_impro03_M000"].duration_s == 0.0
  assert by_id["Ses02F_impro03_F000"].duration_s == pytest.approx(0.5)
  with pytest.raises(errors.AudioError, match="Ses02F_impro03_M000.wav: the file is empty"):
    audio.read(by_id["Ses02F_impro03_M000"].path, 16000)


def test_missing_session_is_reported(corpus, caplog):
  shutil.rmtree(corpus / "Session4")
  with caplog.at_level("WARNING"):
    manifest = iemocap.scan(corpus)
  assert manifest.sessions == (1, 2, 3, 5)
  assert any("Session4" in r.getMessage() and "k-th of [1, 2, 3, 5]" in r.getMessage()
             for r in caplog.records)


def test_label_file_with_byte_order_mark(tmp_path):
  root = make_tree(tmp_path / "IEMOCAP_full_release", turns=[(1, "Ses01F_impro01", "F000", "neu")])
  path = root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
  path.write_bytes("\ufeff".encode() + summary_line("Ses01F_impro01_F000", "neu").encode())
  assert [u.utt_id for u in iemocap.scan(root)] == ["Ses01F_impro01_F000"]
