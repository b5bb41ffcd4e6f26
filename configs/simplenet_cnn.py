"""SimpleNet-CNN (paper Sec. 3, 4.1).

Usage: `--config=configs/simplenet_cnn.py` (emotion, all folds), or with an arg selecting task and
fold, e.g. `--config=configs/simplenet_cnn.py:gender,fold=2`.
"""

from wavejax import config as wavejax_config


def get_config(arg: str = ""):
  config = wavejax_config.base_config()
  config.model.name = "simplenet_cnn"
  config.model.frontend = wavejax_config.simplenet_frontend_config()
  head = config.model.head
  head.features = 32            # four identical 2-D conv layers of 32 filters
  head.num_layers = 4
  head.kernel = (2, 2)          # paper text; the paper's code used (3, 3)
  head.pool = (2, 2)
  head.hidden = (64,)           # paper text; the paper's code used (128, 64)
  head.dropout = 0.0            # paper's code: 0.5
  head.norm = "batch"           # BN before each conv (paper code's placement); "none": raw energies
  return wavejax_config.apply_arg(config, arg)
