"""Trains DepthNet: `python train.py --config configs/synth64.py --workdir runs/x [--config.field=value ...]`.

Restarting the same command in the same workdir resumes exactly where the last checkpoint left off.
`--config.eval_only=True` prints the eval metrics of the workdir's best (or `--config.eval_checkpoint=latest`)
checkpoint instead of training.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from depthnet_jax import input_pipeline, train_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'config file, e.g. configs/synth64.py',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'directory of checkpoints, TensorBoard events and config.json')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO; -v 0 shows them
  try:
    train_lib.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (input_pipeline.DatasetNotBuiltError, train_lib.NonFiniteLossError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
