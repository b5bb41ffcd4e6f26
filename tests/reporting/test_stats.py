"""Paired comparisons: known answers for the differences, intervals and McNemar's test."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from wavejax import errors
from wavejax.reporting import results, stats

NUM_CLASSES = 4


def ids(fold, n):
  return [f"fold{fold}_utt{i:04d}" for i in range(n)]


def shared_outcomes(per_class, share, seed=0):
  """Per class: which utterances A gets right while B gets them wrong (`share` of the class),
  which both get right, and which both get wrong. Returns (labels, predicted_a, predicted_b)."""
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(NUM_CLASSES), per_class)
  wrong = (labels + 1) % NUM_CLASSES
  predicted_a, predicted_b = labels.copy(), labels.copy()
  only_a = round(share * per_class)
  for c in range(NUM_CLASSES):
    members = rng.permutation(np.flatnonzero(labels == c))
    predicted_b[members[:only_a]] = wrong[members[:only_a]]  # A right, B wrong
    both_wrong = members[only_a:only_a + per_class // 4]
    predicted_a[both_wrong] = predicted_b[both_wrong] = wrong[both_wrong]
  return labels, predicted_a, predicted_b


def runs_with_share(share, per_class=60, folds=4, seeds=(0,)):
  """Runs A and B over `folds` folds where A is right and B wrong on `share` of every class of
  every fold, and both agree elsewhere."""
  a, b = {}, {}
  for seed in seeds:
    a[seed], b[seed] = {}, {}
    for fold in range(1, folds + 1):
      labels, pa, pb = shared_outcomes(per_class, share, seed=100 * seed + fold)
      a[seed][fold] = stats.FoldPredictions(ids(fold, len(labels)), labels, pa)
      b[seed][fold] = stats.FoldPredictions(ids(fold, len(labels)), labels, pb)
  return a, b


def random_run(seeds, folds, n, accuracy, offset=0, train_accuracy=float("nan")):
  run = {}
  for seed in seeds:
    run[seed] = {}
    for fold in folds:
      labels = np.random.default_rng(fold).integers(0, NUM_CLASSES, n)
      rng = np.random.default_rng(1000 * seed + fold + offset)
      predicted = np.where(rng.random(n) < accuracy, labels,
                           rng.integers(0, NUM_CLASSES, n))
      run[seed][fold] = stats.FoldPredictions(ids(fold, n), labels, predicted, train_accuracy)
  return run


# Known answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", stats.METRICS)
def test_identical_runs_differ_by_exactly_zero(metric):
  a = random_run([0, 1], [1, 2, 3], 40, 0.6)
  result = stats.paired_difference(a, a, metric, num_resamples=2000)
  assert result.difference == 0.0
  assert result.interval == (0.0, 0.0)
  assert result.half_width == 0.0 and result.verdict == "undecided"
  assert result.sizes == {"utterances": 120, "folds": 3, "seeds_a": 2, "seeds_b": 2}
  assert result.paired_seeds
  mcnemar = stats.mcnemar(a, a)
  assert (mcnemar.a_only, mcnemar.b_only, mcnemar.num_pairs, mcnemar.p_value) == (0, 0, 240, 1.0)


def test_a_fixed_share_of_wins_gives_that_difference_and_the_binomial_error():
  share, per_class, folds = 0.2, 60, 4
  a, b = runs_with_share(share, per_class, folds)
  result = stats.paired_difference(a, b, "wa", num_resamples=10000, seed=1)
  assert result.difference == pytest.approx(share, abs=1e-12)
  assert result.low < share < result.high
  n = NUM_CLASSES * per_class * folds
  expected = 1.96 * math.sqrt(share * (1 - share) / n)  # binomial standard error x 1.96
  assert result.half_width == pytest.approx(expected, rel=0.2)
  assert result.num_utterances == n and result.verdict == "supported"
  swapped = stats.paired_difference(b, a, "wa", num_resamples=10000, seed=1)
  assert swapped.difference == pytest.approx(-share, abs=1e-12)
  assert swapped.verdict == "contradicted"


def test_the_interval_narrows_as_one_over_root_n():
  small = stats.paired_difference(*runs_with_share(0.2, per_class=20), num_resamples=10000)
  large = stats.paired_difference(*runs_with_share(0.2, per_class=80), num_resamples=10000)
  assert large.half_width / small.half_width == pytest.approx(0.5, rel=0.15)


@pytest.mark.parametrize("metric", ["ua", "f1", "wa"])
def test_differences_match_the_metrics_of_wavejax_results(metric):
  a = random_run([0, 1], [1, 2, 3], 50, 0.6)
  b = random_run([0, 1], [1, 2, 3], 50, 0.4, offset=7)

  def direct(run):  # mean over seeds of the mean over folds, as Table 1
    return np.mean([np.mean([results.classification_metrics(f.labels, f.predicted,
                                                            NUM_CLASSES)[metric]
                             for f in folds.values()]) for folds in run.values()])

  result = stats.paired_difference(a, b, metric, num_resamples=500)
  assert result.value_a == pytest.approx(direct(a), abs=1e-12)
  assert result.value_b == pytest.approx(direct(b), abs=1e-12)
  assert result.difference == pytest.approx(direct(a) - direct(b), abs=1e-12)


@pytest.mark.parametrize("metric", stats.METRICS)
def test_resampled_metrics_match_the_metrics_of_the_resampled_utterances(metric):
  rng = np.random.default_rng(3)
  labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES), [5, 9, 1, 12]))
  predicted = np.stack([np.where(rng.random(labels.size) < p, labels,
                                 rng.integers(0, NUM_CLASSES, labels.size)) for p in (0.3, 0.8)])
  indices = stats.stratified_indices(labels, 20, rng)
  values = stats._weighted_metric(stats._counts(indices, labels.size), labels, predicted, metric)
  assert values.shape == (20, 2)
  for r, row in enumerate(indices):
    for m in range(2):
      expected = results.classification_metrics(labels[row], predicted[m][row], NUM_CLASSES)
      assert values[r, m] == pytest.approx(expected[metric], abs=1e-12)


@pytest.mark.parametrize("shuffle", [False, True])
def test_stratified_resamples_keep_every_class_count(shuffle):
  labels = np.repeat(np.arange(3), [7, 1, 12])
  if shuffle:
    labels = np.random.default_rng(0).permutation(labels)
  indices = stats.stratified_indices(labels, 500, np.random.default_rng(1))
  assert indices.shape == (500, labels.size)
  np.testing.assert_array_equal(labels[indices], np.broadcast_to(labels, indices.shape))
  for c, count in enumerate((7, 1, 12)):
    drawn = np.bincount(indices[:, labels == c].ravel(), minlength=labels.size)
    assert drawn[labels == c].sum() == 500 * count
    if count > 1:  # every member is drawn, about equally often
      assert np.all(drawn[labels == c] > 0.8 * 500)
  assert any(len(set(row)) < labels.size for row in indices)  # with replacement


def test_seeds_that_disagree_widen_the_interval():
  a0, b0 = runs_with_share(0.1, seeds=(0,))
  a1, b1 = runs_with_share(0.3, seeds=(1,))
  one = stats.paired_difference(a0, b0, num_resamples=4000)
  two = stats.paired_difference({**a0, **a1}, {**b0, **b1}, num_resamples=4000)
  assert two.difference == pytest.approx(0.2, abs=1e-12)
  assert two.half_width > 2 * one.half_width
  assert two.low < 0.2 < two.high


def test_unpaired_seeds_are_resampled_independently():
  a = random_run([0, 1], [1, 2], 60, 0.7)
  b = random_run([5, 6, 7], [1, 2], 60, 0.5, offset=3)
  result = stats.paired_difference(a, b, num_resamples=2000)
  assert not result.paired_seeds
  assert result.sizes["seeds_a"] == 2 and result.sizes["seeds_b"] == 3
  assert result.low < result.difference < result.high
  with pytest.raises(errors.ResultsError, match=r"seeds \[0, 1\] and B \[5, 6, 7\]"):
    stats.mcnemar(a, b)


def test_the_same_seed_gives_the_same_interval_and_another_seed_a_close_one():
  a = random_run([0], [1, 2], 80, 0.7)
  b = random_run([0], [1, 2], 80, 0.5, offset=3)
  first = stats.paired_difference(a, b, "ua", num_resamples=3000, seed=4)
  assert stats.paired_difference(a, b, "ua", num_resamples=3000, seed=4) == first
  other = stats.paired_difference(a, b, "ua", num_resamples=3000, seed=5)
  assert other.interval != first.interval
  assert other.half_width == pytest.approx(first.half_width, rel=0.15)


def test_utterances_are_matched_by_id_not_position():
  a = random_run([0], [1, 2], 40, 0.7)
  b = random_run([0], [1, 2], 40, 0.5, offset=3)
  order = np.random.default_rng(0).permutation(40)
  shuffled = {0: {k: stats.FoldPredictions(f.utterance_ids[order], f.labels[order],
                                           f.predicted[order]) for k, f in b[0].items()}}
  assert (stats.paired_difference(a, shuffled, "f1", num_resamples=500)
          == stats.paired_difference(a, b, "f1", num_resamples=500))
  assert stats.mcnemar(a, shuffled) == stats.mcnemar(a, b)


def test_mismatched_runs_are_refused_with_one_line_naming_seed_and_fold():
  a = random_run([0, 1], [1, 2], 10, 0.7)
  b = random_run([0, 1], [1, 2], 10, 0.5, offset=3)
  f = b[1][2]
  renamed = {**b, 1: {1: b[1][1], 2: stats.FoldPredictions(
      [*f.utterance_ids[:-1], "elsewhere"], f.labels, f.predicted)}}
  relabelled = {**b, 1: {1: b[1][1], 2: stats.FoldPredictions(
      f.utterance_ids, (f.labels + 1) % NUM_CLASSES, f.predicted)}}
  shorter = {**b, 0: {1: b[0][1], 2: stats.FoldPredictions(
      f.utterance_ids[:-1], f.labels[:-1], f.predicted[:-1])}}
  cases = [(renamed, r"run B, seed 1, fold 2: .*'elsewhere'"),
           (relabelled, r"run B, seed 1, fold 2: utterance .* has label"),
           (shorter, r"run B, seed 0, fold 2: its 9 test utterances are not the 10"),
           ({0: b[0]}, None), ({**b, 1: {1: b[1][1]}}, r"run B, seed 1: folds \[1\]")]
  for other, match in cases:
    if match is None:  # fewer seeds: unpaired, still comparable
      assert not stats.paired_difference(a, other, num_resamples=10).paired_seeds
      continue
    for compare in (stats.paired_difference, stats.mcnemar):
      with pytest.raises(errors.ResultsError, match=match) as info:
        compare(a, other)
      assert "\n" not in str(info.value)


# McNemar ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("a_only, b_only", [(0, 0), (0, 1), (1, 0), (3, 17), (10, 10), (7, 12),
                                            (120, 80), (2000, 2100), (30000, 30600)])
def test_exact_binomial_p_matches_scipy(a_only, b_only):
  n = a_only + b_only
  ours = stats.binomial_two_sided_p(min(a_only, b_only), n)
  expected = scipy_stats.binomtest(min(a_only, b_only), n, 0.5).pvalue if n else 1.0
  assert ours == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_mcnemar_pools_discordant_pairs_over_folds_and_seeds():
  a, b = {}, {}
  counts = {(0, 1): (3, 1), (0, 2): (2, 0), (1, 1): (4, 2), (1, 2): (0, 1)}  # (A only, B only)
  for (seed, fold), (a_only, b_only) in counts.items():
    labels = np.zeros(12, np.int64)
    pa, pb = np.zeros(12, np.int64), np.zeros(12, np.int64)
    pb[:a_only] = 1
    pa[a_only:a_only + b_only] = 1
    pa[-2:] = pb[-2:] = 2  # both wrong: not discordant
    a.setdefault(seed, {})[fold] = stats.FoldPredictions(ids(fold, 12), labels, pa)
    b.setdefault(seed, {})[fold] = stats.FoldPredictions(ids(fold, 12), labels, pb)
  result = stats.mcnemar(a, b)
  assert (result.a_only, result.b_only, result.discordant, result.num_pairs) == (9, 4, 13, 48)
  assert result.p_value == pytest.approx(scipy_stats.binomtest(4, 13, 0.5).pvalue, rel=1e-12)
  assert result.to_json()["discordant"] == 13


# Gaps and groups -------------------------------------------------------------------------------


def test_gap_difference_resamples_folds():
  a = random_run([0], [1, 2, 3, 4, 5], 40, 0.5)
  b = random_run([0], [1, 2, 3, 4, 5], 40, 0.5, offset=9)
  train_a = [0.9, 0.95, 0.85, 1.0, 0.9]
  train_b = [0.6, 0.55, 0.7, 0.65, 0.6]
  a = {0: {k: stats.FoldPredictions(f.utterance_ids, f.labels, f.predicted, train_a[k - 1])
           for k, f in a[0].items()}}
  b = {0: {k: stats.FoldPredictions(f.utterance_ids, f.labels, f.predicted, train_b[k - 1])
           for k, f in b[0].items()}}
  per_fold = [(train_a[k - 1] - np.mean(a[0][k].labels == a[0][k].predicted))
              - (train_b[k - 1] - np.mean(b[0][k].labels == b[0][k].predicted))
              for k in range(1, 6)]
  result = stats.gap_difference(a, b, num_resamples=5000)
  assert result.statistic == "gap"
  assert result.difference == pytest.approx(np.mean(per_fold), abs=1e-12)
  # A mean of resampled folds lies between the extreme folds; 5 folds leave it wide.
  assert min(per_fold) - 1e-12 <= result.low < result.difference < result.high
  assert result.high <= max(per_fold) + 1e-12
  expected = 1.96 * np.std(per_fold) / math.sqrt(5)  # the bootstrap's standard error x 1.96
  assert result.half_width == pytest.approx(expected, rel=0.25)
  assert stats.gap_difference(a, a, num_resamples=100).interval == (0.0, 0.0)
  with pytest.raises(errors.ResultsError, match=r"run A, seed 0, fold 1: no training"):
    stats.gap_difference(random_run([0], [1], 5, 0.5), random_run([0], [1], 5, 0.5))


def test_group_difference_of_two_normal_samples():
  rng = np.random.default_rng(11)
  high, low = rng.normal(1.5, 1.0, 400), rng.normal(1.0, 2.0, 300)
  result = stats.group_difference(high, low, num_resamples=10000)
  assert result.difference == pytest.approx(high.mean() - low.mean(), abs=1e-12)
  assert result.low < 0.5 < result.high
  expected = 1.96 * math.sqrt(high.var() / high.size + low.var() / low.size)
  assert result.half_width == pytest.approx(expected, rel=0.1)
  assert result.verdict == "supported" and result.sizes == {"a": 400, "b": 300}
  assert stats.group_difference(low, high, num_resamples=10000).verdict == "contradicted"
  for bad in ([1.0], [1.0, np.nan]):
    with pytest.raises(errors.ResultsError, match="group B"):
      stats.group_difference(high, bad)


def test_verdicts_and_arguments():
  assert stats.verdict((0.01, 0.2)) == "supported"
  assert stats.verdict((-0.3, -0.001)) == "contradicted"
  for interval in ((-0.1, 0.1), (0.0, 0.2), (-0.2, 0.0), (np.nan, np.nan)):
    assert stats.verdict(interval) == "undecided"
  a = random_run([0], [1], 10, 0.5)
  with pytest.raises(ValueError, match="metric"):
    stats.paired_difference(a, a, "accuracy")
  with pytest.raises(ValueError, match="confidence"):
    stats.paired_difference(a, a, confidence=95)
