"""`python -m depthnet_jax.torch_import`: the command (`depthnet_jax.checkpoints.import_command`); the importer is
`depthnet_jax.checkpoints.torch_import`."""

import sys

from depthnet_jax.checkpoints.import_command import main

if __name__ == '__main__':
  sys.exit(main())
