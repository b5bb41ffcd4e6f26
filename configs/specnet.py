"""SpecNet (paper Sec. 4.1): SimpleNet-CNN with its initial FIR filters frozen.

A fixed magnitude spectrogram (the same 64 band-pass filters, 40 ms windows and mean |y| pooling
as SimpleNet's initial front-end) into the same CNN head. Usage:
`--config=configs/specnet.py[:task,fold=k]`.
"""

from wavejax import config


def get_config(arg: str = ""):
  return config.get_config("specnet", arg)
