"""The paper's recipe at 128x128 on the real Still Box, warm-started from the 64x64 stage.

    python train.py --config configs/stillbox128.py --workdir runs/stillbox128 --config.init_from=runs/stillbox64
"""

from configs import default


def get_config():
  c = default.get_config()
  c.dataset = 'tfds_stillbox/128'
  c.batch_size = 256
  c.eval_batch_size = 256
  c.learning_rate = 0.01
  c.init_from = 'runs/stillbox64'   # the previous stage's workdir (its best checkpoint)
  return c
