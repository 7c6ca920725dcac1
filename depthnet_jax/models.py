"""DepthNet (Pinard et al., ISPRS Annals 2017) in Flax NNX, channels last.

The network maps two RGB frames of a translating camera, concatenated to `[B, H, W, 6]`, to depth in metres.
It is the original's FlowNetS-like encoder-decoder, block for block and option for option, so that the
published PyTorch weights load into it unchanged (see `depthnet_jax.torch_import`):

- encoder: ten 3x3 convs (six of them stride 2), each `Conv -> [BN] -> ReLU`;
- decoder, scales 5 to 2: `ConvTranspose 4x4/2 -> Conv 3x3 -> [BN] -> ReLU`, whose output is concatenated with
  the encoder feature of the same scale and the upsampled raw prediction of the coarser scale, each cropped to
  the encoder feature's size (this is what makes odd and rectangular inputs work);
- five 3x3 prediction heads; the finest is 1/4 of the input size.

`model.train()` makes a call return the five scales, finest first; `model.eval()` the finest only (and
BatchNorm then uses its running statistics), as the original's `self.training` switch does.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

# torch.nn.BatchNorm2d(eps=1e-3) with torch's default momentum: running = 0.9 * running + 0.1 * batch.
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.1

DEPTH_ACTIVATIONS = (None, 'elu')
CLAMP_RANGE = (10.0, 60.0)
NUM_SCALES = 5

# torch.nn.init.xavier_normal_ draws from an untruncated normal; Flax's xavier_normal truncates.
_xavier_normal = nnx.initializers.variance_scaling(1.0, 'fan_avg', 'normal')
_zeros = nnx.initializers.zeros_init()

# (name, in_channels, out_channels, stride) of the encoder, in the original's names.
ENCODER = (
    ('conv1', 6, 32, 2),
    ('conv2', 32, 64, 2),
    ('conv3', 64, 128, 2),
    ('conv3_1', 128, 128, 1),
    ('conv4', 128, 256, 2),
    ('conv4_1', 256, 256, 1),
    ('conv5', 256, 256, 2),
    ('conv5_1', 256, 256, 1),
    ('conv6', 256, 512, 2),
    ('conv6_1', 512, 512, 1),
)
# Decoder scale k: deconv{k} in/out channels; predict_depth{k} reads the concatenation of scale k.
DECONV = {5: (512, 256), 4: (513, 128), 3: (385, 64), 2: (193, 32)}
PREDICT_IN = {6: 512, 5: 513, 4: 385, 3: 193, 2: 97}


def normalize_depth_activation(depth_activation: str | None) -> str | None:
  """Maps the spellings a checkpoint or config may use ('elu', 'ELU', 'none', None) to None or 'elu'."""
  if depth_activation is None or str(depth_activation).lower() in ('none', ''):
    return None
  if str(depth_activation).lower() == 'elu':
    return 'elu'
  raise ValueError(f"depth_activation must be one of None, 'elu'; got {depth_activation!r}")


class BatchNorm(nnx.Module):
  """`torch.nn.BatchNorm2d` semantics over the last axis.

  Training normalises with the biased batch variance and tracks the unbiased one, as torch does (Flax's
  BatchNorm tracks the biased one), so running statistics stay those of the original. Under `jax.jit` with
  a batch sharded over devices the reductions are global, i.e. synchronised BatchNorm.
  """

  def __init__(self, num_features: int, *, epsilon: float = BN_EPSILON, momentum: float = BN_MOMENTUM):
    self.num_features = num_features
    self.epsilon = epsilon
    self.momentum = momentum
    self.use_running_average = False  # set by Module.train() / Module.eval()
    self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
    self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
    self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.use_running_average:
      mean, var = self.mean[...], self.var[...]
    else:
      axes = tuple(range(x.ndim - 1))
      n = x.size // x.shape[-1]
      if n < 2:
        # torch raises here too: one value per channel has no variance to normalise by.
        raise ValueError(
            f'BatchNorm in training mode needs more than one value per channel; got an input of shape '
            f'{x.shape}. Use a batch of at least 2, or call model.eval().')
      mean = jnp.mean(x, axis=axes)
      var = jnp.mean(jnp.square(x - mean), axis=axes)
      m = self.momentum
      self.mean[...] = (1 - m) * self.mean[...] + m * jax.lax.stop_gradient(mean)
      self.var[...] = (1 - m) * self.var[...] + m * jax.lax.stop_gradient(var) * (n / (n - 1))
    return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * self.scale[...] + self.bias[...]


class ConvBlock(nnx.Module):
  """Conv 3x3 (padding 1) -> [BatchNorm] -> ReLU. The conv has a bias only without BN."""

  def __init__(self, in_features: int, out_features: int, *, stride: int = 1, batch_norm: bool,
               rngs: nnx.Rngs):
    self.conv = nnx.Conv(in_features, out_features, kernel_size=(3, 3), strides=(stride, stride),
                         padding=((1, 1), (1, 1)), use_bias=not batch_norm, kernel_init=_xavier_normal,
                         bias_init=_zeros, rngs=rngs)
    self.bn = BatchNorm(out_features) if batch_norm else None

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv(x)
    if self.bn is not None:
      x = self.bn(x)
    return jax.nn.relu(x)


def _conv_transpose(in_features: int, out_features: int, *, use_bias: bool, rngs: nnx.Rngs) -> nnx.ConvTranspose:
  # torch ConvTranspose2d(k=4, s=2, p=1) doubles H and W. As a Flax (non-transposed-kernel) ConvTranspose that
  # is a stride-2 dilated input padded by k - 1 - p = 2 on each side, with the torch kernel flipped spatially
  # (torch_import does the flip).
  return nnx.ConvTranspose(in_features, out_features, kernel_size=(4, 4), strides=(2, 2),
                           padding=((2, 2), (2, 2)), use_bias=use_bias, kernel_init=_xavier_normal,
                           bias_init=_zeros, rngs=rngs)


class DeconvBlock(nnx.Module):
  """ConvTranspose 4x4 stride 2 (with bias) -> Conv 3x3 -> [BatchNorm] -> ReLU."""

  def __init__(self, in_features: int, out_features: int, *, batch_norm: bool, rngs: nnx.Rngs):
    self.up = _conv_transpose(in_features, out_features, use_bias=True, rngs=rngs)
    self.block = ConvBlock(out_features, out_features, batch_norm=batch_norm, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.block(self.up(x))


def _crop_concat(conv_out: jax.Array, deconv_out: jax.Array, depth_up: jax.Array) -> jax.Array:
  """The original's adaptative_cat: crop the upsampled maps to the encoder map's size, then concatenate."""
  h, w = conv_out.shape[1:3]
  return jnp.concatenate([conv_out, deconv_out[:, :h, :w], depth_up[:, :h, :w]], axis=-1)


class DepthNet(nnx.Module):
  """DepthNet with every option of the original.

  Args:
    batch_norm: BatchNorm after every conv of the encoder and decoder (the published weights use it).
    depth_activation: None (raw output) or 'elu', i.e. `elu(x) + 1` (the published weights use it).
    clamp: clamp the depth to [10, 60] metres (the multi-range paper's option).
    with_confidence: prediction heads with two channels. The original declares this option but cannot run
      it (its 1-channel upsampling receives two). Here channel 0 is the depth, which alone is upsampled to
      the next scale (so the decoder's channel counts are the original's), and each output gets a trailing
      axis of 2: `[..., 0]` the post-processed depth, `[..., 1]` the raw confidence.
    rngs: initialisation RNG: Xavier-normal weights, zero biases, BN scale 1 and bias 0.

  Call on `[B, H, W, 6]` float32 (two frames normalised with `(x / 255 - 0.5) / 0.2`, concatenated on the
  channel axis). In train mode (`model.train()`, the state after construction, as in torch) it returns a list
  of five `[B, h_k, w_k]` depth maps, finest (`ceil(H / 4)` x `ceil(W / 4)`) first; in eval mode
  (`model.eval()`) the finest only.
  """

  def __init__(self, *, batch_norm: bool = True, depth_activation: str | None = 'elu', clamp: bool = False,
               with_confidence: bool = False, rngs: nnx.Rngs):
    self.batch_norm = bool(batch_norm)
    self.depth_activation = normalize_depth_activation(depth_activation)
    self.clamp = bool(clamp)
    self.with_confidence = bool(with_confidence)
    # Module.eval() sets `deterministic` True and Module.train() sets it False, on this module as on any.
    self.deterministic = False

    for name, cin, cout, stride in ENCODER:
      setattr(self, name, ConvBlock(cin, cout, stride=stride, batch_norm=batch_norm, rngs=rngs))
    for k, (cin, cout) in DECONV.items():
      setattr(self, f'deconv{k}', DeconvBlock(cin, cout, batch_norm=batch_norm, rngs=rngs))
    out_channels = 2 if with_confidence else 1
    for k, cin in PREDICT_IN.items():
      setattr(self, f'predict_depth{k}',
              nnx.Conv(cin, out_channels, kernel_size=(3, 3), padding=((1, 1), (1, 1)), use_bias=True,
                       kernel_init=_xavier_normal, bias_init=_zeros, rngs=rngs))
    for k in (6, 5, 4, 3):
      setattr(self, f'upsampled_depth{k}_to_{k - 1}', _conv_transpose(1, 1, use_bias=False, rngs=rngs))

  def options(self) -> dict:
    """The constructor options, as stored beside checkpoints."""
    return dict(batch_norm=self.batch_norm, depth_activation=self.depth_activation, clamp=self.clamp,
                with_confidence=self.with_confidence)

  def _post_process(self, raw: jax.Array) -> jax.Array:
    depth = raw[..., 0]
    if self.depth_activation == 'elu':
      depth = jax.nn.elu(depth) + 1.0
    if self.clamp:
      depth = jnp.clip(depth, *CLAMP_RANGE)
    if self.with_confidence:
      return jnp.stack([depth, raw[..., 1]], axis=-1)
    return depth

  def __call__(self, x: jax.Array) -> list[jax.Array] | jax.Array:
    if x.ndim != 4 or x.shape[-1] != 6:
      raise ValueError(f'DepthNet expects an image pair of shape [B, H, W, 6] (NHWC); got {x.shape}')
    out_conv2 = self.conv2(self.conv1(x))
    out_conv3 = self.conv3_1(self.conv3(out_conv2))
    out_conv4 = self.conv4_1(self.conv4(out_conv3))
    out_conv5 = self.conv5_1(self.conv5(out_conv4))
    out_conv6 = self.conv6_1(self.conv6(out_conv5))
    skips = {5: out_conv5, 4: out_conv4, 3: out_conv3, 2: out_conv2}

    raw = self.predict_depth6(out_conv6)  # [B, h6, w6, 1 or 2]
    features = out_conv6
    raw_outputs = [raw]
    for k in (5, 4, 3, 2):
      depth_up = getattr(self, f'upsampled_depth{k + 1}_to_{k}')(raw[..., :1])
      deconv_out = getattr(self, f'deconv{k}')(features)
      features = _crop_concat(skips[k], deconv_out, depth_up)
      raw = getattr(self, f'predict_depth{k}')(features)
      raw_outputs.append(raw)

    if self.deterministic:
      return self._post_process(raw_outputs[-1])
    return [self._post_process(r) for r in reversed(raw_outputs)]


def count_params(model: nnx.Module) -> int:
  """Number of trainable parameters (torch's `sum(p.numel() for p in model.parameters())`)."""
  return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def output_sizes(height: int, width: int) -> Sequence[tuple[int, int]]:
  """The (h, w) of the five outputs for an input of `height` x `width`, finest first."""
  sizes = []
  h, w = height, width
  for _ in range(6):  # six stride-2 convs; outputs live at strides 4 .. 64
    h, w = -(-h // 2), -(-w // 2)
    sizes.append((h, w))
  return sizes[1:]
