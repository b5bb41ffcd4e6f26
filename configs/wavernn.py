"""WaveRNN as the paper describes it (Sec. 2, 4.1; REFERENCE "Which WaveRNN").

Per 40 ms window 8 x (conv 32 filters x 40 taps, Xavier, ReLU, max-pool 2), then the same two
LSTM(64) + dense 64 head as SimpleNet-RNN. Usage: `--config=configs/wavernn.py[:task,fold=k]`.
"""

from wavejax import config as wavejax_config


def get_config(arg: str = ""):
  config = wavejax_config.base_config()
  config.model.name = "wavernn"
  config.model.frontend = wavejax_config.wavernn_frontend_config()
  config.model.head = wavejax_config.lstm_head_config()
  return wavejax_config.apply_arg(config, arg)
