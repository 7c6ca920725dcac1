"""Parity with PyTorch: a torch DepthNet, saved as the original saves it and imported, computes the same depth.

Each reference is saved three ways (depthnet_jax/testing/torch_reference.py): train.py's checkpoint dict
(DataParallel's `module.` names, its `arch` string such as 'DepthNet_elu_bn_clamp') in the zip format of
PyTorch >= 1.6 and in the legacy format of older PyTorch, and the 2017 layout of the published weights
(`best_EPE`, no prefix, legacy format). All three must import to the same weights.

The reference (depthnet_jax/testing/parity.py) is randomised beyond its initialisation (biases, BN affine
parameters and running statistics), so that a weight or statistic mapped to the wrong place cannot go unnoticed.
Tolerance: max |ours - torch| / max |torch| <= 1e-5, per output, with each way of computing the convolutions
(`conv_impl`: XLA's convolution and patches + matrix product, depthnet_jax/conv.py).
"""

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from depthnet_jax.checkpoints import torch_import
from depthnet_jax.testing.parity import OPTIONS, Imported, relative_error

RTOL = 1e-5
SIZES = [(64, 64), (128, 128), (37, 53)]


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
# and padding are most demanding: every option and both modes at the odd size, with both ways of computing. The
# square sizes take the code paths the odd size does not (every level even). `make test` runs every option at the
# odd size with patches, and the default options (bn_elu) at the odd size with XLA and at 64x64: the options
# change the head (BatchNorm, ELU, clamp, confidence), not the convolutions, so each way of computing them is
# proved on one option there. The other options with XLA's convolution, 64x64 with the other options and 128x128
# with all (twice the compile time) run in `make test-slow`, so that `make test` stays within its 6 minutes.
def _case(option: str, size: tuple[int, int], conv_impl: str):
  slow = size == (128, 128) or (option != 'bn_elu' and (size == (64, 64) or conv_impl == 'xla'))
  return pytest.param(option, size, conv_impl, marks=[pytest.mark.slow] if slow else [],
                      id=f'{option}-{size[0]}x{size[1]}-{conv_impl}')


@pytest.mark.parametrize('imported,size,conv_impl', [
    _case(option, size, impl) for option in OPTIONS
    for size, impl in [*((size, 'patches') for size in SIZES), ((37, 53), 'xla')]], indirect=['imported'])
def test_eval_and_train_outputs_match_torch(imported, size, conv_impl):
  x = torch.randn(2, 6, *size, generator=torch.Generator().manual_seed(size[0]))
  ref = imported.torch_forward(x, train=False)
  assert relative_error(imported.forward(x, train=False, conv_impl=conv_impl), ref) <= RTOL
  if imported.model.spec.clamp:
    inside = ((ref > 10) & (ref < 60)).float().mean()
    assert 0.05 < inside < 0.95, f'the clamp case must exercise both sides ({inside:.2f} inside)'
  refs = imported.torch_forward(x, train=True)
  outs = imported.forward(x, train=True, conv_impl=conv_impl)
  assert len(outs) == len(refs) == 5
  errors = [relative_error(o, r) for o, r in zip(outs, refs)]
  assert max(errors) <= RTOL, errors
