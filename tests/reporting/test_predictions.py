"""The per-utterance predictions file: format, round trip and the checks of `read`."""

import csv
import os

import numpy as np
import pytest

from wavejax import errors
from wavejax.reporting import predictions

CLASSES = ("angry", "happy", "neutral", "sad")


def softmax(logits):
  e = np.exp(logits - logits.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def group(kind="selected", split="test", epoch=3, n=6, seed=0, ids=None):
  rng = np.random.default_rng(seed)
  probabilities = softmax(rng.normal(size=(n, len(CLASSES))))
  ids = ids if ids is not None else [f"Ses01F_impro01_{split}{i:03d}" for i in range(n)]
  return predictions.from_probabilities(
      kind, epoch, split, ids, [f"01{'FM'[i % 2]}" for i in range(n)], [1] * n,
      rng.integers(0, len(CLASSES), n), probabilities, CLASSES)


def groups():
  return [group("selected", "val", 3, 4, 1), group("selected", "test", 3, 6, 2),
          group("best_test", "val", 5, 4, 3), group("best_test", "test", 5, 6, 4)]


def test_round_trip_keeps_every_field(tmp_path):
  path = tmp_path / "fold_1" / predictions.FILENAME
  written = groups()
  predictions.write(path, written)
  read = predictions.read(path)
  assert list(read) == [g.key for g in written]
  for g in written:
    r = read[g.key]
    assert (r.epoch_kind, r.epoch, r.split, r.classes) == (g.epoch_kind, g.epoch, g.split, CLASSES)
    np.testing.assert_array_equal(r.utterance_ids, g.utterance_ids)
    np.testing.assert_array_equal(r.speakers, g.speakers)
    np.testing.assert_array_equal(r.sessions, g.sessions)
    np.testing.assert_array_equal(r.labels, g.labels)
    np.testing.assert_array_equal(r.predicted, g.predicted)
    np.testing.assert_allclose(r.probabilities, g.probabilities, rtol=5e-6)  # 6 digits
  test = predictions.read_split(path, "best_test", "test")
  np.testing.assert_array_equal(test.labels, written[3].labels)
  assert test.epoch == 5
  assert os.listdir(path.parent) == [predictions.FILENAME]  # no temporary left behind


def test_the_file_reads_with_the_csv_module(tmp_path):
  path = tmp_path / predictions.FILENAME
  g = group()
  predictions.write(path, [g])
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == list(predictions.KEY_COLUMNS) + [f"p_{c}" for c in CLASSES]
  assert len(rows) == len(g)
  for i, row in enumerate(rows):
    assert row["epoch_kind"] == "selected" and row["split"] == "test" and row["epoch"] == "3"
    assert row["label"] == CLASSES[g.labels[i]]
    assert row["predicted"] == CLASSES[np.argmax(g.probabilities[i])]
    assert row["predicted"] == CLASSES[g.predicted[i]]
    for c, name in enumerate(CLASSES):
      assert row[f"p_{name}"] == format(g.probabilities[i, c], ".6g")  # 6 significant digits


def test_ids_with_commas_and_quotes_round_trip(tmp_path):
  path = tmp_path / predictions.FILENAME
  ids = ['a,b', 'say "hi"', "plain", "ünïcode"]
  predictions.write(path, [group(n=4, ids=ids)])
  assert predictions.read_split(path).utterance_ids.tolist() == ids


def write_text(tmp_path, text):
  path = tmp_path / predictions.FILENAME
  path.write_text(text, encoding="utf-8")
  return path


def valid_text():
  return predictions.to_csv([group(n=3)])


def assert_refused(path, match):
  with pytest.raises(errors.ResultsError, match=match) as info:
    predictions.read(path)
  message = str(info.value)
  assert "\n" not in message and str(path) in message


def test_missing_file_is_refused(tmp_path):
  assert_refused(tmp_path / "fold_2" / predictions.FILENAME, "no such predictions file")


def test_missing_column_is_refused(tmp_path):
  lines = valid_text().splitlines()
  header = lines[0].split(",")
  drop = header.index("label")
  text = "\n".join(",".join(f for j, f in enumerate(line.split(",")) if j != drop)
                   for line in lines)
  assert_refused(write_text(tmp_path, text), "column 'label' is missing")


def test_unknown_class_name_is_refused(tmp_path):
  lines = valid_text().splitlines()
  fields = lines[1].split(",")
  fields[predictions.KEY_COLUMNS.index("predicted")] = "bored"
  lines[1] = ",".join(fields)
  assert_refused(write_text(tmp_path, "\n".join(lines)), "predicted 'bored' is not a class")


@pytest.mark.parametrize("values", [("nan", "0.5", "0.25", "0.25"), ("0.5", "0.5", "0.5", "0.5"),
                                    ("1.5", "-0.5", "0", "0")])
def test_probabilities_that_are_not_a_distribution_are_refused(tmp_path, values):
  lines = valid_text().splitlines()
  fields = lines[2].split(",")
  fields[len(predictions.KEY_COLUMNS):] = values
  lines[2] = ",".join(fields)
  assert_refused(write_text(tmp_path, "\n".join(lines)), "line 3: probabilities")


def test_duplicate_rows_are_refused(tmp_path):
  lines = valid_text().splitlines()
  assert_refused(write_text(tmp_path, "\n".join(lines + [lines[1]])), "appears twice")


def test_two_epochs_in_one_group_are_refused(tmp_path):
  text = predictions.to_csv([group(epoch=3, n=2)])
  other = predictions.to_csv([group(epoch=4, n=2, ids=["x", "y"])]).splitlines()[1:]
  assert_refused(write_text(tmp_path, text + "\n".join(other)), "epochs 3 and 4")


def test_ragged_rows_and_bad_numbers_are_refused(tmp_path):
  lines = valid_text().splitlines()
  assert_refused(write_text(tmp_path, "\n".join(lines[:2] + [lines[2] + ",extra"])),
                 "line 3 has")
  fields = lines[1].split(",")
  fields[predictions.KEY_COLUMNS.index("session")] = "one"
  assert_refused(write_text(tmp_path, "\n".join([lines[0], ",".join(fields)])),
                 "session 'one' is not an integer")
  assert_refused(write_text(tmp_path, ""), "empty file")


def test_a_split_that_is_not_there_is_named(tmp_path):
  path = tmp_path / predictions.FILENAME
  predictions.write(path, [group("selected", "test")])
  with pytest.raises(errors.ResultsError, match="no best_test/test rows .* selected/test"):
    predictions.read_split(path, "best_test", "test")


def test_an_unwritable_group_leaves_the_old_file(tmp_path):
  path = tmp_path / predictions.FILENAME
  predictions.write(path, [group()])
  before = path.read_text()
  bad = group()
  bad.probabilities[0, 0] = np.nan
  with pytest.raises(ValueError, match="finite"):
    predictions.write(path, [bad])
  with pytest.raises(ValueError, match="given twice"):
    predictions.write(path, [group(), group()])
  assert path.read_text() == before
  assert os.listdir(tmp_path) == [predictions.FILENAME]


def test_inconsistent_arrays_are_rejected():
  with pytest.raises(ValueError, match="probabilities have shape"):
    predictions.Predictions("selected", 1, "test", ["a"], ["s"], [1], [0], [0],
                            np.ones((1, 3)) / 3, ("x", "y"))
  with pytest.raises(ValueError, match="class indices"):
    predictions.Predictions("selected", 1, "test", ["a"], ["s"], [1], [2], [0],
                            np.ones((1, 2)) / 2, ("x", "y"))
  with pytest.raises(ValueError, match="epoch_kind"):
    predictions.Predictions("best", 1, "test", ["a"], ["s"], [1], [0], [0],
                            np.ones((1, 2)) / 2, ("x", "y"))
