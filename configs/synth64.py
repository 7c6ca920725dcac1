"""The embedded default: DepthNet on rendered Still-Box-like scenes, no download (a few minutes on 2 CPU cores).

    tfds build tfds_stillbox --config synth64 --data_dir data
    python train.py --config configs/synth64.py --workdir runs/synth64 --config.data_dir=data
"""

from configs import default


def get_config():
  c = default.get_config()
  c.dataset = 'tfds_stillbox/synth64'
  c.batch_size = 32
  c.eval_batch_size = 64
  c.solver = 'adam'                 # converges in few steps; the paper's SGD needs its 55 epochs
  c.learning_rate = 1e-3
  c.lr_schedule = 'constant'
  c.num_epochs = 1
  c.eval_every_epochs = 0.5
  c.log_every_steps = 25
  return c
