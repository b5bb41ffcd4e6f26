"""WaveRNN as the paper describes it (Sec. 2, 4.1; docs/reference.md#which-wavernn).

Per 40 ms window 8 x (conv 32 filters x 40 taps, Xavier, ReLU, max-pool 2), then the same two
LSTM(64) + dense 64 head as SimpleNet-RNN. Usage: `--config=configs/wavernn.py[:task,fold=k]`.
"""

from wavejax import config


def get_config(arg: str = ""):
  return config.get_config("wavernn", arg)
