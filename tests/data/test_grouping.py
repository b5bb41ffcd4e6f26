"""Speaker-grouped, gender-balanced folds for corpora without sessions."""

import collections

import pytest

from wavejax import errors
from wavejax.data import grouping
from wavejax.data.manifest import Utterance


def group_members(groups):
  members = collections.defaultdict(list)
  for unit, group in groups.items():
    members[group].append(unit)
  return members


def test_emodb_speakers_give_the_reference_pairs():
  genders = {"03": "M", "08": "F", "09": "F", "10": "M", "11": "M", "12": "M", "13": "F",
             "14": "F", "15": "M", "16": "F"}
  groups = grouping.speaker_folds(list(genders), list(genders.values()), 5)
  pairs = sorted(tuple(sorted(m)) for m in group_members(groups).values())
  assert pairs == [("03", "08"), ("09", "10"), ("11", "13"), ("12", "14"), ("15", "16")]


def test_cremad_sized_deal_is_balanced_by_gender_and_size():
  female = [str(1000 + i) for i in range(1, 87, 2)][:43]
  male = [str(2000 + i) for i in range(48)]
  speakers = female + male
  genders = ["F"] * 43 + ["M"] * 48
  groups = grouping.speaker_folds(speakers, genders, 5)
  assert set(groups.values()) == {1, 2, 3, 4, 5}
  members = group_members(groups)
  sizes = [len(members[g]) for g in range(1, 6)]
  assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 91
  for gender_list in (female, male):
    per_group = collections.Counter(groups[s] for s in gender_list)
    assert max(per_group.values()) - min(per_group.values()) <= 1
  # Deterministic, and independent of the input order.
  assert grouping.speaker_folds(speakers[::-1], genders[::-1], 5) == groups


def test_seeded_shuffle_is_deterministic_and_still_balanced():
  speakers = [f"s{i}" for i in range(20)]
  genders = ["F", "M"] * 10
  a = grouping.speaker_folds(speakers, genders, 4, seed=3)
  assert a == grouping.speaker_folds(speakers, genders, 4, seed=3)
  assert a != grouping.speaker_folds(speakers, genders, 4, seed=4)
  assert all(collections.Counter(a[s] for s, g in zip(speakers, genders) if g == "F")[k] in (2, 3)
             for k in range(1, 5))


def test_natural_order_and_unknown_gender_last():
  groups = grouping.speaker_folds(["spk10", "spk2", "spk1", "x"], ["F", "F", "F", ""], 2)
  assert groups == {"spk1": 1, "spk2": 2, "spk10": 1, "x": 2}


def test_errors():
  with pytest.raises(errors.DatasetError, match="only 3 speakers"):
    grouping.speaker_folds(["a", "b", "c"], ["F", "M", "F"], 5)
  with pytest.raises(errors.DatasetError, match="both 'F' and 'M'"):
    grouping.speaker_folds(["a", "a", "b"], ["F", "M", "F"], 2)
  with pytest.raises(errors.ConfigError, match="num_folds"):
    grouping.speaker_folds(["a", "b"], ["F", "M"], 1)


def test_assign_groups_without_speakers_is_label_stratified():
  utts = [Utterance(f"/x/{i}.wav", f"u{i:02d}", 0, "", "", "", 1.0, label="ab"[i % 2])
          for i in range(20)]
  grouped = grouping.assign_groups(utts, 5)
  per_group = collections.Counter((u.session, u.label) for u in grouped)
  assert set(per_group.values()) == {2}
  mixed = utts[:10] + [Utterance("/y.wav", "y", 0, "spk", "F", "", 1.0, label="a"),
                       Utterance("/z.wav", "z", 0, "spk", "F", "", 1.0, label="b")]
  grouped = grouping.assign_groups(mixed, 3)
  assert len({u.session for u in grouped if u.speaker == "spk"}) == 1
