"""The paper's recipe at 512x512 on the real Still Box, warm-started from the 256x256 stage.

    python train.py --config configs/stillbox512.py --workdir runs/stillbox512 --config.init_from=runs/stillbox256
"""

from configs import default


def get_config():
  c = default.get_config()
  c.dataset = 'tfds_stillbox/512'
  c.batch_size = 16
  c.eval_batch_size = 16
  c.learning_rate = 0.001
  c.init_from = 'runs/stillbox256'   # the previous stage's workdir (its best checkpoint)
  return c
