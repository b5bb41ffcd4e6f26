"""WaveRNN with Trigeorgis et al. 2016's front-end ("Adieu features?", ICASSP 2016).

Per 40 ms window conv 40 x 20 -> max-pool 2 -> conv 40 x 40 -> max-pool across channels by 10
(end2you's emo16), then the paper's two LSTM(64) + dense 64 head (Trigeorgis: LSTMs of 256).
Usage: `--config=configs/wavernn_trigeorgis.py[:task,fold=k]`.
"""

from wavejax import config as wavejax_config


def get_config(arg: str = ""):
  config = wavejax_config.base_config()
  config.model.name = "wavernn_trigeorgis"
  config.model.frontend = wavejax_config.trigeorgis_frontend_config()
  config.model.head = wavejax_config.lstm_head_config()
  return wavejax_config.apply_arg(config, arg)
