"""The paper's recipe at 64x64 on the real Still Box (tfds build tfds_stillbox --config 64 --manual_dir ...)."""

from configs import default


def get_config():
  c = default.get_config()
  c.dataset = 'tfds_stillbox/64'
  c.batch_size = 256
  c.learning_rate = 0.01
  return c
