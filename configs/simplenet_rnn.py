"""SimpleNet-RNN (paper Sec. 3, 4.1): the SimpleNet front-end, two LSTM(64) layers, dense 64.

Usage: `--config=configs/simplenet_rnn.py[:task,fold=k]`. The paper's code scans the LSTMs over
the filter channels instead of time: `--config.model.head.scan_over=filters`.
"""

from wavejax import config


def get_config(arg: str = ""):
  return config.get_config("simplenet_rnn", arg)
