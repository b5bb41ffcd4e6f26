"""WaveRNN with Trigeorgis et al. 2016's front-end ("Adieu features?", ICASSP 2016).

Per 40 ms window conv 40 x 20 -> max-pool 2 -> conv 40 x 40 -> max-pool across channels by 10
(end2you's emo16), then the paper's two LSTM(64) + dense 64 head (Trigeorgis: LSTMs of 256).
Usage: `--config=configs/wavernn_trigeorgis.py[:task,fold=k]`.
"""

from wavejax import config


def get_config(arg: str = ""):
  return config.get_config("wavernn_trigeorgis", arg)
