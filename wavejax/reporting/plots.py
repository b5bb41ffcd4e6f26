"""Figures of the paper's analyses (Figs. 1-4, 6) from the numbers of `wavejax.analysis`.

matplotlib is optional (`pip install 'wavejax[plots]'`): `available()` says whether it is
installed, and every figure function raises `PlotsUnavailableError` (one line saying how to get
it) when it is not. Figures use the non-interactive Agg backend; `save` writes PNG and PDF.
"""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np

from wavejax import errors

INSTALL_HINT = "pip install 'wavejax[plots]' (matplotlib>=3.8)"


class PlotsUnavailableError(errors.WavejaxError):
  """matplotlib is not installed."""


def available() -> bool:
  return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
  if not available():
    raise PlotsUnavailableError(f"matplotlib is not installed; for figures {INSTALL_HINT}")
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save(figure, stem, formats=("png", "pdf")) -> list[str]:
  """Writes `stem.<format>` for each format, closes the figure; returns the paths."""
  plt = _pyplot()
  stem = pathlib.Path(stem)
  stem.parent.mkdir(parents=True, exist_ok=True)
  paths = []
  for fmt in formats:
    path = stem.with_suffix(f".{fmt}")
    figure.savefig(path, dpi=120, bbox_inches="tight")
    paths.append(str(path))
  plt.close(figure)
  return paths


def _db(power, floor=1e-12):
  return 10 * np.log10(np.maximum(np.asarray(power), floor))


# Sec. 2.2.2, Figs. 1-2 ----------------------------------------------------------------------


def equivalence_figure(report: dict, layers, sample_rate: float):
  """Left: |H| of the collapsed single filter of each output of the linear stack (Fig. 2's
  "Output (2,1)" as one multi-band filter). Right: the output energy the best single
  convolution cannot explain, per variant of the stack."""
  from wavejax.analysis import equivalence  # pylint: disable=g-import-not-at-top
  plt = _pyplot()
  figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
  kernel, _, _ = equivalence.collapse(layers)
  freqs, magnitude = equivalence.frequency_response(kernel, sample_rate)
  for out in range(kernel.shape[2]):
    left.plot(freqs / 1000, 20 * np.log10(np.maximum(magnitude[:, 0, out], 1e-6)),
              label=f"Output (2,{out + 1}) as one filter")
  left.set(xlabel="frequency (kHz)", ylabel="|H| (dB)", ylim=(-100, 10),
           title="Linear stack collapsed into one convolution")
  left.legend(fontsize=8)
  variants = [v for v in equivalence.VARIANTS if v in report]
  values = [max(report[v]["single_kernel_unexplained"], 1e-20) for v in variants]
  colours = ["tab:green" if report[v]["equivalent"] else "tab:red" for v in variants]
  right.bar(variants, values, color=colours)
  right.set(yscale="log", ylabel="energy unexplained by one conv",
            title="Where one convolution stops sufficing")
  right.tick_params(axis="x", rotation=30)
  figure.tight_layout()
  return figure


# Sec. 2.2.3, Fig. 3 -------------------------------------------------------------------------


