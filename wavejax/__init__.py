"""wavejax: audio classifiers learned from raw waveforms (SimpleNet and its baselines) in JAX/Flax.

Public entry points: `train_fold(config, fold, workdir=None)` and `cross_validate(config, workdir)`
(imported lazily, so `import wavejax.data` stays free of JAX start-up cost).
"""

__version__ = "0.1.0"

_LAZY = {"train_fold": "wavejax.train", "cross_validate": "wavejax.train",
         "FoldResult": "wavejax.results", "load_model": "wavejax.predict"}


def __getattr__(name):
  if name in _LAZY:
    import importlib
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'wavejax' has no attribute {name!r}")


__all__ = ["FoldResult", "cross_validate", "load_model", "train_fold"]
