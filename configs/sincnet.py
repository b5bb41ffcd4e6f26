"""SincNet filters (Ravanelli & Bengio 2018) in SimpleNet's front-end, SimpleNet-CNN head.

Learnable band-pass sinc filters (low cut-off and band width per filter, mel-initialised, Hamming
window), applied per 40 ms window and pooled as mean |y| like SimpleNet. Beyond the paper. Usage:
`--config=configs/sincnet.py[:task,fold=k]`.
"""

from wavejax import config


def get_config(arg: str = ""):
  return config.get_config("sincnet", arg)