def aliasing_stack_figure(stages: list[dict], title: str = ""):
  """One row per stage: spectrogram of the filtered input before pooling, spectrogram after
  pooling (Fig. 3; note the frequency axis halving), and both spectra with the aliased fraction."""
  plt = _pyplot()
  figure, axes = plt.subplots(len(stages), 3, figsize=(13, 3 * len(stages)), squeeze=False)
  for row, stage in zip(axes, stages):
    for ax, key, rate in ((row[0], "signal_pre", stage["rate_in"]),
                          (row[1], "signal_post", stage["rate_out"])):
      x = stage[key]
      nfft = int(min(256, max(16, len(x) // 8)))
      ax.specgram(x, NFFT=nfft, Fs=rate, noverlap=nfft // 2, cmap="magma", vmin=-120)
      ax.set(ylabel="Hz", xlabel="s",
             title=f"{'before' if key == 'signal_pre' else 'after'} pooling @ {rate:g} Hz")
    ax = row[2]
    ax.plot(stage["freqs_pre"], _db(stage["power_pre"]), label="filtered input", lw=0.8)
    ax.plot(stage["freqs_post"], _db(stage["power_post"]), label="pooled", lw=0.8)
    ax.axvline(stage["rate_out"] / 2, color="k", ls="--", lw=0.6)
    ax.set(xlabel="Hz", ylabel="dB", ylim=(-120, 0),
           title=(f"{stage['pool']}{' + anti-alias' if stage['antialias'] else ''}: aliased "
                  f"{stage['aliased_fraction']:.2f} (cum. "
                  f"{stage['cumulative_aliased_fraction']:.2f})"))
    ax.legend(fontsize=7)
  if title:
    figure.suptitle(title)
  figure.tight_layout()
  return figure


def pooling_sweep_figure(sweep: dict):
  """Pooling by 2 of every test signal, per pool kind. Top: aliased fraction of the output
  power. Bottom: aliased power relative to the input's, without (solid) and with (hatched) an
  anti-aliasing low-pass (log scale: the low-pass leaves ~1e-11)."""
  plt = _pyplot()
  names = list(sweep)
  kinds = list(sweep[names[0]]) if names else []
  figure, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
  x = np.arange(len(names))
  width = 0.8 / max(1, len(kinds))
  for k, kind in enumerate(kinds):
    offset = (k - (len(kinds) - 1) / 2) * width
    top.bar(x + offset, [sweep[n][kind]["plain"]["aliased_fraction"] for n in names], width,
            color=f"C{k}", label=kind)
    for a, label in enumerate(("plain", "antialias")):
      values = [max(sweep[n][kind][label]["aliased_to_input"], 1e-16) for n in names]
      bottom.bar(x + offset + (a - 0.5) * width / 2, values, width / 2, color=f"C{k}",
                 hatch="//" if a else None, alpha=0.5 if a else 1.0,
                 label=f"{kind}{' + anti-alias low-pass' if a else ''}")
  top.set(ylabel="aliased fraction of output", ylim=(0, 1.05),
          title="Pooling by 2: power at frequencies the input did not have")
  top.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  bottom.set(yscale="log", ylabel="aliased power / input power")
  bottom.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  bottom.set_xticks(x, names)
  figure.tight_layout()
  return figure


def band_task_figure(summary: dict):
  """Test accuracy per model and seed on the band task, with the chance level."""
  plt = _pyplot()
  models = summary["models"]
  figure, ax = plt.subplots(figsize=(1.6 * len(models) + 2, 3.6))
  for i, entry in enumerate(models.values()):
    ax.bar(i, entry["mean"], yerr=entry["std"], color=f"C{i}", alpha=0.7, capsize=4)
    ax.scatter(np.full(len(entry["test_wa"]), i), entry["test_wa"], color="k", s=12, zorder=3)
  ax.axhline(summary["chance"], color="k", ls="--", lw=0.8, label="chance")
  ax.set_xticks(range(len(models)), list(models), rotation=20)
  ax.set(ylabel="test accuracy", ylim=(0, 1.05), title="Band task: classes differ only in "
         "bands that pooling by 2 folds together")
  ax.legend(fontsize=8)
  figure.tight_layout()
  return figure


# Sec. 4.3, Fig. 6 ---------------------------------------------------------------------------


def filters_figure(initial: np.ndarray, trained: np.ndarray, sample_rate: float,
                   indices: list[int]):
  """Fig. 6: selected filters before and after training, in time (rows 1-2) and frequency
  (row 3)."""
  from wavejax.analysis import learned_filters  # pylint: disable=g-import-not-at-top
  plt = _pyplot()
  figure, axes = plt.subplots(3, len(indices), figsize=(3.2 * len(indices), 7), squeeze=False)
  freqs, mag0 = learned_filters.frequency_response(initial, sample_rate)
  _, mag1 = learned_filters.frequency_response(trained, sample_rate)
  for col, index in enumerate(indices):
    axes[0, col].plot(initial[:, index], lw=0.8)
    axes[0, col].set(title=f"initial filter {index}", xlabel="tap")
    axes[1, col].plot(trained[:, index], lw=0.8, color="C1")
    axes[1, col].set(title=f"trained filter {index}", xlabel="tap")
    axes[2, col].plot(freqs, mag0[:, index], lw=0.8, label="initial")
    axes[2, col].plot(freqs, mag1[:, index], lw=0.8, label="trained")
    axes[2, col].set(xlabel="Hz", title=f"|H| of filter {index}")
    axes[2, col].legend(fontsize=7)
  figure.tight_layout()
  return figure


def drift_figure(drift: dict):
  """Per filter: trained vs initial centroid, relative weight change and the share of |H|^2
  below the initial band, against the initial centre frequency."""
  plt = _pyplot()
  p = {k: np.asarray(v) for k, v in drift["per_filter"].items()}
  figure, axes = plt.subplots(1, 3, figsize=(14, 3.8))
  centre = p["centroid_initial_hz"]
  axes[0].scatter(centre, p["centroid_trained_hz"], s=10)
  axes[0].plot([centre.min(), centre.max()], [centre.min(), centre.max()], "k--", lw=0.6)
  axes[0].set(xlabel="initial centroid (Hz)", ylabel="trained centroid (Hz)",
              title="centre-frequency drift")
  axes[1].scatter(centre, p["relative_change"], s=10, color="C1")
  axes[1].set(xlabel="initial centroid (Hz)", ylabel="||w - w0|| / ||w0||",
              title="relative weight change")
  axes[2].scatter(centre, p["low_share_initial"], s=10, label="initial")
  axes[2].scatter(centre, p["low_share_trained"], s=10, label="trained")
  axes[2].set(xlabel="initial centroid (Hz)", ylabel="share of |H|^2 below the band",
              title="low-frequency passbands")
  axes[2].legend(fontsize=7)
  figure.suptitle(drift["verdict"], fontsize=8)
  figure.tight_layout()
  return figure


def cumulative_response_figure(freqs: np.ndarray, initial: np.ndarray, trained: np.ndarray):
  """The bank's summed power response before and after training, in dB."""
  plt = _pyplot()
  figure, ax = plt.subplots(figsize=(8, 3.5))
  ax.plot(freqs, _db(initial), label="initial bank")
  ax.plot(freqs, _db(trained), label="trained bank")
  ax.set(xlabel="Hz", ylabel="sum of |H|^2 (dB)", title="Cumulative frequency response")
  ax.legend(fontsize=8)
  figure.tight_layout()
  return figure


def learned_spectrogram_figure(initial: np.ndarray, trained: np.ndarray, window_ms: float,
                               title: str = ""):
  """The front-end output `[windows, filters]` of one utterance with the initial and the
  trained filters (log scale)."""
  plt = _pyplot()
  figure, axes = plt.subplots(1, 2, figsize=(12, 3.8), squeeze=False)
  for ax, spec, name in ((axes[0, 0], initial, "initial"), (axes[0, 1], trained, "trained")):
    spec = np.asarray(spec)
    shown = spec if np.min(spec) < 0 else np.log(np.asarray(spec) + 1e-6)
    image = ax.imshow(shown.T, origin="lower", aspect="auto", cmap="magma",
                      extent=(0, spec.shape[0] * window_ms / 1000, 0, spec.shape[1]))
    ax.set(xlabel="s", ylabel="filter", title=f"learned spectrogram, {name} filters")
    figure.colorbar(image, ax=ax)
  if title:
    figure.suptitle(title, fontsize=9)
  figure.tight_layout()
  return figure


# Sec. 3, Fig. 4 -----------------------------------------------------------------------------


def change_rate_figure(histories: dict, key: str = "rate"):
  """Fig. 4: per model, the mean change rate of each layer's kernel per epoch (log scale)."""
  plt = _pyplot()
  figure, axes = plt.subplots(1, len(histories), figsize=(6 * len(histories), 3.8),
                              squeeze=False, sharey=True)
  for ax, (name, history) in zip(axes[0], histories.items()):
    layers = sorted({layer for entry in history for layer in entry[key]})
    epochs = [entry["epoch"] for entry in history]
    for layer in layers:
      ax.plot(epochs, [max(e[key].get(layer, np.nan), 1e-12) for e in history], marker="o",
              ms=3, lw=1, label=layer)
    ax.set(yscale="log", xlabel="epoch", ylabel="mean |dw / w|" if key == "rate"
           else "||dw|| / ||w||", title=name)
    ax.legend(fontsize=6)
  figure.tight_layout()
  return figure


def filter_response_image(kernel: np.ndarray, sample_rate: float, floor_db: float = -60.0
                          ) -> np.ndarray:
  """`[freqs, filters]` uint8 image of |H| in dB (0 dB white, `floor_db` black), low frequencies
  at the bottom; numpy only (no matplotlib), for TensorBoard."""
  from wavejax.analysis import learned_filters  # pylint: disable=g-import-not-at-top
  _, magnitude = learned_filters.frequency_response(kernel, sample_rate, 257)
  db = 20 * np.log10(np.maximum(magnitude / max(magnitude.max(), 1e-300), 1e-12))
  scaled = np.clip((db - floor_db) / -floor_db, 0.0, 1.0)
  return (255 * scaled[::-1]).astype(np.uint8)
