"""The optimizers against torch.optim on the same parameters and gradients, and the schedules against MultiStepLR."""

import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch

from depthnet_jax.train import optim

SHAPES = ((3, 3, 6, 4), (4,), (7, 5))


def _problem(seed=0, steps=8):
  rng = np.random.default_rng(seed)
  params = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
  grads = [[rng.normal(size=s).astype(np.float32) for s in SHAPES] for _ in range(steps)]
  return params, grads


def _run_ours(tx, params, grads):
  params = [jnp.asarray(p) for p in params]
  state = tx.init(params)
  update = jax.jit(tx.update)
  history = []
  for g in grads:
    updates, state = update([jnp.asarray(x) for x in g], state, params)
    params = optax.apply_updates(params, updates)
    history.append([np.asarray(p) for p in params])
  return history


def _run_torch(make_optimizer, params, grads, scheduler_lrs=None):
  tensors = [torch.tensor(p, requires_grad=True) for p in params]
  opt = make_optimizer(tensors)
  history = []
  for k, g in enumerate(grads):
    if scheduler_lrs is not None:
      for group in opt.param_groups:
        group['lr'] = scheduler_lrs[k]
    for t, x in zip(tensors, g):
      t.grad = torch.tensor(x)
    opt.step()
    history.append([t.detach().numpy().copy() for t in tensors])
  return history


def _assert_histories(ours, theirs, tol=1e-6):
  for step, (a, b) in enumerate(zip(ours, theirs)):
    for x, y in zip(a, b):
      # relative to the parameters' scale (about 1): float32 rounding of the same arithmetic
      np.testing.assert_allclose(x, y, rtol=tol, atol=tol, err_msg=f'step {step}')


def test_sgd_with_dampening_equals_torch_from_the_first_step():
  params, grads = _problem()
  ours = _run_ours(optim.torch_sgd(0.01, momentum=0.9, dampening=0.9, weight_decay=4e-4), params, grads)
  theirs = _run_torch(lambda t: torch.optim.SGD(t, lr=0.01, momentum=0.9, dampening=0.9, weight_decay=4e-4),
                      params, grads)
  _assert_histories(ours, theirs)


def test_sgd_follows_a_schedule_like_torch():
  params, grads = _problem(1)
  lrs = [0.1, 0.1, 0.1, 0.03, 0.03, 0.009, 0.009, 0.009]
  schedule = optax.piecewise_constant_schedule(0.1, {3: 0.3, 5: 0.3})
  ours = _run_ours(optim.torch_sgd(schedule), params, grads)
  theirs = _run_torch(lambda t: torch.optim.SGD(t, lr=0.1, momentum=0.9, dampening=0.9, weight_decay=4e-4),
                      params, grads, scheduler_lrs=lrs)
  _assert_histories(ours, theirs)


def test_adam_equals_torch():
  params, grads = _problem(2)
  ours = _run_ours(optim.create_optimizer('adam', 1e-3, weight_decay=4e-4), params, grads)
  theirs = _run_torch(lambda t: torch.optim.Adam(t, lr=1e-3, betas=(0.9, 0.999), weight_decay=4e-4), params, grads)
  _assert_histories(ours, theirs)


def _config(schedule, lr=0.01):
  c = ml_collections.ConfigDict()
  c.lr_schedule, c.learning_rate, c.milestones, c.gamma = schedule, lr, (19, 30, 44, 53), 0.3
  return c


def test_torch_schedule_equals_multisteplr_as_the_original_drives_it():
  steps_per_epoch = 3
  schedule = optim.make_schedule(_config('torch'), steps_per_epoch)
  tensor = torch.zeros(1, requires_grad=True)
  opt = torch.optim.SGD([tensor], lr=0.01)
  scheduler = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[19, 30, 44, 53], gamma=0.3)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # "lr_scheduler.step() before optimizer.step()": what the original does
    for epoch in range(55):
      scheduler.step()  # the original's train.py: at the start of each epoch
      expected = opt.param_groups[0]['lr']
      for k in range(steps_per_epoch):
        got = float(schedule(epoch * steps_per_epoch + k))
        assert got == pytest.approx(expected, rel=1e-6), (epoch, k, got, expected)
  # each drop lands one epoch before its milestone
  assert float(schedule(17 * steps_per_epoch)) == pytest.approx(0.01)
  assert float(schedule(18 * steps_per_epoch)) == pytest.approx(0.003)


def test_2017_schedule_divides_by_2_5_2_5_at_the_milestones():
  schedule = optim.make_schedule(_config('2017'), 2)
  expected = {0: 0.01, 18: 0.01, 19: 0.005, 29: 0.005, 30: 0.001, 44: 0.0005, 52: 0.0005, 53: 0.0001, 54: 0.0001}
  for epoch, lr in expected.items():
    assert float(schedule(epoch * 2)) == pytest.approx(lr, rel=1e-6), epoch
  assert float(optim.make_schedule(_config('constant'), 2)(1000)) == pytest.approx(0.01)


def test_state_is_arrays_and_update_runs_jitted_with_donation():
  params = {'w': jnp.ones((3,)), 'b': jnp.zeros((2,))}
  tx = optim.create_optimizer('sgd', optim.make_schedule(_config('torch'), 10))
  state = tx.init(params)
  assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(state))

  @jax.jit
  def step(params, state):
    updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    return optax.apply_updates(params, updates), state

  step = jax.jit(step, donate_argnums=(0, 1))
  params, state = step(params, state)
  params, state = step(params, state)
  assert int(state.count) == 2


def test_unknown_names_are_refused():
  with pytest.raises(ValueError, match="solver must be one of"):
    optim.create_optimizer('rmsprop', 0.1)
  with pytest.raises(ValueError, match='lr_schedule must be one of'):
    optim.make_schedule(_config('cosine'), 10)
  with pytest.raises(ValueError, match='needs the parameters'):
    optim.torch_sgd(0.1).update({'w': jnp.ones(2)}, optim.torch_sgd(0.1).init({'w': jnp.ones(2)}))
