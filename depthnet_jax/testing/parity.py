"""Parity with PyTorch: a randomised torch reference saved as the original saves it, imported, run on both sides.

Shared by tests/test_parity.py (which asserts the tolerance) and benchmarks/torch_parity.py (which prints the
errors and times the forward passes). Imports torch (requirements-dev.txt).
"""

from __future__ import annotations

import copy
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from depthnet_jax.checkpoints import torch_import
from depthnet_jax.testing import torch_reference

# The DepthNet options compared: the published one (BN + elu) and every other combination the original offers.
OPTIONS = {
    'bn_elu': dict(batch_norm=True, depth_activation='elu', clamp=False),
    'plain': dict(batch_norm=False, depth_activation=None, clamp=False),
    'bn_clamp': dict(batch_norm=True, depth_activation=None, clamp=True),
    'elu_clamp': dict(batch_norm=False, depth_activation='elu', clamp=True),
    'bn_elu_confidence': dict(batch_norm=True, depth_activation='elu', clamp=False, with_confidence=True),
}


def relative_error(ours, theirs: torch.Tensor) -> float:
  """max |ours - theirs| / max |theirs| of two outputs of the same shape (ours a JAX/NumPy array, theirs torch)."""
  ours, theirs = np.asarray(ours), theirs.detach().numpy()
  if ours.shape != theirs.shape:
    raise ValueError(f'shapes differ: ours {ours.shape}, torch {theirs.shape}')
  return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


class Imported:
  """A torch reference, its two saved files, the imported model, and one jitted forward per mode."""

  def __init__(self, name: str, tmp_dir: pathlib.Path):
    options = OPTIONS[name]
    torch.manual_seed(0)
    self.torch_model = torch_reference.randomize(torch_reference.TorchDepthNet(**options), seed=1)
    if options['clamp']:
      # Centre the finest output (spread ~0.2 m) on the clamp's lower bound, so that the clamp cuts some
      # pixels and passes others (test_models checks the upper bound).
      with torch.no_grad():
        self.torch_model.predict_depth2.bias.fill_(9.0 if options['depth_activation'] == 'elu' else 10.0)
    ckpt = torch_reference.checkpoint_dict(self.torch_model)
    self.arch = ckpt['arch']
    self.paths = {}
    for fmt in ('legacy', 'zip'):
      self.paths[fmt] = tmp_dir / f'{name}_{fmt}.pth.tar'
      torch_reference.save(ckpt, self.paths[fmt], legacy=(fmt == 'legacy'))
    self.paths['2017'] = tmp_dir / f'{name}_2017.pth.tar'
    torch_reference.save(torch_reference.checkpoint_dict_2017(self.torch_model), self.paths['2017'], legacy=True)
    self.model = torch_import.load(self.paths['legacy'])
    expected = dict(options, with_confidence=options.get('with_confidence', False))
    if self.model.options() != expected:
      raise AssertionError(f'imported options {self.model.options()} differ from the reference\'s {expected}')
    self._forward = {}

  def forward(self, x_nchw: torch.Tensor, train: bool, conv_impl: str = 'auto'):
    """Our output on the same input (model state untouched: train-mode BN updates are discarded)."""
    if (train, conv_impl) not in self._forward:
      model = nnx.clone(self.model)
      model.train() if train else model.eval()
      model.set_execution(conv_impl=conv_impl)
      graphdef, state = nnx.split(model)
      self._forward[train, conv_impl] = (jax.jit(lambda state, x: nnx.merge(graphdef, state)(x)), state)
    fn, state = self._forward[train, conv_impl]
    return fn(state, jnp.asarray(x_nchw.numpy().transpose(0, 2, 3, 1)))

  def torch_forward(self, x_nchw: torch.Tensor, train: bool):
    """The reference's output (a copy runs, so train-mode BN updates are discarded here too)."""
    model = copy.deepcopy(self.torch_model)
    model.train(train)
    with torch.no_grad():
      return model(x_nchw)
