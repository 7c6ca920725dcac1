"""Parity with PyTorch: a torch DepthNet, saved as the original saves it and imported, computes the same depth.

Each reference is saved three ways (tests/torch_reference.py): train.py's checkpoint dict (DataParallel's
`module.` names, its `arch` string such as 'DepthNet_elu_bn_clamp') in the zip format of PyTorch >= 1.6 and in
the legacy format of older PyTorch, and the 2017 layout of the published weights (`best_EPE`, no prefix,
legacy format). All three must import to the same weights.

The reference (tests/torch_reference.py) is randomised beyond its initialisation (biases, BN affine parameters
and running statistics), so that a weight or statistic mapped to the wrong place cannot go unnoticed.
Tolerance: max |ours - torch| / max |torch| <= 1e-5, per output, with each way of computing the convolutions
(`conv_impl`: XLA's convolution and patches + matrix product, depthnet_jax/conv.py).
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from depthnet_jax import torch_import
import torch_reference

RTOL = 1e-5
SIZES = [(64, 64), (128, 128), (37, 53)]
OPTIONS = {
    'bn_elu': dict(batch_norm=True, depth_activation='elu', clamp=False),
    'plain': dict(batch_norm=False, depth_activation=None, clamp=False),
    'bn_clamp': dict(batch_norm=True, depth_activation=None, clamp=True),
    'elu_clamp': dict(batch_norm=False, depth_activation='elu', clamp=True),
    'bn_elu_confidence': dict(batch_norm=True, depth_activation='elu', clamp=False, with_confidence=True),
}


def _relative_error(ours, theirs):
  ours, theirs = np.asarray(ours), theirs.detach().numpy()
  assert ours.shape == theirs.shape
  return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


class Imported:
  """A torch reference, its two saved files, the imported model, and one jitted forward per mode."""

  def __init__(self, name, tmp_dir):
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
    assert self.model.options() == dict(options, with_confidence=options.get('with_confidence', False))
    self._forward = {}

  def forward(self, x_nchw, train, conv_impl='auto'):
    """Our output on the same input (model state untouched: train-mode BN updates are discarded)."""
    if (train, conv_impl) not in self._forward:
      model = nnx.clone(self.model)
      model.train() if train else model.eval()
      model.set_execution(conv_impl=conv_impl)
      graphdef, state = nnx.split(model)
      self._forward[train, conv_impl] = (jax.jit(lambda state, x: nnx.merge(graphdef, state)(x)), state)
    fn, state = self._forward[train, conv_impl]
    return fn(state, jnp.asarray(x_nchw.numpy().transpose(0, 2, 3, 1)))

  def torch_forward(self, x_nchw, train):
    model = copy.deepcopy(self.torch_model)
    model.train(train)
    with torch.no_grad():
      return model(x_nchw)


@pytest.fixture(scope='module', params=list(OPTIONS))
def imported(request, tmp_path_factory):
  return Imported(request.param, tmp_path_factory.mktemp(request.param))


def test_both_torch_formats_and_the_2017_layout_import_to_identical_weights(imported):
  ours = jax.tree.leaves(nnx.state(imported.model).to_pure_dict())
  for layout in ('zip', '2017'):
    other = torch_import.load(imported.paths[layout])
    assert other.options() == imported.model.options()
    theirs = jax.tree.leaves(nnx.state(other).to_pure_dict())
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# Patches (the CPU default) at every size; XLA's convolution (the GPU/TPU default) at the odd size, where crops
# and padding are most demanding: every option and both modes on both, 40 compiles instead of 60.
@pytest.mark.parametrize('size,conv_impl', [(size, 'patches') for size in SIZES] + [((37, 53), 'xla')],
                         ids=lambda v: f'{v[0]}x{v[1]}' if isinstance(v, tuple) else v)
def test_eval_and_train_outputs_match_torch(imported, size, conv_impl):
  x = torch.randn(2, 6, *size, generator=torch.Generator().manual_seed(size[0]))
  ref = imported.torch_forward(x, train=False)
  assert _relative_error(imported.forward(x, train=False, conv_impl=conv_impl), ref) <= RTOL
  if imported.model.clamp:
    inside = ((ref > 10) & (ref < 60)).float().mean()
    assert 0.05 < inside < 0.95, f'the clamp case must exercise both sides ({inside:.2f} inside)'
  refs = imported.torch_forward(x, train=True)
  outs = imported.forward(x, train=True, conv_impl=conv_impl)
  assert len(outs) == len(refs) == 5
  errors = [_relative_error(o, r) for o, r in zip(outs, refs)]
  assert max(errors) <= RTOL, errors
