"""DepthNet's two convolutions, each computed two ways: XLA's own convolution and patches + one matrix product.

Both ways take the same parameters (kernels HWIO, as `nnx.Conv` / `nnx.ConvTranspose` store them), so a model
switches between them without touching its weights, its checkpoints or the PyTorch import:

- `'xla'`: `lax.conv_general_dilated` / `lax.conv_transpose`, exactly what `nnx.Conv` and `nnx.ConvTranspose`
  call. cuDNN on GPUs and the MXU on TPUs are at home here.
- `'patches'`: the convolution as a matrix product. XLA:CPU's convolution emitter is slow on DepthNet's small
  maps with many channels (2x2 and 1x1 maps of 256 to 512 channels at 64x64 inputs); its matrix product is not.
  - 3x3, padding 1, stride s (`conv3x3`): the nine shifted (strided) views of the padded input, concatenated on
    the channel axis, `[B, h, w, 9 C]`, times the kernel reshaped to `[9 C, O]` (im2col). When the output has
    fewer channels than the input (the prediction heads: 97-513 in, 1-2 out) and the stride is 1, the product
    comes first instead, `[B, H, W, C] x [C, 9 O]`, and the nine shifted output maps are summed (col2im): it
    moves 9 O instead of 9 C values per pixel.
  - 4x4 transposed, stride 2 (`conv_transpose4x4s2`, torch's `ConvTranspose2d(4, stride=2, padding=1)`): each
    of the four output phases (even/odd row x even/odd column) is a 2x2 convolution of the input with the
    kernel's taps of that phase (the sub-pixel form). Computed product first: `[B, H, W, C] x [C, 16 O]`, then
    each phase sums its four shifted taps, and the phases are interleaved. No multiplication by the zeros a
    dilated input holds, and 16 O values per pixel moved (DepthNet's have O < C).

`'auto'` picks `'patches'` on CPU and `'xla'` elsewhere. Both ways accumulate in float32 for float32 inputs and
agree to rounding (tests/test_parity.py runs the PyTorch parity on both).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from depthnet_jax.model.spec import CONV_IMPLS  # the one definition, light for train.py's checks

_DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')


def resolve_impl(impl: str) -> str:
  """'auto' -> 'patches' on the CPU backend, 'xla' on GPU/TPU; 'xla' and 'patches' as given."""
  if impl not in CONV_IMPLS:
    raise ValueError(f'conv_impl must be one of {CONV_IMPLS}; got {impl!r}')
  if impl == 'auto':
    return 'patches' if jax.default_backend() == 'cpu' else 'xla'
  return impl


def _dot(x: jax.Array, w: jax.Array) -> jax.Array:
  """`[..., K] x [K, N] -> [..., N]`, accumulating in float32 and returning x's dtype."""
  out = lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
  return out.astype(x.dtype)


# Shifted copies of feature maps, the data movement of both convolutions: `_gather` lays shifted copies of maps
# side by side on the channel axis (im2col), `_scatter_add` sums shifted channel blocks back into maps (col2im).
# Each is the other's transpose, and each is the other's gradient (a custom VJP): autodiff of the slicing would
# pad every block to the full output and add the pads, several times slower on XLA:CPU.
# A spec is a tuple of (map g, dy, dx) per channel block t, |dy|, |dx| <= 1; the maps are [B, H, W, C].


def _shifted(padded: jax.Array, dy: int, dx: int, H: int, W: int) -> jax.Array:
  """x[i + dy, j + dx] (zero outside) of x padded by 1: `padded[:, 1 + dy : 1 + dy + H, ...]`."""
  return padded[:, 1 + dy:1 + dy + H, 1 + dx:1 + dx + W]


