"""depthnet_jax/conv.py: patches + matrix product equals XLA's convolution, values and gradients, on the shapes that
exercise each path (stride 2 with odd sizes, the product-first heads, the 1-channel upsamplings, 1x1 maps)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from depthnet_jax.model import conv

RTOL = 1e-5


def _relative(a, b):
  a, b = np.asarray(a), np.asarray(b)
  assert a.shape == b.shape
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _arrays(x_shape, k_shape, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=x_shape).astype(np.float32)),
          jnp.asarray(rng.normal(size=k_shape).astype(np.float32)))


# (H, W, C, O, stride): encoder-like stride 2 on odd and even sizes, stride 1 with O >= C (patches) and O < C
# (product first, as the prediction heads), 1x1 maps as conv6 at 64x64.
CONV_CASES = [(7, 5, 6, 8, 2), (8, 8, 16, 16, 2), (1, 1, 8, 16, 2), (5, 7, 8, 16, 1), (5, 9, 24, 2, 1),
              (1, 1, 16, 16, 1), (2, 3, 12, 1, 1)]
DECONV_CASES = [(1, 1, 16, 8), (3, 5, 7, 9), (4, 4, 1, 1), (2, 3, 20, 4)]


@pytest.mark.parametrize('case', CONV_CASES, ids=str)
def test_conv3x3_patches_equals_xla_values_and_gradients(case):
  H, W, C, O, stride = case
  x, k = _arrays((2, H, W, C), (3, 3, C, O))
  ours = conv.conv3x3(x, k, stride=stride, impl='patches')
  theirs = conv.conv3x3(x, k, stride=stride, impl='xla')
  assert ours.shape == (2, -(-H // stride), -(-W // stride), O)
  assert _relative(ours, theirs) <= RTOL

  def grads(impl):
    return jax.grad(lambda x, k: jnp.sum(jnp.sin(conv.conv3x3(x, k, stride=stride, impl=impl))), (0, 1))(x, k)

  for a, b in zip(grads('patches'), grads('xla')):
    assert _relative(a, b) <= RTOL


@pytest.mark.parametrize('case', DECONV_CASES, ids=str)
def test_conv_transpose_patches_equals_xla_and_nnx_values_and_gradients(case):
  H, W, C, O = case
  x, k = _arrays((2, H, W, C), (4, 4, C, O))
  reference = nnx.ConvTranspose(C, O, kernel_size=(4, 4), strides=(2, 2), padding=((2, 2), (2, 2)), use_bias=False,
                                rngs=nnx.Rngs(0))
  reference.kernel[...] = k
  ours = conv.conv_transpose4x4s2(x, k, impl='patches')
  assert ours.shape == (2, 2 * H, 2 * W, O)
  assert _relative(ours, reference(x)) <= RTOL
  assert _relative(conv.conv_transpose4x4s2(x, k, impl='xla'), reference(x)) <= RTOL

  def grads(impl):
    return jax.grad(lambda x, k: jnp.sum(jnp.sin(conv.conv_transpose4x4s2(x, k, impl=impl))), (0, 1))(x, k)

  for a, b in zip(grads('patches'), grads('xla')):
    assert _relative(a, b) <= RTOL


def test_bfloat16_inputs_give_bfloat16_outputs_close_to_float32():
  x, k = _arrays((2, 6, 6, 16), (3, 3, 16, 16))
  for impl in ('patches', 'xla'):
    half = conv.conv3x3(x.astype(jnp.bfloat16), k.astype(jnp.bfloat16), impl=impl)
    assert half.dtype == jnp.bfloat16
    assert _relative(half.astype(jnp.float32), conv.conv3x3(x, k, impl=impl)) < 2e-2


def test_auto_is_patches_on_cpu_and_bad_names_are_refused():
  assert jax.default_backend() == 'cpu'
  assert conv.resolve_impl('auto') == 'patches'
  assert conv.resolve_impl('xla') == 'xla'
  with pytest.raises(ValueError, match="conv_impl must be one of"):
    conv.resolve_impl('cudnn')
