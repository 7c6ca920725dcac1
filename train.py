"""Trains DepthNet: `python train.py --config configs/synth64.py --workdir runs/x [--config.field=value ...]`.

Restarting the same command in the same workdir resumes exactly where the last checkpoint left off.
`--config.eval_only=True` prints the eval metrics of the workdir's best (or `--config.eval_checkpoint=latest`)
checkpoint instead of training.
"""

from absl import app, flags
from ml_collections import config_flags

from depthnet_jax import train_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'config file, e.g. configs/synth64.py',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'directory of checkpoints, TensorBoard events and config.json')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  train_lib.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