def _pad1(x: jax.Array) -> jax.Array:
  return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _gather(maps: tuple[jax.Array, ...], spec) -> jax.Array:
  """Block t of the result is `maps[g_t][i + dy_t, j + dx_t]`: `[B, H, W, len(spec) C]`."""
  padded = [_pad1(m) for m in maps]
  H, W = maps[0].shape[1:3]
  return jnp.concatenate([_shifted(padded[g], dy, dx, H, W) for g, dy, dx in spec], axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _scatter_add(blocks: jax.Array, spec) -> tuple[jax.Array, ...]:
  """Map g of the result is the sum over its blocks t of `blocks_t[i - dy_t, j - dx_t]`: the transpose of `_gather`."""
  H, W = blocks.shape[1:3]
  C = blocks.shape[-1] // len(spec)
  padded = _pad1(blocks)
  maps = [None] * (1 + max(g for g, _, _ in spec))
  for t, (g, dy, dx) in enumerate(spec):
    part = _shifted(padded[..., t * C:(t + 1) * C], -dy, -dx, H, W)
    maps[g] = part if maps[g] is None else maps[g] + part
  return tuple(maps)


_gather.defvjp(lambda maps, spec: (_gather(maps, spec), None), lambda spec, _, g: (_scatter_add(g, spec),))
_scatter_add.defvjp(lambda blocks, spec: (_scatter_add(blocks, spec), None), lambda spec, _, g: (_gather(g, spec),))

# 3x3, padding 1: patch block (ky, kx) is the input shifted by (ky - 1, kx - 1), built as the three column shifts,
# then the three row shifts of those (6 shifted copies instead of 9: the eval forward at 64x64 compiled in 1.8
# instead of 2.1 s on XLA:CPU, the same run time).
# Product first, the output sums block (ky, kx) of the product shifted by (1 - ky, 1 - kx).
_COLUMN_SPEC = tuple((0, 0, kx - 1) for kx in range(3))
_ROW_SPEC = tuple((0, ky - 1, 0) for ky in range(3))
_CONV_OUT_SPEC = tuple((0, 1 - ky, 1 - kx) for ky in range(3) for kx in range(3))
# 4x4 transposed, stride 2: output phase (a, b) (row 2m + a, column 2n + b) sums the products of kernel taps
# (2r + a, 2c + b), r, c in {0, 1}, with input pixel (m + a + r - 1, n + b + c - 1). Blocks in tap order (ky, kx).
_DECONV_SPEC = tuple((2 * (ky % 2) + kx % 2, -(ky % 2 + ky // 2 - 1), -(kx % 2 + kx // 2 - 1))
                     for ky in range(4) for kx in range(4))


def conv3x3(x: jax.Array, kernel: jax.Array, *, stride: int = 1, impl: str = 'auto') -> jax.Array:
  """3x3 convolution with padding 1: `[B, H, W, C]` and HWIO `[3, 3, C, O]` -> `[B, ceil(H/s), ceil(W/s), O]`."""
  impl = resolve_impl(impl)
  if impl == 'xla':
    return lax.conv_general_dilated(x, kernel, (stride, stride), ((1, 1), (1, 1)),
                                    dimension_numbers=_DIMENSIONS)
  _, H, W, C = x.shape
  O = kernel.shape[-1]
  if stride == 1 and O < C:  # product first, then the nine shifted outputs summed (col2im)
    y = _dot(x, kernel.transpose(2, 0, 1, 3).reshape(C, 9 * O))  # [B, H, W, 9 O], blocks (ky, kx)
    return _scatter_add(y, _CONV_OUT_SPEC)[0]  # out[i, j] = sum of y_(ky, kx)[i + ky - 1, j + kx - 1]
  if stride == 1:  # the three column shifts, then the three row shifts of those: blocks (ky, kx) as in HWIO
    patches = _gather((_gather((x,), _COLUMN_SPEC),), _ROW_SPEC)  # [B, H, W, 3 x 3 C]
    return _dot(patches, kernel.reshape(9 * C, O))
  h, w = -(-H // stride), -(-W // stride)
  padded = _pad1(x)
  taps = [padded[:, dy:dy + stride * (h - 1) + 1:stride, dx:dx + stride * (w - 1) + 1:stride]
          for dy in range(3) for dx in range(3)]
  return _dot(jnp.concatenate(taps, axis=-1), kernel.reshape(9 * C, O))  # [B, h, w, 9 C] x [9 C, O]


def conv_transpose4x4s2(x: jax.Array, kernel: jax.Array, *, impl: str = 'auto') -> jax.Array:
  """`nnx.ConvTranspose(kernel_size=4, strides=2, padding=2)`: `[B, H, W, C]`, `[4, 4, C, O]` -> `[B, 2H, 2W, O]`.

  (torch's ConvTranspose2d(4, 2, padding=1) with its kernel flipped spatially; see torch_import.)
  """
  impl = resolve_impl(impl)
  if impl == 'xla':
    return lax.conv_transpose(x, kernel, (2, 2), ((2, 2), (2, 2)), dimension_numbers=_DIMENSIONS)
  B, H, W, C = x.shape
  O = kernel.shape[-1]
  # Output row 2m + a reads input rows m + a + r - 1 (r = 0, 1) with kernel row 2r + a; columns alike. The product
  # comes first (DepthNet's transposed convs have fewer output than input channels): every input pixel times all
  # sixteen taps, [B, H, W, 16 O], then each phase sums its four shifted taps.
  taps = kernel.transpose(2, 0, 1, 3).reshape(C, 16 * O)  # columns (ky, kx, o)
  y = x * taps[0] if C == 1 else _dot(x, taps)  # C == 1: the depth upsamplings, a broadcast multiply
  phases = jnp.stack(_scatter_add(y, _DECONV_SPEC))  # [4 (a, b), B, H, W, O]
  phases = phases.reshape(2, 2, B, H, W, O).transpose(2, 3, 0, 4, 1, 5)  # [B, H, a, W, b, O]
  return phases.reshape(B, 2 * H, 2 * W, O)
