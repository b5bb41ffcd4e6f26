r"""A non-neural baseline on the built-in corpus: mean log-mel energies + logistic regression.

Generates (or reuses) the synthetic IEMOCAP-like corpus, describes each utterance by its 40 log-mel
band energies averaged over time, and runs the paper's leave-one-session-out 5-fold protocol with a
multinomial, L2-regularised logistic regression (numpy + scipy, features standardised on the
training folds) for the 4-class emotion task and the gender task. Prints per-fold and mean WA
(overall accuracy) and UA (mean per-class recall).

  python experiments/corpus_baseline.py --cache_dir=/tmp/wavejax_cache
"""

from __future__ import annotations

import numpy as np
import soundfile as sf
from absl import flags
from scipy import optimize, signal

from wavejax import cli, data
from wavejax.data import folds, synthetic
from wavejax.reporting import results

_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Corpus cache folder (default: user cache).")
_SEED = flags.DEFINE_integer("seed", 0, "Corpus generator seed.")
_UTTERANCES = flags.DEFINE_integer("utterances_per_speaker", 40, "Task utterances per speaker.")
_L2 = flags.DEFINE_float("l2", 1e-2, "L2 penalty of the logistic regression.")
_N_MELS = flags.DEFINE_integer("n_mels", 40, "Number of log-mel bands.")

def mel_filterbank(n_mels: int, n_fft: int, fs: float) -> np.ndarray:
  """Triangular HTK-mel filters, shape (n_mels, n_fft // 2 + 1)."""
  mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
  edges = 700.0 * (10.0 ** (np.linspace(0.0, mel(fs / 2), n_mels + 2) / 2595.0) - 1.0)
  freqs = np.linspace(0.0, fs / 2, n_fft // 2 + 1)
  lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
  return np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))


def log_mel_mean(path: str, bank: np.ndarray) -> np.ndarray:
  """Mean over 10 ms frames of the log-mel energies of one file."""
  x, fs = sf.read(path, dtype="float64")
  _, _, spec = signal.stft(x, fs, window="hann", nperseg=400, noverlap=240, nfft=512,
                           boundary=None, padded=False)
  return np.log(bank @ np.abs(spec) ** 2 + 1e-10).mean(axis=1)


def fit_logreg(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float):
  """Multinomial logistic regression by L-BFGS; returns (weights, bias)."""
  n, d = x.shape
  onehot = np.eye(n_classes)[y]

  def loss_and_grad(theta):
    w, b = theta[:d * n_classes].reshape(d, n_classes), theta[d * n_classes:]
    logits = x @ w + b
    logits -= logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    err = (np.exp(logp) - onehot) / n
    loss = -(onehot * logp).sum() / n + 0.5 * l2 * (w ** 2).sum()
    return loss, np.concatenate([(x.T @ err + l2 * w).ravel(), err.sum(axis=0)])

  theta0 = np.zeros(d * n_classes + n_classes)
  theta = optimize.minimize(loss_and_grad, theta0, jac=True, method="L-BFGS-B").x
  return theta[:d * n_classes].reshape(d, n_classes), theta[d * n_classes:]


def leave_one_session_out(x, y, sessions, n_classes: int, l2: float) -> np.ndarray:
  """Predicts every utterance with a model trained on the four other sessions."""
  pred = np.empty_like(y)
  for s in np.unique(sessions):
    train, test = sessions != s, sessions == s
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-8
    w, b = fit_logreg((x[train] - mean) / std, y[train], n_classes, l2)
    pred[test] = np.argmax(((x[test] - mean) / std) @ w + b, axis=1)
  return pred


def report(task: str, classes, y, pred, sessions):
  """Prints WA and UA per fold and their means over folds, then the pooled confusion matrix."""
  per_fold = []
  for s in np.unique(sessions):
    m = results.classification_metrics(y[sessions == s], pred[sessions == s], len(classes))
    wa, ua = m["wa"], m["ua"]
    per_fold.append((wa, ua))
    print(f"  {task:8s} fold {s} (test Session{s}): WA {100 * wa:5.1f} %  UA {100 * ua:5.1f} %")
  wa, ua = np.mean(per_fold, axis=0)
  print(f"  {task:8s} mean over folds       : WA {100 * wa:5.1f} %  UA {100 * ua:5.1f} %")
  print(f"  {task} confusion (rows: true, columns: predicted; {', '.join(classes)}):")
  confusion = results.confusion_matrix(y, pred, len(classes))
  for name, row in zip(classes, confusion):
    print(f"    {name:8s}" + "".join(f"{v:5d}" for v in row))


def main(argv):
  del argv
  root = synthetic.ensure_corpus(_CACHE_DIR.value, seed=_SEED.value,
                                 utterances_per_speaker=_UTTERANCES.value)
  manifest = data.scan("iemocap", root)
  print(f"corpus: {root} ({len(manifest)} task utterances)")
  bank = mel_filterbank(_N_MELS.value, 512, synthetic.SAMPLE_RATE)
  x = np.stack([log_mel_mean(u.path, bank) for u in manifest])
  sessions = np.array(manifest.field("session"))
  for task in ("emotion", "gender"):
    classes, y = folds.task_classes(task), folds.labels(manifest, task)
    report(task, classes, y, leave_one_session_out(x, y, sessions, len(classes), _L2.value),
           sessions)


if __name__ == "__main__":
  cli.run(main, "corpus_baseline")
