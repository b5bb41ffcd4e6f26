"""Metrics and the summary table."""

import numpy as np

from wavejax.reporting import results


def test_metrics_from_a_known_confusion():
  labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
  preds = np.array([0, 0, 0, 1, 1, 0, 2, 2, 1, 1])
  m = results.classification_metrics(labels, preds, 4)
  assert m["confusion"][0] == [3, 1, 0, 0]
  assert np.isclose(m["wa"], 6 / 10)
  assert np.isclose(m["ua"], np.mean([3 / 4, 1 / 2, 2 / 4]))  # class 3 absent: left out
  # class 1 is predicted 4 times, right once: precision 1/4, recall 1/2.
  f1 = [3 / 4, 2 * (1 / 4) * (1 / 2) / (1 / 4 + 1 / 2), 2 * 1 * .5 / 1.5]
  assert np.isclose(m["f1"], np.mean(f1))


def fold_result(fold, test_wa, best):
  return results.FoldResult(
      model="m", task="emotion", dataset="d", fold=fold, test_session=fold, classes=["a", "b"],
      num_train=10, num_val=2, num_test=5, selected_epoch=1,
      val={"wa": 0.5, "ua": 0.5, "f1": 0.5}, test={"wa": test_wa, "ua": test_wa, "f1": 0.4},
      train_accuracy=0.9, best_test_epoch=2, best_test_wa=best, best_test_ua=best,
      train_utterances_per_s=10.0)


def test_summary_mean_std_and_table(tmp_path):
  fold_results = [fold_result(2, 0.6, 0.7), fold_result(1, 0.4, 0.5)]
  summary = results.summarize(fold_results)
  assert summary["folds"] == [1, 2]
  assert np.isclose(summary["metrics"]["test_wa"]["mean"], 0.5)
  assert np.isclose(summary["metrics"]["test_wa"]["std"], 0.1)
  assert np.isclose(summary["metrics"]["paper_style_test_wa"]["mean"], 0.6)
  table = results.markdown_table(summary)
  assert "| 1 | 1 | 40.0 |" in table and "**50.0 ± 10.0**" in table
  results.save_fold(fold_results[0], tmp_path / "r.json")
  assert results.load_fold(tmp_path / "r.json") == fold_results[0]
