"""`python -m depthnet_jax.evaluate`: the command; the evaluation is `depthnet_jax.evaluation`'s."""

import sys

from depthnet_jax.evaluation.evaluate import main

if __name__ == '__main__':
  sys.exit(main())
