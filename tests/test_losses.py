"""Losses and metrics against torch (the original's loss.py semantics) and a numpy reference of the metrics."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from depthnet_jax.model import losses
from depthnet_jax.model.models import output_sizes


def _rng(seed=0):
  return np.random.default_rng(seed)


@pytest.mark.parametrize('src,dst', [((64, 64), (16, 16)), ((64, 64), (1, 1)), ((37, 53), (10, 14)),
                                     ((37, 53), (2, 2)), ((100, 30), (7, 4)), ((5, 3), (3, 2)),
                                     ((16, 16), (16, 16)), ((8, 8), (3, 5))])
def test_area_downsample_equals_torch_area_interpolation(src, dst):
  x = _rng().uniform(0, 100, size=(3, *src)).astype(np.float32)
  ours = np.asarray(losses.area_downsample(jnp.asarray(x), dst))
  theirs = F.interpolate(torch.from_numpy(x)[:, None], size=dst, mode='area')[:, 0].numpy()
  np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def _torch_multiscale(preds, target, weights, loss):
  """The original loss.py: adaptive_avg_pool2d target, L1Loss / SmoothL1Loss / MSELoss, weighted sum."""
  fn = {'L1': torch.nn.L1Loss(), 'SmoothL1': torch.nn.SmoothL1Loss(), 'MSE': torch.nn.MSELoss()}[loss]
  total = 0
  for d, w in zip(preds, weights):
    scaled = F.adaptive_avg_pool2d(target, d.shape[-2:])
    total += w * fn(d - scaled, d.detach() * 0)
  return total


@pytest.mark.parametrize('loss', losses.LOSSES)
@pytest.mark.parametrize('size', [(64, 64), (37, 53)])
def test_multiscale_loss_equals_the_original(loss, size):
  rng = _rng(1)
  target = rng.uniform(0, 100, size=(4, *size)).astype(np.float32)
  # Predictions near the target (so SmoothL1 sees both of its branches) and far from it.
  preds = [rng.uniform(0, 100, size=(4, h, w)).astype(np.float32) * rng.choice([0.01, 1.0]) for h, w in
           output_sizes(*size)]
  ours = float(losses.multiscale_loss([jnp.asarray(p) for p in preds], jnp.asarray(target), loss=loss))
  theirs = float(_torch_multiscale([torch.from_numpy(p) for p in preds], torch.from_numpy(target),
                                   losses.MULTISCALE_WEIGHTS, loss))
  assert ours == pytest.approx(theirs, rel=1e-6)


def test_smooth_l1_uses_both_branches():
  d = jnp.asarray([-3.0, -0.5, 0.0, 0.4, 2.0])
  expected = torch.nn.functional.smooth_l1_loss(torch.tensor(np.asarray(d)), torch.zeros(5), reduction='none')
  np.testing.assert_allclose(np.asarray(losses._elementwise('SmoothL1')(d)), expected.numpy(), rtol=1e-7)


def test_multiscale_loss_checks_weights_and_kind():
  with pytest.raises(ValueError, match='2 predictions but 5 weights'):
    losses.multiscale_loss([jnp.zeros((1, 2, 2))] * 2, jnp.zeros((1, 8, 8)))
  with pytest.raises(ValueError, match='loss must be one of'):
    losses.multiscale_loss([jnp.zeros((1, 2, 2))], jnp.zeros((1, 8, 8)), weights=(1.0,), loss='L2')


@pytest.mark.parametrize('normalize', [False, True])
def test_depth_error_equals_the_original(normalize):
  rng = _rng(2)
  target = rng.uniform(1, 100, size=(4, 64, 64)).astype(np.float32)
  pred = rng.uniform(1, 100, size=(4, 16, 16)).astype(np.float32)
  ours = float(losses.depth_error(jnp.asarray(pred), jnp.asarray(target), normalize=normalize))
  scaled = F.adaptive_avg_pool2d(torch.from_numpy(target), (16, 16))
  diff = torch.from_numpy(pred) - scaled
  if normalize:
    diff = diff / scaled
  theirs = float(torch.nn.L1Loss()(diff, diff * 0))
  assert ours == pytest.approx(theirs, rel=1e-6)


def _numpy_metrics(pred, gt, min_depth=1e-3, max_depth=None):
  """The usual per-image metrics (Eigen et al.; SfMLearner's compute_errors), with the paper's two errors."""
  valid = gt > min_depth
  if max_depth is not None:
    valid &= gt <= max_depth
  p, g = pred[valid].astype(np.float64), gt[valid].astype(np.float64)
  raw = p.copy()
  p = np.clip(p, min_depth, max_depth)
  ratio = np.maximum(p / g, g / p)
  return {
      'depth_error': np.mean(np.abs(raw - g)), 'normalized_error': np.mean(np.abs(raw - g) / g),
      'abs_rel': np.mean(np.abs(p - g) / g), 'sq_rel': np.mean((p - g) ** 2 / g),
      'rmse': np.sqrt(np.mean((p - g) ** 2)), 'rmse_log': np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2)),
      'delta1': np.mean(ratio < 1.25), 'delta2': np.mean(ratio < 1.25 ** 2), 'delta3': np.mean(ratio < 1.25 ** 3),
  }


def test_standard_metrics_equal_a_numpy_reference():
  rng = _rng(3)
  gt = rng.uniform(0.5, 100, size=(5, 16, 16)).astype(np.float32)
  gt[0, :4] = 0.0  # invalid ground truth is left out
  pred = (gt * rng.uniform(0.6, 1.5, size=gt.shape)).astype(np.float32)
  pred[1, 0, 0] = -3.0  # a raw prediction below min_depth: clipped for the standard metrics only
  ours = losses.depth_metrics(jnp.asarray(pred), jnp.asarray(gt), max_depth=80.0)
  per_image = [_numpy_metrics(pred[i], gt[i], max_depth=80.0) for i in range(5)]
  assert set(ours) == set(losses.METRIC_NAMES)
  for name in losses.METRIC_NAMES:
    assert float(ours[name]) == pytest.approx(np.mean([m[name] for m in per_image]), rel=1e-5), name


def test_metrics_ignore_masked_and_padded_examples():
  rng = _rng(4)
  gt = rng.uniform(1, 100, size=(4, 8, 8)).astype(np.float32)
  pred = (gt + rng.normal(0, 5, size=gt.shape)).astype(np.float32)
  # An evaluation batch padded with two all-zero examples, masked out.
  padded_gt = np.concatenate([gt, np.zeros_like(gt[:2])])
  padded_pred = np.concatenate([pred, np.zeros_like(pred[:2])])
  mask = np.array([1, 1, 1, 1, 0, 0], np.float32)
  full = losses.depth_metrics(jnp.asarray(pred), jnp.asarray(gt))
  padded = losses.depth_metrics(jnp.asarray(padded_pred), jnp.asarray(padded_gt), jnp.asarray(mask))
  for name in losses.METRIC_NAMES:
    assert float(padded[name]) == pytest.approx(float(full[name]), rel=1e-6), name
  per_example = losses.per_example_metrics(jnp.asarray(padded_pred), jnp.asarray(padded_gt), jnp.asarray(mask))
  assert np.all(np.isfinite(np.asarray(per_example['rmse_log'])))
  np.testing.assert_array_equal(np.asarray(per_example['valid_pixels']), [64, 64, 64, 64, 0, 0])
  # A pixel mask at the prediction's resolution.
  pixel_mask = np.ones_like(gt)
  pixel_mask[:, :, :4] = 0
  half = losses.depth_metrics(jnp.asarray(pred), jnp.asarray(gt), jnp.asarray(pixel_mask))
  expected = np.mean([_numpy_metrics(pred[i][:, 4:], gt[i][:, 4:])['rmse'] for i in range(4)])
  assert float(half['rmse']) == pytest.approx(expected, rel=1e-5)


def test_metrics_compare_at_the_prediction_resolution():
  gt = np.full((2, 64, 64), 20.0, np.float32)
  gt[:, :, 32:] = 40.0
  pred = np.full((2, 16, 16), 30.0, np.float32)
  m = losses.depth_metrics(jnp.asarray(pred), jnp.asarray(gt))
  assert float(m['depth_error']) == pytest.approx(10.0)
  assert float(m['normalized_error']) == pytest.approx((10 / 20 + 10 / 40) / 2)
