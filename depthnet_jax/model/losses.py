"""Losses and depth metrics, pure jnp.

Targets are compared with a prediction at the prediction's resolution: the target is downsampled with
`area_downsample`, the equivalent of torch's `interpolate(mode='area')` / `adaptive_avg_pool2d` (output pixel i
averages input pixels floor(i * H / h) .. ceil((i + 1) * H / h) - 1, also when h does not divide H).

Also here: the error by true depth (`depth_bin_sums`, `binned_error_sums`), and the metrics of the authors' later
evaluation (unsupervised-depthnet's test_depth.py: `followup_metric_sums`, prediction upsampled to the ground
truth instead), both used by `depthnet_jax.evaluate`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from depthnet_jax.model.spec import LOSSES  # the one definition, light for train.py's checks

MULTISCALE_WEIGHTS = (0.32, 0.08, 0.02, 0.01, 0.005)


def _pooling_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out_size, in_size] matrix whose row i averages the adaptive-pooling window of output i."""
  m = np.zeros((out_size, in_size), np.float32)
  for i in range(out_size):
    start, end = (i * in_size) // out_size, -(-((i + 1) * in_size) // out_size)
    m[i, start:end] = 1.0 / (end - start)
  return m


def area_downsample(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Adaptive average pooling of `[B, H, W]` to `[B, h, w]` (torch's `interpolate(x, size, mode='area')`)."""
  H, W = x.shape[-2:]
  h, w = size
  if (h, w) == (H, W):
    return x
  if H % h == 0 and W % w == 0:  # equal windows: a reshape-mean, exact like torch's sum / count
    return x.reshape(*x.shape[:-2], h, H // h, w, W // w).mean(axis=(-3, -1))
  ph, pw = jnp.asarray(_pooling_matrix(H, h)), jnp.asarray(_pooling_matrix(W, w))
  # HIGHEST: TPUs otherwise run float32 matmuls in bfloat16, which would round the targets.
  return jnp.einsum('hH,...HW,wW->...hw', ph, x, pw, precision=jax.lax.Precision.HIGHEST)


def _elementwise(kind: str):
  if kind == 'L1':
    return jnp.abs
  if kind == 'MSE':
    return jnp.square
  if kind == 'SmoothL1':  # torch SmoothL1Loss, beta = 1
    return lambda d: jnp.where(jnp.abs(d) < 1.0, 0.5 * jnp.square(d), jnp.abs(d) - 0.5)
  raise ValueError(f'loss must be one of {LOSSES}; got {kind!r}')


def multiscale_loss(predictions: Sequence[jax.Array], target: jax.Array,
                    weights: Sequence[float] = MULTISCALE_WEIGHTS, loss: str = 'L1') -> jax.Array:
  """The original's training loss: sum_k w_k * mean(L(pred_k - area(target, size_k))).

  Args:
    predictions: depth maps `[B, h_k, w_k]`, finest first (DepthNet's train-mode output).
    target: `[B, H, W]` depth in metres.
    weights: one per scale.
    loss: 'L1' (the paper's), 'SmoothL1' or 'MSE'.
  """
  if len(predictions) != len(weights):
    raise ValueError(f'{len(predictions)} predictions but {len(weights)} weights')
  fn = _elementwise(loss)
  total = jnp.zeros((), jnp.float32)
  for pred, w in zip(predictions, weights):
    total = total + w * jnp.mean(fn(pred - area_downsample(target, pred.shape[-2:])))
  return total


def depth_error(pred: jax.Array, target: jax.Array, normalize: bool = False) -> jax.Array:
  """The paper's depth error: mean |pred - area(target)| in metres; normalized: mean |diff| / area(target)."""
  t = area_downsample(target, pred.shape[-2:])
  diff = jnp.abs(pred - t)
  return jnp.mean(diff / t if normalize else diff)


def _evaluated(pred, target, mask, min_depth, max_depth):
  """(the target area-downsampled to the prediction, the boolean `[B, h, w]` of the pixels evaluated: target in
  (min_depth, max_depth] and in `mask`, broadcastable per example `[B]` or per pixel)."""
  t = area_downsample(target, pred.shape[-2:])
  valid = t > min_depth
  if max_depth is not None:
    valid &= t <= max_depth
  if mask is not None:
    mask = jnp.asarray(mask)
    valid &= jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (pred.ndim - mask.ndim)), valid.shape).astype(bool)
  return t, valid


def per_example_metrics(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None, *,
                        min_depth: float = 1e-3, max_depth: float | None = None) -> dict[str, jax.Array]:
  """Depth metrics of each example, `[B]` each, over its valid pixels.

  Valid pixels: `mask` (broadcastable to the prediction `[B, h, w]`, e.g. `[B]` per example or `[B, h, w]`
  per pixel) and `min_depth < area(target) <= max_depth`. The paper's `depth_error` and `normalized_error`
  use the raw prediction; the standard metrics (abs rel, sq rel, RMSE, log RMSE, delta < 1.25^k) clip it to
  `[min_depth, max_depth]` first, as is usual. An example without valid pixels gets 0 for every metric
  (weight it out with `valid_pixels`, also returned).
  """
  t, valid = _evaluated(pred, target, mask, min_depth, max_depth)
  valid = valid.astype(jnp.float32)
  count = jnp.sum(valid, axis=(-2, -1))
  safe_t = jnp.where(valid > 0, t, 1.0)
  clipped = jnp.clip(pred, min_depth, max_depth)

  def mean(x):
    return jnp.sum(jnp.where(valid > 0, x, 0.0), axis=(-2, -1)) / jnp.maximum(count, 1.0)

  diff = pred - t
  ratio = jnp.maximum(clipped / safe_t, safe_t / clipped)
  return {
      'depth_error': mean(jnp.abs(diff)),
      'normalized_error': mean(jnp.abs(diff) / safe_t),
      'abs_rel': mean(jnp.abs(clipped - t) / safe_t),
      'sq_rel': mean(jnp.square(clipped - t) / safe_t),
      'rmse': jnp.sqrt(mean(jnp.square(clipped - t))),
      'rmse_log': jnp.sqrt(mean(jnp.square(jnp.log(clipped) - jnp.log(safe_t)))),
      'delta1': mean((ratio < 1.25).astype(jnp.float32)),
      'delta2': mean((ratio < 1.25 ** 2).astype(jnp.float32)),
      'delta3': mean((ratio < 1.25 ** 3).astype(jnp.float32)),
      'valid_pixels': count,
  }


# The metrics of `depth_metrics`, in the order they are reported.
METRIC_NAMES = ('depth_error', 'normalized_error', 'abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'delta1', 'delta2',
                'delta3')


def depth_metric_sums(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None, *,
                      min_depth: float = 1e-3, max_depth: float | None = None
                      ) -> tuple[dict[str, jax.Array], jax.Array]:
  """({metric: sum over the examples that have valid pixels}, their count): what batches add up to, so that a
  split's metrics are the mean over all its examples whatever the batching (training's evaluation merges them)."""
  per_example = per_example_metrics(pred, target, mask, min_depth=min_depth, max_depth=max_depth)
  weight = (per_example.pop('valid_pixels') > 0).astype(jnp.float32)
  return {k: jnp.sum(per_example[k] * weight) for k in METRIC_NAMES}, jnp.sum(weight)


def depth_metrics(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None, *,
                  min_depth: float = 1e-3, max_depth: float | None = None) -> dict[str, jax.Array]:
  """Depth metrics of a batch: each example's metrics (see `per_example_metrics`) averaged over the examples
  that have valid pixels. RMSE and log RMSE are per image, then averaged (the KITTI/Eigen convention); with
  every pixel valid, `depth_error` and `normalized_error` equal the original's batch means.
  """
  sums, count = depth_metric_sums(pred, target, mask, min_depth=min_depth, max_depth=max_depth)
  n = jnp.maximum(count, 1.0)
  return {k: v / n for k, v in sums.items()}


# --- Error by true depth --------------------------------------------------------------------------------------

# Edges in metres of the true-depth bins of the error-by-depth tables: [0, 10), [10, 20), ..., [90, 100]. A depth
# at or beyond the last edge counts in the last bin, one below the first edge in the first.
DEPTH_BIN_EDGES = tuple(float(x) for x in range(0, 101, 10))


def binned_error_sums(pred: jax.Array, target: jax.Array, valid: jax.Array,
                      edges: Sequence[float] = DEPTH_BIN_EDGES) -> dict[str, jax.Array]:
  """Sums over the valid pixels of each true-depth bin, pooled over every pixel of the batch.

  `pred`, `target` (metres) and `valid` (bool) have the same shape. Returns `[K]` float32 arrays, K =
  len(edges) - 1: 'pixels' (count), 'abs_error' (sum of |pred - target|) and 'rel_error' (sum of
  |pred - target| / target). Bin k holds edges[k] <= target < edges[k + 1] (see DEPTH_BIN_EDGES).
  """
  bins = len(edges) - 1
  index = jnp.searchsorted(jnp.asarray(edges[1:-1], jnp.float32), target, side='right')
  segment = jnp.where(valid, index, bins).reshape(-1)   # invalid pixels go to a bin that is dropped
  safe_t = jnp.where(valid, target, 1.0)
  abs_error = jnp.where(valid, jnp.abs(pred - target), 0.0)

  def total(x):
    return jax.ops.segment_sum(x.reshape(-1).astype(jnp.float32), segment, num_segments=bins + 1)[:bins]

  return {'pixels': total(valid), 'abs_error': total(abs_error), 'rel_error': total(abs_error / safe_t)}


def depth_bin_sums(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None, *,
                   min_depth: float = 1e-3, max_depth: float | None = None,
                   edges: Sequence[float] = DEPTH_BIN_EDGES) -> dict[str, jax.Array]:
  """`binned_error_sums` of the pixels `per_example_metrics` evaluates, with the error of its `depth_error` and
  `normalized_error`: the raw prediction `[B, h, w]` against the area-downsampled target, over the pixels with
  `min_depth < area(target) <= max_depth` of the examples of `mask` (`[B]`, or broadcastable per pixel)."""
  t, valid = _evaluated(pred, target, mask, min_depth, max_depth)
  return binned_error_sums(pred, t, valid, edges)


# --- The authors' later evaluation (unsupervised-depthnet, test_depth.py --gt-type stillbox) -----------------

# The metrics of `followup_metric_sums`, in test_depth.py's order (mean_abs, abs_rel, abs_log, sq_rel, rms,
# log_rms, a1, a2, a3).
FOLLOWUP_METRIC_NAMES = ('mean_abs', 'abs_rel', 'abs_log', 'sq_rel', 'rmse', 'rmse_log', 'delta1', 'delta2',
                         'delta3')
FOLLOWUP_MIN_DEPTH, FOLLOWUP_MAX_DEPTH = 1e-3, 80.0   # test_depth.py's --min-depth and --max-depth defaults
FOLLOWUP_CROP = (0.05, 0.95)                          # stillbox_eval's generate_mask: the central 90 % of each axis


def upsample_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """`[..., h, w]` -> `[..., H, W]`, bilinear with half-pixel centres and edge clamping: torch's
  `interpolate(x, size, mode='bilinear', align_corners=False)`."""
  return jax.image.resize(x, x.shape[:-2] + tuple(size), 'bilinear', antialias=False)


def border_crop(height: int, width: int, crop: tuple[float, float] = FOLLOWUP_CROP) -> np.ndarray:
  """`[H, W]` bool, True on rows int(0.05 H) .. int(0.95 H) - 1 and columns likewise (stillbox_eval's crop)."""
  out = np.zeros((height, width), bool)
  out[int(crop[0] * height):int(crop[1] * height), int(crop[0] * width):int(crop[1] * width)] = True
  return out


def followup_pixels(pred: jax.Array, target: jax.Array, scale: jax.Array | None = None, *,
                    min_depth: float = FOLLOWUP_MIN_DEPTH, max_depth: float = FOLLOWUP_MAX_DEPTH,
                    crop: tuple[float, float] = FOLLOWUP_CROP) -> tuple[jax.Array, jax.Array]:
  """(prediction, valid) at the ground truth's size `[B, H, W]`, as test_depth.py makes them: the prediction
  `[B, h, w]` multiplied by `scale` (`[B]`, real / nominal displacement; None: 1), upsampled bilinearly to
  `target`'s size and clamped to [min_depth, max_depth]; valid where min_depth < target < max_depth (strictly,
  as generate_mask) inside the border crop."""
  if scale is not None:
    pred = pred * jnp.asarray(scale, pred.dtype).reshape(-1, *(1,) * (pred.ndim - 1))
  pred = jnp.clip(upsample_bilinear(pred, target.shape[-2:]), min_depth, max_depth)
  valid = (target > min_depth) & (target < max_depth) & jnp.asarray(border_crop(*target.shape[-2:], crop))
  return pred, valid


def followup_metric_sums(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None,
                         scale: jax.Array | None = None, **options) -> tuple[dict[str, jax.Array], jax.Array]:
  """({metric: sum over the examples of `mask` that have valid pixels}, their count), test_depth.py's
  compute_errors of each image (over its valid pixels, see `followup_pixels`); the split's figures are the sums
  over all examples divided by the count, i.e. per-image metrics averaged over the images, as test_depth.py."""
  pred, valid = followup_pixels(pred, target, scale, **options)
  valid_f = valid.astype(jnp.float32)
  count = jnp.sum(valid_f, axis=(-2, -1))
  gt = jnp.where(valid, target, 1.0)
  pred = jnp.where(valid, pred, 1.0)

  def mean(x):
    return jnp.sum(jnp.where(valid, x, 0.0), axis=(-2, -1)) / jnp.maximum(count, 1.0)

  diff = gt - pred
  log_diff = jnp.log(gt) - jnp.log(pred)
  thresh = jnp.maximum(gt / pred, pred / gt)
  per_example = {
      'mean_abs': mean(jnp.abs(diff)),
      'abs_rel': mean(jnp.abs(diff) / gt),
      'abs_log': mean(jnp.abs(log_diff)),
      'sq_rel': mean(jnp.square(diff) / gt),
      'rmse': jnp.sqrt(mean(jnp.square(diff))),
      'rmse_log': jnp.sqrt(mean(jnp.square(log_diff))),
      'delta1': mean((thresh < 1.25).astype(jnp.float32)),
      'delta2': mean((thresh < 1.25 ** 2).astype(jnp.float32)),
      'delta3': mean((thresh < 1.25 ** 3).astype(jnp.float32)),
  }
  weight = (count > 0).astype(jnp.float32)
  if mask is not None:
    weight = weight * jnp.asarray(mask, jnp.float32).reshape(weight.shape)
  return {k: jnp.sum(per_example[k] * weight) for k in FOLLOWUP_METRIC_NAMES}, jnp.sum(weight)


def followup_bin_sums(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None,
                      scale: jax.Array | None = None, *, edges: Sequence[float] = DEPTH_BIN_EDGES,
                      **options) -> dict[str, jax.Array]:
  """`binned_error_sums` of the pixels `followup_metric_sums` evaluates (at the ground truth's size, after the
  masks and the clamp), over the examples of `mask`."""
  pred, valid = followup_pixels(pred, target, scale, **options)
  if mask is not None:
    valid &= jnp.asarray(mask).reshape(-1, *(1,) * (valid.ndim - 1)) > 0
  return binned_error_sums(pred, target, valid, edges)
