"""LEAF (Zeghidour et al. 2021) in SimpleNet's place, SimpleNet-CNN head. Beyond the paper.

Learnable Gabor filters (mel-initialised), squared modulus, Gaussian low-pass pooling to one frame
per 40 ms, PCEN. Usage: `--config=configs/leaf.py[:task,fold=k]`.
"""

from wavejax import config


def get_config(arg: str = ""):
  return config.get_config("leaf", arg)
