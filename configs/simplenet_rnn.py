"""SimpleNet-RNN (paper Sec. 3, 4.1): the SimpleNet front-end, two LSTM(64) layers, dense 64.

Usage: `--config=configs/simplenet_rnn.py[:task,fold=k]`. The paper's code scans the LSTMs over
the filter channels instead of time: `--config.model.head.scan_over=filters`.
"""

from wavejax import config as wavejax_config


def get_config(arg: str = ""):
  config = wavejax_config.base_config()
  config.model.name = "simplenet_rnn"
  config.model.frontend = wavejax_config.simplenet_frontend_config()
  config.model.head = wavejax_config.lstm_head_config()
  return wavejax_config.apply_arg(config, arg)
