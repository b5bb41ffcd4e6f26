"""Shared defaults (see `wavejax/config.py`): the paper's protocol on the built-in corpus."""

from wavejax import config as wavejax_config


def get_config(arg: str = ""):
  return wavejax_config.apply_arg(wavejax_config.base_config(), arg)
