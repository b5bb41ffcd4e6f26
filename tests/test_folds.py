"""Leave-one-session-out folds: membership, disjointness, stratified validation."""

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
