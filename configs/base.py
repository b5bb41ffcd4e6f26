"""The protocol's defaults without a model (see `wavejax/config/__init__.py`)."""

from wavejax import config


def get_config(arg: str = ""):
  return config.apply_arg(config.base_config(), arg)
