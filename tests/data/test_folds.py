"""Leave-one-session-out folds: membership, disjointness, stratified validation."""

import dataclasses
import json

import numpy as np
import pytest

from wavejax import errors
from wavejax.data import folds
from wavejax.data.manifest import EMOTIONS, Manifest, Utterance


def make_manifest(per_session=(40, 50, 45, 38, 60), seed=0):
  rng = np.random.default_rng(seed)
  utterances = []
  for session, count in enumerate(per_session, start=1):
    for i in range(count):
      gender = "FM"[i % 2]
      utterances.append(Utterance(
          path=f"/x/{session}/{i}.wav", utt_id=f"Ses0{session}F_impro01_{gender}{i:03d}",
          session=session, speaker=f"{session:02d}{gender}", gender=gender,
          emotion=EMOTIONS[rng.integers(4)], duration_s=2.0))
  return Manifest(tuple(utterances), dataset="test", root="/x")


@pytest.mark.parametrize("val_from", ["test", "train"])
def test_folds_partition_every_utterance(val_from):
  manifest = make_manifest()
  targets = folds.labels(manifest, "emotion")
  sessions = np.array(manifest.field("session"))
  tested = []
  for k in range(1, 6):
    fold = folds.leave_one_session_out(manifest, k, targets, val_from=val_from, seed=3)
    parts = [fold.train, fold.val, fold.test]
    union = np.concatenate(parts)
    assert len(union) == len(set(union.tolist())) == len(manifest)
    assert len(fold.val) == 32
    assert fold.test_session == k
    assert set(sessions[fold.test]) == {k}
    assert k not in set(sessions[fold.train])
    assert set(sessions[fold.val]) == ({k} if val_from == "test" else set(range(1, 6)) - {k})
    tested.append(fold.test)
  # Over the 5 folds every utterance is tested at most once.
  all_tested = np.concatenate(tested)
  assert len(all_tested) == len(set(all_tested.tolist()))


def test_validation_is_stratified_and_seeded():
  manifest = make_manifest()
  targets = folds.labels(manifest, "emotion")
  fold = folds.leave_one_session_out(manifest, 2, targets, seed=7)
  session_idx = np.flatnonzero(np.array(manifest.field("session")) == 2)
  expected = np.bincount(targets[session_idx], minlength=4) * 32 / len(session_idx)
  counts = np.bincount(targets[fold.val], minlength=4)
  assert np.all(np.abs(counts - expected) < 1.0 + 1e-9)
  again = folds.leave_one_session_out(manifest, 2, targets, seed=7)
  np.testing.assert_array_equal(fold.val, again.val)
  other = folds.leave_one_session_out(manifest, 2, targets, seed=8)
  assert not np.array_equal(fold.val, other.val)


def test_gender_labels_and_errors():
  manifest = make_manifest()
  genders = folds.labels(manifest, "gender")
  assert genders.tolist() == [0 if u.gender == "F" else 1 for u in manifest]
  with pytest.raises(errors.ConfigError, match="config.fold=6"):
    folds.leave_one_session_out(manifest, 6, genders)
  with pytest.raises(errors.ConfigError, match="config.task"):
    folds.labels(manifest, "speaker")


def labelled_manifest():
  """A manifest with full corpus labels, some outside the 4-class map."""
  utterances = []
  for i, label in enumerate(["neutral", "calm", "happy", "sad", "angry", "fear"] * 4):
    gender = "FM"[i % 2]
    utterances.append(Utterance(
        path=f"/x/{i}.wav", utt_id=f"u{i:02d}", session=i % 3 + 1, speaker=f"{i % 6}",
        gender=gender, emotion=label if label in EMOTIONS else "", duration_s=1.0, label=label))
  return Manifest(tuple(utterances), dataset="t", root="/x",
                  label_set=("angry", "calm", "disgust", "fear", "happy", "neutral", "sad"))


def test_positional_utterance_keeps_working_and_label_defaults_to_emotion():
  utt = Utterance("/a.wav", "a", 1, "01F", "F", "sad", 1.5)
  assert utt.label == "sad" and utt.extra == {}
  assert hash(utt) == hash(Utterance("/a.wav", "a", 1, "01F", "F", "sad", 1.5))
  manifest = Manifest((utt,), "t", "/")
  assert Manifest.from_dict(manifest.to_dict()) == manifest


def test_label_task_takes_classes_from_the_manifest():
  manifest = labelled_manifest()
  assert folds.task_classes("label", manifest) == manifest.label_set
  assert folds.task_classes("emotion", manifest) == EMOTIONS
  targets = folds.labels(manifest, "label")
  assert [manifest.label_set[t] for t in targets] == manifest.field("label")
  with pytest.raises(errors.ConfigError, match="pass the manifest"):
    folds.task_classes("label")
  without_set = Manifest(manifest.utterances, "t", "/x")
  assert folds.task_classes("label", without_set) == (
      "angry", "calm", "fear", "happy", "neutral", "sad")


def test_select_keeps_the_task_utterances():
  manifest = labelled_manifest()
  with pytest.raises(errors.DatasetError, match="folds.select"):
    folds.labels(manifest, "emotion")
  emotion = folds.select(manifest, "emotion")
  assert len(emotion) == 16 and {u.label for u in emotion} == set(EMOTIONS)
  assert emotion.label_set == manifest.label_set
  assert folds.labels(emotion, "emotion").tolist() == [
      EMOTIONS.index(u.emotion) for u in emotion]
  assert folds.select(manifest, "label") is manifest
  assert folds.select(manifest, "gender") is manifest
  only_other = manifest.replace(u for u in manifest if u.label in ("calm", "fear"))
  with pytest.raises(errors.DatasetError, match="task=label"):
    folds.select(only_other, "emotion")


def test_unknown_gender_is_a_clear_error():
  manifest = labelled_manifest()
  utts = list(manifest)
  utts[3] = Utterance(utts[3].path, utts[3].utt_id, 1, "", "", "sad", 1.0)
  with pytest.raises(errors.DatasetError, match="gender of 1 utterance.*is unknown.*/x/3.wav"):
    folds.labels(manifest.replace(utts), "gender")


def test_fold_assignment_round_trip(tmp_path):
  manifest = make_manifest()
  path = folds.write_assignment(manifest, tmp_path / "run" / "folds.json", classes=EMOTIONS)
  data = json.loads(path.read_text())
  assert data["num_folds"] == 5 and data["classes"] == list(EMOTIONS)
  assert [f["test_session"] for f in data["folds"]] == [1, 2, 3, 4, 5]
  assert data["folds"][0]["speakers"] == ["01F", "01M"]
  assignment = folds.read_assignment(path)
  assert assignment == {u.utt_id: u.session for u in manifest}
  # Reuse: sessions come from the file, whatever the manifest says.
  shuffled = manifest.replace(dataclasses.replace(u, session=9) for u in manifest)
  assert folds.apply_assignment(shuffled, path) == manifest
  # Utterances the file does not list are left out; data it does not describe at all is an error.
  extra = manifest.replace([*manifest, Utterance("/n.wav", "new", 1, "x", "F", "sad", 1.0)])
  assert folds.apply_assignment(extra, path) == manifest
  other = manifest.replace([Utterance("/n.wav", "new", 1, "x", "F", "sad", 1.0)])
  with pytest.raises(errors.DatasetError, match="none of the 1 utterances"):
    folds.apply_assignment(other, path)
  (tmp_path / "bad.json").write_text("{not json")
  with pytest.raises(errors.DatasetError, match="bad.json: not a readable fold assignment"):
    folds.read_assignment(tmp_path / "bad.json")
