"""`python -m depthnet_jax.evaluate`: the command (`depthnet_jax.evaluation.command`); the evaluation is
`depthnet_jax.evaluation.evaluate`'s."""

import sys

from depthnet_jax.evaluation.command import main

if __name__ == '__main__':
  sys.exit(main())
