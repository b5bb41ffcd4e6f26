"""wavejax: audio classifiers learned from raw waveforms (SimpleNet and its baselines) in JAX/Flax.

Public entry points (imported lazily, so `import wavejax.data` stays free of JAX start-up cost):
`train_fold(config, fold, workdir=None)`, `cross_validate(config, workdir)`,
`train_group(configs, fold, workdirs)`, `load_model(workdir, fold=None)`, `FoldResult`, and
`get_config(model, arg)` for a model's whole config.
"""

__version__ = "0.1.0"

_LAZY = {"train_fold": "wavejax.training.trainer", "cross_validate": "wavejax.training.trainer",
         "train_group": "wavejax.training.group", "FoldResult": "wavejax.reporting.results",
         "load_model": "wavejax.inference.model", "get_config": "wavejax.config"}


def __getattr__(name):
  if name in _LAZY:
    import importlib
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'wavejax' has no attribute {name!r}")


__all__ = sorted(_LAZY)
