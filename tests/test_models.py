"""DepthNet structure: parameter count, output shapes, modes, initialisation, BatchNorm statistics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from depthnet_jax.model import models
from depthnet_jax.testing.torch_reference import TorchDepthNet


def _shapes(model, x_shape):
  """Output shapes of a call, traced without compiling."""
  graphdef, state = nnx.split(model)

  def call(state, x):
    return nnx.merge(graphdef, state)(x)

  return jax.tree.map(lambda a: a.shape, jax.eval_shape(call, state, jax.ShapeDtypeStruct(x_shape, jnp.float32)))


@pytest.fixture(scope='module')
def model():
  return models.DepthNet(batch_norm=True, depth_activation='elu', rngs=nnx.Rngs(0))


@pytest.mark.parametrize('batch_norm', [True, False])
def test_parameter_count_matches_torch(batch_norm):
  ours = models.count_params(nnx.eval_shape(lambda: models.DepthNet(batch_norm=batch_norm, rngs=nnx.Rngs(0))))
  theirs = sum(p.numel() for p in TorchDepthNet(batch_norm=batch_norm).parameters())
  assert ours == theirs
  if batch_norm:
    assert ours == 10_290_473  # the original's count with BN (its models/DepthNet.py)


@pytest.mark.parametrize('height,width', [(64, 64), (128, 128), (37, 53), (65, 31), (512, 384), (1, 1)])
def test_output_shapes_follow_strides(model, height, width):
  model.train()
  shapes = _shapes(model, (3, height, width, 6))
  expected = [(3, math.ceil(height / 2 ** k), math.ceil(width / 2 ** k)) for k in range(2, 7)]
  assert shapes == expected
  assert [s[1:] for s in shapes] == list(models.output_sizes(height, width))
  model.eval()
  assert _shapes(model, (3, height, width, 6)) == expected[0]
  model.train()


def test_output_shapes_match_torch_on_odd_size():
  net = TorchDepthNet(batch_norm=True)
  with torch.no_grad():
    theirs = [tuple(o.shape) for o in net(torch.zeros(2, 6, 45, 77))]
  ours = _shapes(nnx.eval_shape(lambda: models.DepthNet(rngs=nnx.Rngs(0))), (2, 45, 77, 6))
  assert ours == theirs


def test_with_confidence_outputs_depth_and_confidence_channels():
  net = nnx.eval_shape(lambda: models.DepthNet(with_confidence=True, rngs=nnx.Rngs(0)))
  assert _shapes(net, (2, 64, 64, 6))[0] == (2, 16, 16, 2)
  # The decoder's channel counts stay the original's: only the depth channel is upsampled.
  assert net.predict_depth5.kernel.shape == (3, 3, 513, 2)
  assert net.upsampled_depth6_to_5.kernel.shape == (4, 4, 1, 1)


def test_bad_input_shape_is_rejected(model):
  with pytest.raises(ValueError, match=r'\[B, H, W, 6\]'):
    _shapes(model, (2, 64, 64, 3))


def test_train_mode_batchnorm_needs_more_than_one_value(model):
  model.train()
  with pytest.raises(ValueError, match='more than one value per channel'):
    _shapes(model, (1, 64, 64, 6))  # conv6 is 1x1 here: one value per channel
  model.eval()
  assert _shapes(model, (1, 64, 64, 6)) == (1, 16, 16)
  model.train()


def test_unknown_depth_activation_is_rejected():
  with pytest.raises(ValueError, match='depth_activation'):
    models.DepthNet(depth_activation='relu', rngs=nnx.Rngs(0))


def test_initialisation_is_xavier_normal_with_zero_biases():
  net = models.DepthNet(batch_norm=False, rngs=nnx.Rngs(1))
  kernel = np.asarray(net.conv6_1.conv.kernel[...])  # 3x3x512x512: 2.4 M draws
  expected_std = math.sqrt(2.0 / (9 * 512 + 9 * 512))
  assert abs(kernel.mean()) < 0.01 * expected_std
  assert kernel.std() == pytest.approx(expected_std, rel=0.01)
  # Untruncated, as torch's xavier_normal_: about 0.27 % of draws lie beyond 3 sigma (truncation gives 0).
  assert 0.001 < np.mean(np.abs(kernel) > 3 * expected_std) < 0.005
  for path, leaf in nnx.to_flat_state(nnx.state(net, nnx.Param)):
    if path[-1] == 'bias':
      assert not np.any(np.asarray(leaf[...])), path
  bn_net = models.DepthNet(batch_norm=True, rngs=nnx.Rngs(1))
  assert np.all(np.asarray(bn_net.conv1.bn.scale[...]) == 1)
  assert np.all(np.asarray(bn_net.conv1.bn.bias[...]) == 0)
  assert bn_net.conv1.conv.bias is None  # no conv bias in front of BN, as in the original


def test_batchnorm_running_statistics_follow_torch():
  """One training-mode forward updates the running mean and the *unbiased* running variance like torch."""
  torch.manual_seed(0)
  x = torch.randn(4, 6, 32, 48)
  ref = TorchDepthNet(batch_norm=True)
  ref.train()
  with torch.no_grad():
    ref(x)
  bn = models.BatchNorm(32)
  conv = ref.conv1[0]
  with torch.no_grad():
    pre_bn = conv(x).permute(0, 2, 3, 1).numpy()  # the input torch's conv1 BN saw
  out = bn(jnp.asarray(pre_bn))
  np.testing.assert_allclose(np.asarray(bn.mean[...]), ref.conv1[1].running_mean.numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(bn.var[...]), ref.conv1[1].running_var.numpy(), rtol=1e-5, atol=1e-6)
  with torch.no_grad():
    torch_out = ref.conv1[1](conv(x)).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(np.asarray(out), torch_out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('activation', [None, 'elu'])
@pytest.mark.parametrize('clamp', [False, True])
def test_depth_head_post_processing_matches_torch(activation, clamp):
  raw = np.linspace(-80, 80, 2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5, 1)
  net = nnx.eval_shape(lambda: models.DepthNet(depth_activation=activation, clamp=clamp, rngs=nnx.Rngs(0)))
  ours = np.asarray(net._post_process(jnp.asarray(raw)))
  ref = torch.from_numpy(raw[..., 0])
  if activation == 'elu':
    ref = torch.nn.functional.elu(ref) + 1
  if clamp:
    ref = ref.clamp(10, 60)
  np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-6)
  if clamp:
    assert (ours.min(), ours.max()) == (10, 60)  # both bounds reached
