"""SimpleNet-CNN (paper Sec. 3, 4.1).

Usage: `--config=configs/simplenet_cnn.py` (emotion, all folds), or with an arg selecting task and
fold, e.g. `--config=configs/simplenet_cnn.py:gender,fold=2`.
"""

from wavejax import config


def get_config(arg: str = ""):
  return config.get_config("simplenet_cnn", arg)
