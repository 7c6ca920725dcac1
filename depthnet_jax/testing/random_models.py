"""DepthNets with random weights drawn by NumPy, for tests that need a model but not a trained or Flax-initialised one.

Flax's initialisers compile once per weight shape: building a DepthNet the normal way costs about 10 s on 2 cores
(1 s from a warm persistent compilation cache). These draw every array with NumPy instead: kernels with a He-like
scale (so activations stay finite through the 17 layers), biases and means 0, BatchNorm scales and variances 1.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from depthnet_jax.model import models

DEFAULT_OPTIONS = dict(batch_norm=True, depth_activation='elu', clamp=False, with_confidence=False)


def random_depthnet(seed: int = 0, **options) -> models.DepthNet:
  """A full-size DepthNet (options as `models.DepthNet`, default BN + elu) with NumPy-drawn weights."""
  options = dict(DEFAULT_OPTIONS, **options)
  graphdef, state = nnx.split(nnx.eval_shape(lambda: models.DepthNet(**options, rngs=nnx.Rngs(0))))
  rng = np.random.default_rng(seed)

  def draw(path, x):
    name = str(getattr(path[-1], 'key', path[-1]))
    if name == 'kernel':
      return rng.normal(0, np.sqrt(1 / np.prod(x.shape[:-1])), x.shape).astype(x.dtype)
    if name in ('scale', 'var'):
      return np.ones(x.shape, x.dtype)
    return np.zeros(x.shape, x.dtype)
  nnx.replace_by_pure_dict(state, jax.tree_util.tree_map_with_path(draw, state.to_pure_dict()))
  return nnx.merge(graphdef, state)
