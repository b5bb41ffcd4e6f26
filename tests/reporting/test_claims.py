"""The paper's claims ruled from per-utterance predictions: verdicts of pairs and of claims, the
equivalence margin, missing models, and the table1.md / JSON forms."""

import json

import numpy as np
import pytest

from wavejax.reporting import claims, stats

FOLDS, PER_FOLD, CLASSES = (1, 2, 3, 4, 5), 40, 4


def labels_of(fold):
  return np.arange(PER_FOLD) % CLASSES


def run_with(share_right: float, seeds=(0, 1), train_accuracy=0.9, shift=0) -> stats.Run:
  """A run right on the first `share_right` of each fold's utterances (from `shift` on, cyclic)
  and wrong (label + 1) on the rest."""
  out = {}
  for seed in seeds:
    out[seed] = {}
    for fold in FOLDS:
      labels = labels_of(fold)
      right = np.roll(np.arange(PER_FOLD) < round(share_right * PER_FOLD), shift)
      predicted = np.where(right, labels, (labels + 1) % CLASSES)
      ids = [f"f{fold}_u{i}" for i in range(PER_FOLD)]
      out[seed][fold] = stats.FoldPredictions(ids, labels, predicted, train_accuracy)
  return out


def one_claim(kind, pairs, margin=0.0, task="emotion"):
  return claims.Claim("c", "Sec. X", "a claim", task, kind, tuple(pairs), margin)


def test_a_model_right_where_the_other_is_wrong_is_supported_by_that_share():
  runs = {("a", "emotion"): run_with(0.75), ("b", "emotion"): run_with(0.25)}
  ruled = claims.rule(one_claim(claims.GREATER, [("a", "b")]), runs)
  pair = ruled["pairs"][0]
  d = pair["difference"]
  assert d.difference == pytest.approx(0.5)
  assert 0.35 < d.low < 0.5 < d.high < 0.65
  assert pair["verdict"] == ruled["verdict"] == "supported"
  assert pair["mcnemar"]["a_only"] == 2 * 5 * 20 and pair["mcnemar"]["b_only"] == 0
  assert pair["ua"]["difference"] == pytest.approx(0.5)
  reverse = claims.rule(one_claim(claims.GREATER, [("b", "a")]), runs)
  assert reverse["verdict"] == "contradicted"
  assert reverse["pairs"][0]["difference"].high < 0


def test_identical_predictions_are_undecided_and_within_any_margin():
  runs = {("a", "gender"): run_with(0.6), ("b", "gender"): run_with(0.6)}
  greater = claims.rule(one_claim(claims.GREATER, [("a", "b")], task="gender"), runs)
  d = greater["pairs"][0]["difference"]
  assert (d.difference, d.low, d.high) == (0.0, 0.0, 0.0)
  assert greater["verdict"] == "undecided"
  similar = claims.rule(one_claim(claims.SIMILAR, [("a", "b")], 0.03, "gender"), runs)
  assert similar["verdict"] == "supported"


@pytest.mark.parametrize("low, high, expected", [
    (-0.02, 0.025, "supported"), (0.04, 0.1, "contradicted"), (-0.1, -0.031, "contradicted"),
    (-0.01, 0.05, "undecided"), (-0.05, 0.0, "undecided")])
def test_a_similar_pair_is_read_against_its_margin(low, high, expected):
  claim = one_claim(claims.SIMILAR, [("a", "b")], margin=0.03)
  d = stats.Difference("wa", (low + high) / 2, low, high, 0.5, 0.5, 0.95, 100, {})
  assert claims.pair_verdict(claim, d) == expected


@pytest.mark.parametrize("verdicts, expected", [
    (["supported", "supported"], "supported"), (["supported", "undecided"], "undecided"),
    (["supported", "contradicted"], "contradicted"), (["undecided", "contradicted"],
                                                      "contradicted")])
def test_a_claim_holds_when_every_pair_does(verdicts, expected):
  assert claims.combined_verdict(verdicts) == expected


def test_overfitting_compares_train_minus_test_gaps():
  runs = {("a", "emotion"): run_with(0.5, train_accuracy=1.0),
          ("b", "emotion"): run_with(0.5, train_accuracy=0.7)}
  ruled = claims.rule(one_claim(claims.OVERFITS_MORE, [("a", "b")]), runs)
  d = ruled["pairs"][0]["difference"]
  assert d.statistic == "gap" and d.difference == pytest.approx(0.3)
  assert d.value_a == pytest.approx(0.5) and d.value_b == pytest.approx(0.2)
  assert ruled["verdict"] == "supported" and "mcnemar" not in ruled["pairs"][0]


def test_a_claim_without_one_of_its_models_is_not_ruled_and_says_which():
  runs = {("simplenet_cnn", "emotion"): run_with(0.7), ("specnet", "emotion"): run_with(0.4)}
  ruled = claims.rule_all(runs)
  by_key = {r["claim"].key: r for r in ruled}
  assert by_key["insight_2"]["verdict"] == "supported"
  assert "insight_1" not in by_key  # neither of its models ran
  assert by_key["insight_3"]["verdict"] == claims.NOT_RULED
  assert by_key["insight_3"]["reason"] == "no emotion predictions of SimpleNet-RNN"
  assert "no gender predictions" in by_key["similar_on_gender"]["reason"]
  assert all(r["claim"].models & {"simplenet_cnn", "specnet"} for r in ruled)


def test_the_paper_claims_name_its_pairs():
  by_key = {c.key: c for c in claims.CLAIMS}
  assert by_key["insight_1"].pairs == (("simplenet_rnn", "wavernn"),)
  assert by_key["insight_2"].pairs == (("simplenet_cnn", "specnet"),)
  assert by_key["insight_3"].pairs == (("simplenet_cnn", "simplenet_rnn"),)
  assert len(by_key["insight_4"].pairs) == 4 and by_key["insight_4"].kind == claims.OVERFITS_MORE
  assert len(by_key["best_on_emotion"].pairs) == 4
  assert len(by_key["similar_on_gender"].pairs) == 6  # every pair of the four waveform models


def test_markdown_and_json_carry_every_pair_and_verdict():
  runs = {(m, "emotion"): run_with(share, shift=i) for i, (m, share) in enumerate(
      [("soundnet", 0.5), ("wavernn", 0.4), ("simplenet_rnn", 0.55), ("simplenet_cnn", 0.8),
       ("specnet", 0.3)])}
  ruled = claims.rule_all(runs)
  text = claims.markdown(ruled)
  assert "## The paper's claims on this run" in text
  assert text.count("| SimpleNet-CNN - SpecNet |") == 2  # the headline and insight 2
  assert "**supported**" in text  # SimpleNet-CNN beats all four by 25+ points
  widths = claims.half_widths(ruled)
  assert widths.size == 7 and np.all(widths > 0)
  assert f"median {np.median(widths):.1f}" in text
  encoded = json.loads(json.dumps(claims.to_json(ruled)))
  first = encoded[0]
  assert first["key"] == "best_on_emotion" and first["verdict"] == "supported"
  assert {p["verdict"] for p in first["pairs"]} == {"supported"}
  assert first["pairs"][0]["difference"]["low"] > 0
  rows = claims.forest_rows(ruled)
  assert len(rows) == 7 + 4  # accuracy pairs and the four gap pairs
  label, difference, verdict = rows[0]
  assert "SimpleNet-CNN - SoundNet" in label and verdict == "supported"
  assert difference.difference == pytest.approx(100 * first["pairs"][0]["difference"]["difference"])
