"""LEAF (Zeghidour et al. 2021) in SimpleNet's place, SimpleNet-CNN head. Beyond the paper.

Learnable Gabor filters (mel-initialised), squared modulus, Gaussian low-pass pooling to one frame
per 40 ms, PCEN. Usage: `--config=configs/leaf.py[:task,fold=k]`.
"""

from wavejax import config as wavejax_config


def get_config(arg: str = ""):
  config = wavejax_config.base_config()
  config.model.name = "leaf"
  config.model.frontend = wavejax_config.leaf_frontend_config()
  config.model.head = wavejax_config.cnn_head_config()
  return wavejax_config.apply_arg(config, arg)
