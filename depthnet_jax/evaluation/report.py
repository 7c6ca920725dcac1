"""What an evaluation found (`Evaluation`) and how it is reported: the metrics and error-by-depth tables, the scale
line, the text `python -m depthnet_jax.evaluate` prints and its JSON document.

JAX-free (the standard library and NumPy), so that the command's flags are checked, and its defaults shown by --help,
before JAX is imported; `evaluate.evaluate` makes the `Evaluation`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

PROTOCOLS = ('original', 'followup')   # the module docstring of `evaluate` describes both
DEFAULT_BATCH_SIZE = 16                # pairs per global batch when the caller does not say


@dataclasses.dataclass
class Evaluation:
  """What an evaluation found; `metrics` in the protocol's order (`evaluate.metric_names`)."""
  protocol: str
  metrics: dict[str, float]
  images: int                     # pairs counted in the metrics (those with evaluated pixels)
  pairs: int                      # pairs evaluated
  pixels: int                     # pixels evaluated (the bins' counts sum to it)
  bins: list[dict[str, Any]]      # per true-depth bin: depth_min, depth_max, pixels, mean_abs_error, abs_rel
  displacement: tuple[float, float]   # (min, max) real displacement of the pairs, metres
  nominal: float                  # the checkpoint's nominal displacement, metres
  scale: tuple[float, float] | None   # (min, max) factor d / nominal applied (followup), None if not applied
  # [N, H, 4W, 3] uint8 example pictures of the first batch (`evaluate(images=N)`), else None
  pictures: np.ndarray | None = None
  skipped: int = 0                # pairs of `pairs` skipped: the camera did not move (displacement 0)


def metrics_table(result: Evaluation) -> list[str]:
  """`name value` lines, full precision (the figures training's eval_only prints for the original protocol)."""
  width = max(len(k) for k in result.metrics)
  return [f'{k:<{width}}  {v!r}' for k, v in result.metrics.items()]


def bins_table(result: Evaluation) -> list[str]:
  """The error by true depth: a header and one line per bin (pixels, mean absolute error, mean relative error)."""
  lines = [f'{"true depth (m)":>14}  {"pixels":>10}  {"mean abs error (m)":>18}  {"abs rel":>8}']
  for b in result.bins:
    rng = f'{b["depth_min"]:g}-{b["depth_max"]:g}'
    error = '-' if b['mean_abs_error'] is None else f'{b["mean_abs_error"]:.4f}'
    rel = '-' if b['abs_rel'] is None else f'{b["abs_rel"]:.4f}'
    lines.append(f'{rng:>14}  {b["pixels"]:>10}  {error:>18}  {rel:>8}')
  return lines


def scale_line(result: Evaluation) -> str:
  """Whether the predictions were scaled by d / nominal, and the pairs' real displacement beside the nominal one."""
  low, high = result.displacement
  moved = f'{low:g} m' if low == high else f'{low:g} to {high:g} m'
  if result.scale is None:
    note = '' if low == high == result.nominal else (
        '; the depths are compared unscaled, as training evaluates (--protocol followup rescales them)')
    return (f'scale factor: none applied (original protocol); the pairs moved {moved}, the checkpoint\'s nominal '
            f'displacement is {result.nominal:g} m{note}')
  low_s, high_s = result.scale
  factor = f'{low_s:g}' if low_s == high_s else f'{low_s:g} to {high_s:g}'
  return (f'scale factor d / nominal applied to the predictions: {factor} (d: the pairs moved {moved}; nominal: '
          f'{result.nominal:g} m, the checkpoint\'s)')


def report(result: Evaluation, checkpoint: str, data: str, shift: int, resolution: str = '') -> str:
  """The text the command prints."""
  pixels_where = ('at the network\'s output resolution, against the area-downsampled target'
                  if result.protocol == 'original' else
                  'at the ground truth\'s resolution, 1e-3 < depth < 80 m, 5 % border crop')
  lines = [f'# {result.protocol} protocol: {checkpoint}',
           f'# on {data}: {result.pairs} pairs (i, i + {shift}), {result.images} averaged in the metrics'
           + (f' ({resolution})' if resolution else ''),
           *([f'# {result.skipped} pairs skipped: their camera did not move (speed 0), so they hold no depth to '
              'measure'] if result.skipped else []),
           f'# {scale_line(result)}',
           *metrics_table(result), '',
           f'# error by true depth over {result.pixels} pixels, pooled ({pixels_where})',
           *bins_table(result)]
  return '\n'.join(lines)


def to_json(result: Evaluation, *, checkpoint: dict[str, Any], data: dict[str, Any], shift: int) -> dict[str, Any]:
  """The command's --json document: the settings, the counts, the scale factor, the metrics and the bins."""
  aggregation = ('per pair over its pixels, then the mean over the pairs; float32 sums as training\'s evaluation'
                 if result.protocol == 'original' else
                 'per image over its masked pixels, then the mean over the images (test_depth.py)')
  return {
      'generator': 'depthnet_jax.evaluate',
      'protocol': result.protocol,
      'checkpoint': checkpoint,
      'data': data,
      'shift': shift,
      'pairs': result.pairs,
      'images': result.images,
      'skipped_pairs': result.skipped,
      'pixels': result.pixels,
      'scale_factor': {'applied': result.scale is not None,
                       'min': result.scale[0] if result.scale else None,
                       'max': result.scale[1] if result.scale else None,
                       'nominal_displacement': result.nominal,
                       'displacement_min': result.displacement[0], 'displacement_max': result.displacement[1]},
      'metrics': {k: v if math.isfinite(v) else None for k, v in result.metrics.items()},
      'aggregation': {'metrics': aggregation, 'bins': 'pooled over every evaluated pixel of the split'},
      'bins': result.bins,
  }
