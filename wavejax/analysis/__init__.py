"""The paper's explanation (Sec. 2-4) as functions: arrays in, arrays and numbers out.

Every claim of the paper's analysis is one module here, returning numbers (and a one-line verdict
where the claim is a yes/no); the figures of the same numbers are in `wavejax.reporting.plots`, and
the
scripts `experiments/aliasing.py`, `experiments/filters.py` and `experiments/change_rate.py` run
them end to end.

- `signals`: test signals (tones, chirps, band-limited noise) and their power spectra.
- `equivalence`: stacked linear convolutions are ONE convolution (Sec. 2.2.2, Figs. 1-2); where
  that stops holding (ReLU, max pooling) and what strides do to the single filter.
- `aliasing`: pooling between convolutions aliases (Sec. 2.2.3, Fig. 3): per-stage spectra and
  the fraction of output energy at frequencies the input did not have.
- `band_task`: a classification task whose classes differ only in bands that early pooling folds
  onto each other, for SimpleNet-CNN against pool-first models (Sec. 2.2.3, 3).
- `learned_filters`: initial vs trained kernels, centre-frequency and bandwidth drift, the
  bank's cumulative response and the learned spectrogram (Sec. 4.3, Fig. 6).
- `change_rate`: the mean relative weight change per layer (Sec. 3, Fig. 4) and a tracker the
  trainer calls after every epoch.
- `common`: what the experiment scripts share (configs by name, JSON of numpy, optional figures).
"""
