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

from depthnet_jax.model import conv
from depthnet_jax.model.spec import COMPUTE_DTYPES, ModelSpec

# torch.nn.BatchNorm2d(eps=1e-3) with torch's default momentum: running = 0.9 * running + 0.1 * batch.
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.1

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


def _check_compute_dtype(compute_dtype: str) -> str:
  if compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f'compute_dtype must be one of {COMPUTE_DTYPES}; got {compute_dtype!r}')
  return compute_dtype


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
    dtype = x.dtype  # statistics and normalisation in float32 whatever the compute dtype
    x = x.astype(jnp.float32)
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
    # One multiply-add per value, as torch's CPU kernel does: x * a + (bias - mean * a).
    a = jax.lax.rsqrt(var + self.epsilon) * self.scale[...]
    return (x * a + (self.bias[...] - mean * a)).astype(dtype)


class Conv3x3(nnx.Module):
  """3x3 convolution, padding 1, stride 1 or 2, with `nnx.Conv`'s parameters (`kernel` HWIO, optional `bias`)
  drawn from the same RNG stream; computed by `conv.conv3x3` with `conv_impl`, in the input's dtype."""

  def __init__(self, in_features: int, out_features: int, *, stride: int = 1, use_bias: bool, rngs: nnx.Rngs):
    self.stride = stride
    self.conv_impl = 'auto'  # DepthNet.set_execution sets it
    self.kernel = nnx.Param(_xavier_normal(rngs.params(), (3, 3, in_features, out_features), jnp.float32))
    self.bias = nnx.Param(_zeros(rngs.params(), (out_features,), jnp.float32)) if use_bias else None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = conv.conv3x3(x, self.kernel[...].astype(x.dtype), stride=self.stride, impl=self.conv_impl)
    return y if self.bias is None else y + self.bias[...].astype(y.dtype)


class ConvTranspose4x4(nnx.Module):
  """torch's ConvTranspose2d(k=4, s=2, p=1), which doubles H and W, with `nnx.ConvTranspose`'s parameters.

  As a Flax (non-transposed-kernel) ConvTranspose it is a stride-2 dilated input padded by k - 1 - p = 2 on each
  side, with the torch kernel flipped spatially (torch_import does the flip). Computed by
  `conv.conv_transpose4x4s2` with `conv_impl`, in the input's dtype.
  """

  def __init__(self, in_features: int, out_features: int, *, use_bias: bool, rngs: nnx.Rngs):
    self.conv_impl = 'auto'  # DepthNet.set_execution sets it
    self.kernel = nnx.Param(_xavier_normal(rngs.params(), (4, 4, in_features, out_features), jnp.float32))
    self.bias = nnx.Param(_zeros(rngs.params(), (out_features,), jnp.float32)) if use_bias else None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = conv.conv_transpose4x4s2(x, self.kernel[...].astype(x.dtype), impl=self.conv_impl)
    return y if self.bias is None else y + self.bias[...].astype(y.dtype)


class ConvBlock(nnx.Module):
  """Conv 3x3 (padding 1) -> [BatchNorm] -> ReLU. The conv has a bias only without BN."""

  def __init__(self, in_features: int, out_features: int, *, stride: int = 1, batch_norm: bool,
               rngs: nnx.Rngs):
    self.conv = Conv3x3(in_features, out_features, stride=stride, use_bias=not batch_norm, rngs=rngs)
    self.bn = BatchNorm(out_features) if batch_norm else None

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv(x)
    if self.bn is not None:
      x = self.bn(x)
    return jax.nn.relu(x)


