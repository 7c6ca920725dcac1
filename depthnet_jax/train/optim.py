"""Optimizers of the original: torch's SGD (momentum with dampening, first step included) and Adam, and the
MultiStepLR schedule in epochs, as optax transformations whose state is arrays only (checkpointable, donatable).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from depthnet_jax.train.checks import SCHEDULES, SOLVERS  # the one definition, light for train.py

PAPER_MILESTONES = (19, 30, 44, 53)
PAPER_FACTORS_2017 = (1 / 2, 1 / 5, 1 / 2, 1 / 5)


class TorchSGDState(NamedTuple):
  count: jax.Array   # steps taken
  momentum: optax.Updates


def torch_sgd(learning_rate: float | Callable, momentum: float = 0.9, dampening: float = 0.9,
              weight_decay: float = 4e-4) -> optax.GradientTransformation:
  """`torch.optim.SGD(momentum, dampening, weight_decay)` exactly.

  g = grad + wd * p; buf = g on the first step (torch starts the buffer with the gradient itself, undampened),
  then buf = momentum * buf + (1 - dampening) * g; p -= lr(step) * buf, lr evaluated at the step count before
  this step.
  """
  schedule = learning_rate if callable(learning_rate) else (lambda _: learning_rate)

  def init(params):
    return TorchSGDState(count=jnp.zeros((), jnp.int32), momentum=jax.tree.map(jnp.zeros_like, params))

  def update(grads, state, params=None):
    if params is None:
      raise ValueError('torch_sgd needs the parameters for weight decay: call update(grads, state, params)')
    g = jax.tree.map(lambda gr, p: gr + weight_decay * p, grads, params)
    first = state.count == 0
    buf = jax.tree.map(lambda b, gi: jnp.where(first, gi, momentum * b + (1 - dampening) * gi), state.momentum, g)
    lr = schedule(state.count)
    updates = jax.tree.map(lambda b: -lr * b, buf)
    return updates, TorchSGDState(count=state.count + 1, momentum=buf)

  return optax.GradientTransformation(init, update)


def torch_adam(learning_rate: float | Callable, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 4e-4) -> optax.GradientTransformation:
  """`torch.optim.Adam(betas, eps, weight_decay)`: L2 decay added to the gradient, then Adam."""
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.scale_by_adam(beta1, beta2, eps=eps),
                     optax.scale_by_learning_rate(learning_rate))


def multistep_schedule(base_lr: float, milestones: Sequence[int], factors: Sequence[float], steps_per_epoch: int,
                       mode: str = 'torch') -> Callable:
  """Learning rate of each step: `base_lr` times the factors of the milestones (in epochs) already passed.

  mode 'torch': the original calls `scheduler.step()` at the start of each epoch, so with torch >= 1.1 the
  drop of milestone m is in force from (0-based) epoch m - 1. mode '2017': the code behind the published
  weights set the rate at epoch m itself.
  """
  shift = 1 if mode == 'torch' else 0
  boundaries = {max(0, (m - shift)) * steps_per_epoch: f for m, f in zip(milestones, factors)}
  return optax.piecewise_constant_schedule(base_lr, boundaries)


def make_schedule(config, steps_per_epoch: int) -> Callable:
  """The learning-rate schedule a config names: 'torch', '2017' or 'constant'."""
  if config.lr_schedule == 'constant':
    return optax.constant_schedule(config.learning_rate)
  if config.lr_schedule == 'torch':
    return multistep_schedule(config.learning_rate, config.milestones, [config.gamma] * len(config.milestones),
                              steps_per_epoch, 'torch')
  if config.lr_schedule == '2017':
    return multistep_schedule(config.learning_rate, PAPER_MILESTONES, PAPER_FACTORS_2017, steps_per_epoch, '2017')
  raise ValueError(f'lr_schedule must be one of {SCHEDULES}; got {config.lr_schedule!r}')


def create_optimizer(name: str, learning_rate, *, momentum: float = 0.9, dampening: float = 0.9,
                     weight_decay: float = 4e-4, beta1: float = 0.9, beta2: float = 0.999):
  if name == 'sgd':
    return torch_sgd(learning_rate, momentum, dampening, weight_decay)
  if name == 'adam':
    return torch_adam(learning_rate, beta1, beta2, weight_decay=weight_decay)
  raise ValueError(f'solver must be one of {SOLVERS}; got {name!r}')
