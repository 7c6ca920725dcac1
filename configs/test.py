"""A tiny config for the test suite: `tfds_stillbox/synth_tiny` (32x32, 6 frames), batch 4, a few steps."""

from configs import default


def get_config():
  c = default.get_config()
  c.dataset = 'tfds_stillbox/synth_tiny'
  c.batch_size = 4
  c.eval_batch_size = 4
  c.num_epochs = 1
  c.num_train_steps = 6
  c.eval_every_epochs = 1.0
  c.log_every_steps = 2
  c.checkpoint_every_steps = 3
  c.num_eval_images = 2
  c.learning_rate = 0.01
  return c
