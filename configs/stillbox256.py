"""The paper's recipe at 256x256 on the real Still Box, warm-started from the 128x128 stage.

    python train.py --config configs/stillbox256.py --workdir runs/stillbox256 --config.init_from=runs/stillbox128
"""

from configs import default


def get_config():
  c = default.get_config()
  c.dataset = 'tfds_stillbox/256'
  c.batch_size = 64
  c.eval_batch_size = 64
  c.learning_rate = 0.001
  c.init_from = 'runs/stillbox128'   # the previous stage's workdir (its best checkpoint)
  return c