class DeconvBlock(nnx.Module):
  """ConvTranspose 4x4 stride 2 (with bias) -> Conv 3x3 -> [BatchNorm] -> ReLU."""

  def __init__(self, in_features: int, out_features: int, *, batch_norm: bool, rngs: nnx.Rngs):
    self.up = ConvTranspose4x4(in_features, out_features, use_bias=True, rngs=rngs)
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
    spec: the model's options (`ModelSpec`: batch_norm, depth_activation, clamp, with_confidence); or give them
      as keywords, `DepthNet(batch_norm=False, rngs=...)`. With with_confidence, the original declares the
      option but cannot run it (its 1-channel upsampling receives two). Here channel 0 is the depth, which
      alone is upsampled to the next scale (so the decoder's channel counts are the original's), and each
      output gets a trailing axis of 2: `[..., 0]` the post-processed depth, `[..., 1]` the raw confidence.
    rngs: initialisation RNG: Xavier-normal weights, zero biases, BN scale 1 and bias 0.
    conv_impl: how the convolutions are computed (`conv.CONV_IMPLS`): 'auto' (patches + matrix product on CPU,
      XLA's convolution on GPU/TPU), 'xla' or 'patches'. Same parameters and results either way; not a model
      option (not stored with checkpoints). `set_execution` changes it on a built model.
    compute_dtype: 'float32' or 'bfloat16': the dtype of the convolutions and activations. Parameters and
      BatchNorm statistics stay float32 (cast at use); BatchNorm's batch statistics are computed in float32
      and the outputs are returned in float32.

  Call on `[B, H, W, 6]` float32 (two frames normalised with `(x / 255 - 0.5) / 0.2`, concatenated on the
  channel axis). In train mode (`model.train()`, the state after construction, as in torch) it returns a list
  of five `[B, h_k, w_k]` depth maps, finest (`ceil(H / 4)` x `ceil(W / 4)`) first; in eval mode
  (`model.eval()`) the finest only.
  """

  def __init__(self, spec: ModelSpec | None = None, *, rngs: nnx.Rngs, conv_impl: str = 'auto',
               compute_dtype: str = 'float32', **options):
    if spec is not None and options:
      raise TypeError('DepthNet takes a ModelSpec or its fields as keywords, not both')
    self.spec = spec if spec is not None else ModelSpec(**options)
    batch_norm, with_confidence = self.spec.batch_norm, self.spec.with_confidence
    # Module.eval() sets `deterministic` True and Module.train() sets it False, on this module as on any.
    self.deterministic = False

    for name, cin, cout, stride in ENCODER:
      setattr(self, name, ConvBlock(cin, cout, stride=stride, batch_norm=batch_norm, rngs=rngs))
    for k, (cin, cout) in DECONV.items():
      setattr(self, f'deconv{k}', DeconvBlock(cin, cout, batch_norm=batch_norm, rngs=rngs))
    out_channels = 2 if with_confidence else 1
    for k, cin in PREDICT_IN.items():
      setattr(self, f'predict_depth{k}', Conv3x3(cin, out_channels, use_bias=True, rngs=rngs))
    for k in (6, 5, 4, 3):
      setattr(self, f'upsampled_depth{k}_to_{k - 1}', ConvTranspose4x4(1, 1, use_bias=False, rngs=rngs))
    self.compute_dtype = 'float32'
    self.set_execution(conv_impl=conv_impl, compute_dtype=compute_dtype)

  def set_execution(self, *, conv_impl: str | None = None, compute_dtype: str | None = None) -> None:
    """Changes how the model computes (not what): the convolution implementation and/or the compute dtype."""
    if conv_impl is not None:
      conv.resolve_impl(conv_impl)
      self.set_attributes(conv_impl=conv_impl)
    if compute_dtype is not None:
      self.compute_dtype = _check_compute_dtype(compute_dtype)

  def options(self) -> dict:
    """The model's options as a dict (the fields of `self.spec`), as stored beside checkpoints."""
    return self.spec.to_dict()

  def _post_process(self, raw: jax.Array) -> jax.Array:
    raw = raw.astype(jnp.float32)
    depth = raw[..., 0]
    if self.spec.depth_activation == 'elu':
      depth = jax.nn.elu(depth) + 1.0
    if self.spec.clamp:
      depth = jnp.clip(depth, *CLAMP_RANGE)
    if self.spec.with_confidence:
      return jnp.stack([depth, raw[..., 1]], axis=-1)
    return depth

  def __call__(self, x: jax.Array) -> list[jax.Array] | jax.Array:
    if x.ndim != 4 or x.shape[-1] != 6:
      raise ValueError(f'DepthNet expects an image pair of shape [B, H, W, 6] (NHWC); got {x.shape}')
    x = x.astype(self.compute_dtype)
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


def abstract_model(spec: ModelSpec) -> DepthNet:
  """A `DepthNet` of `spec` whose arrays are shapes only (no initialisation is computed)."""
  return nnx.eval_shape(lambda: DepthNet(spec, rngs=nnx.Rngs(0)))


class ConstantDepth(nnx.Module):
  """The constant-depth baseline as a model: `depth` metres at every pixel of DepthNet's finest output size. Split
  it like a DepthNet (`nnx.split(model, nnx.Param, nnx.BatchStat)`) and `evaluate.evaluate`, the one evaluation,
  gives the baseline's figures under either protocol (the follow-up's d / nominal factor scales it too, as it
  would a network's output); the demo's and reference.py's depths are `trainer.training_depths`' mean and median.
  The depth is a parameter, so every constant shares one compiled evaluation."""

  def __init__(self, depth: float):
    self.depth = nnx.Param(jnp.asarray(depth, jnp.float32))

  def __call__(self, image_pair: jax.Array) -> jax.Array:
    h, w = output_sizes(*image_pair.shape[1:3])[0]
    return jnp.full((image_pair.shape[0], h, w), self.depth.value, jnp.float32)


def depth_of(prediction: jax.Array) -> jax.Array:
  """The depth of an output: `[..., 0]` of a with_confidence model's `[B, h, w, 2]`, else the output itself."""
  return prediction[..., 0] if prediction.ndim == 4 else prediction


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
