"""compute_dtype='bfloat16': convolutions and activations in bfloat16; parameters, optimizer state, BatchNorm
statistics, loss and metrics in float32. A bfloat16 run trains on synth_tiny (`make test-slow`), and the eval
output in bfloat16 stays within bfloat16 tolerance of float32 on the same weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import test as test_config
from depthnet_jax.data import input_pipeline, sharding
from depthnet_jax.model import losses, models
from depthnet_jax.train import trainer as train_lib

STEPS = 30
# bfloat16 keeps 8 significant bits (relative rounding 2^-9 = 0.2 %); through DepthNet's 19 convolutions and their
# BatchNorms the depth drifted by 0.44 % of its range on the tiny run's weights (0.65 % after 30 bfloat16 steps).
EVAL_RTOL = 0.03


@pytest.fixture(scope='module')
def bf16_trainer(synth_tiny_dir):
  config = test_config.get_config()
  config.data_dir = synth_tiny_dir
  config.compute_dtype = 'bfloat16'
  config.lr_schedule = 'constant'
  return train_lib.Trainer(config)


@pytest.fixture(scope='module')
def bf16_run(bf16_trainer):
  trainer = bf16_trainer
  state = trainer.initial_state()
  # One batch of synth_tiny, stepped on again and again: the loss of a network that learns falls steadily (over
  # the stream of batches it falls too, but batches of 4 are too noisy to tell in a few dozen steps).
  batch = sharding.global_batch(next(trainer.train_iterator(0)), trainer.mesh)
  losses = []
  for _ in range(STEPS):
    state, metrics, _ = trainer.train_step(state, batch)
    losses.append(float(metrics.loss.compute()))
  return trainer, state, losses


# The bfloat16 train step is a program of its own (20 s of compile on 2 cores): in `make test-slow`, so that
# `make test` stays within its 6 minutes. The bfloat16 forward runs in `make test` (the evaluation below).
@pytest.mark.slow
def test_bfloat16_training_keeps_float32_state_and_lowers_the_loss(bf16_run):
  _, state, losses = bf16_run
  assert np.all(np.isfinite(losses)), losses
  for part in ('params', 'batch_stats', 'opt_state'):
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(getattr(state, part)) if jnp.issubdtype(leaf.dtype, jnp.floating)}
    assert dtypes == {jnp.dtype(jnp.float32)}, (part, dtypes)
  # Measured: 21.33 falling step by step to 18.47 after 30 steps at the test config's learning rate of 0.01.
  assert np.sum(np.diff(losses) < 0) >= STEPS - 3, losses
  assert losses[-1] < 0.92 * losses[0], losses


def _eval_step(eval_def):
  """The prediction of a batch and its metrics (`losses.depth_metrics`, as the evaluation computes them), jitted."""
  def step(params, batch_stats, batch):
    prediction = models.depth_of(nnx.merge(eval_def, params, batch_stats, copy=True)(batch['image_pair']))
    return losses.depth_metrics(prediction, batch['depth'], batch['mask']), prediction
  return jax.jit(step)


def test_bfloat16_eval_is_within_bfloat16_tolerance_of_float32(bf16_trainer, tiny_run):
  """On the weights float32 training gave (conftest's tiny run): bfloat16's eval output against float32's."""
  trainer = bf16_trainer
  params, batch_stats = trainer.weights_of(tiny_run[0])
  batch = next(iter(input_pipeline.eval_dataset(trainer.eval_source, global_batch_size=trainer.config.eval_batch_size)))
  half_metrics, half = _eval_step(trainer.eval_def)(params, batch_stats, batch)
  model = models.DepthNet(train_lib.model_spec(trainer.config), rngs=nnx.Rngs(0), compute_dtype='float32')
  _, eval_def, _, _ = train_lib.split_model(model)
  full_metrics, full = _eval_step(eval_def)(params, batch_stats, batch)
  assert half.dtype == full.dtype == jnp.float32
  half, full = np.asarray(half), np.asarray(full)
  error = np.max(np.abs(half - full)) / np.max(np.abs(full))
  assert 0 < error <= EVAL_RTOL, error  # > 0: the bfloat16 path did run in bfloat16
  for name in ('depth_error', 'abs_rel'):
    half_value, full_value = float(half_metrics[name]), float(full_metrics[name])
    assert half_value == pytest.approx(full_value, rel=EVAL_RTOL), name
