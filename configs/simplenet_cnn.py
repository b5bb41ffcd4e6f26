"""SimpleNet-CNN (paper Sec. 3, 4.1).

Usage: `--config=configs/simplenet_cnn.py` (emotion, all folds), or with an arg selecting task and
fold, e.g. `--config=configs/simplenet_cnn.py:gender,fold=2`.
"""

from wavejax import config as wavejax_config


def get_config(arg: str = ""):
  config = wavejax_config.base_config()
  config.model.name = "simplenet_cnn"
  config.model.frontend = wavejax_config.simplenet_frontend_config()
  config.model.head = wavejax_config.cnn_head_config()
  return wavejax_config.apply_arg(config, arg)
