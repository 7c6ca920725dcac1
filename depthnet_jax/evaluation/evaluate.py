"""The one evaluation of a model on Still Box pairs: `evaluate(graphdef, params, batch_stats, source, ...)`.

Training's periodic evaluation (the `eval_*` scalars, the example pictures, the choice of `best/`), train.py's
`--config.eval_only`, `python -m depthnet_jax.evaluate` (`command`), `scripts/demo.py` and `scripts/reference.py`
all run it; a constant-depth baseline is a model too (`models.ConstantDepth`). The pairs are every (i, i + S) of
every scene of `source`, S = `shift` (3), in a fixed order (`input_pipeline.eval_dataset`; with several
processes each reads its rows of each batch); the target is the depth of frame i + S. One jitted step per protocol
and mesh (`protocol_step`), with the model's graph a static argument: compiled once per model and batch shape, shared by
every evaluation of the process.

Two protocols (`report.PROTOCOLS`):

- `original` (default): training's evaluation, the paper's. The error is taken at the network's output
  resolution (1/4 of the input), against the target area-downsampled to it (`losses.area_downsample`). Metrics
  (`losses.METRIC_NAMES`): each pair's metrics over its pixels with target > 1e-3 m, then the mean over the pairs
  (`losses.depth_metric_sums` summed over the split and divided by the number of pairs), the sums merged batch by
  batch in float32 (as clu's `Average` merged them when training had an evaluation of its own: the same figures).
  `depth_error` and `normalized_error` (the paper's) use the raw prediction; abs_rel, sq_rel, RMSE, log RMSE and
  the deltas clip it to >= 1e-3 first. RMSE and log RMSE are per pair, then averaged. No rescaling: the network's
  depths are compared as they are, which assumes the pairs' displacement is the checkpoint's nominal one.
- `followup`: the authors' later evaluation (unsupervised-depthnet, `test_depth.py --gt-type stillbox`). The
  prediction is multiplied by d / nominal (d = |S x time_step x speed|, the real displacement of the pair, from
  the scene's record; nominal = the displacement the checkpoint learned, `loading.CheckpointInfo.displacement`,
  0.3 m when not recorded), upsampled bilinearly to the ground truth's size (half-pixel centres, as torch's
  `interpolate(align_corners=False)`) and clamped to [1e-3, 80] m; the ground truth is masked to 1e-3 < depth
  < 80 m (strictly, as its `generate_mask`) and to the central 90 % of each axis (a 5 % border crop). Metrics
  (`losses.FOLLOWUP_METRIC_NAMES`): test_depth.py's compute_errors of each image over its masked pixels (mean
  abs error, abs rel, abs log, sq rel, RMSE, log RMSE, delta < 1.25, 1.25^2, 1.25^3), then the mean over the
  images, as test_depth.py averages them (sums in float64). On Still Box and this project's default renders the
  factor is exactly 1 (0.3 m / 0.3 m); on scenes rendered at other speeds it makes the depths metric.

The error by true depth (bins 0-10, 10-20, ..., 90-100 m) is pooled over every evaluated pixel of the split, not
per image: per bin the pixel count, the mean absolute error and the mean relative error, over the pixels the
protocol evaluates (`original`: at the network's resolution against the area-downsampled target, with the raw
prediction as `depth_error`; `followup`: at the ground truth's resolution after the masks, the scale and the
clamp). So the bins' pixel counts sum to the evaluated pixels, and their pixel-weighted mean error is the
pixel-pooled mean error, which differs from the per-image mean of the metrics table.

A pair whose camera did not move (a scene of speed zero, or of time step zero in a built split: displacement 0)
holds no depth to see and has no metric scale: it is skipped (masked like padding) and counted
(`Evaluation.skipped`; the command prints the count), not averaged in, as infer.py skips pairs of zero
displacement.

`images=N` adds N example pictures of the first batch to the result (frame 1, frame 2, ground truth and the
network's prediction; what training logs as `eval_examples`), from this process's rows of it.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from depthnet_jax.common import colormaps, progress
from depthnet_jax.common.conventions import NOMINAL_DISPLACEMENT, SHIFT
from depthnet_jax.data import input_pipeline, sharding
from depthnet_jax.evaluation.report import DEFAULT_BATCH_SIZE, PROTOCOLS, Evaluation
from depthnet_jax.model import losses, models


def metric_names(protocol: str) -> tuple[str, ...]:
  return losses.METRIC_NAMES if protocol == 'original' else losses.FOLLOWUP_METRIC_NAMES


# --- The jitted steps -------------------------------------------------------------------------------------------

def forward(graphdef, params, batch_stats, batch):
  return models.depth_of(nnx.merge(graphdef, params, batch_stats, copy=True)(batch['image_pair']))


def _pair_ranges(batch) -> dict:
  """Min and max over the evaluated pairs of their displacement and scale factor (padding and skipped rows
  excluded), and the number of pairs skipped (a camera standing still)."""
  real = batch['mask'] > 0
  return {'skipped': jnp.sum(batch['skipped']),
          **{f'{k}_{f.__name__}': f(jnp.where(real, batch[k], fill)) for k in ('distance', 'scale')
             for f, fill in ((jnp.min, jnp.inf), (jnp.max, -jnp.inf))}}


def _original_metrics(prediction, batch):
  """Training's evaluation of a batch (the metric sums of its real pairs) and its error by depth; the prediction."""
  sums, count = losses.depth_metric_sums(prediction, batch['depth'], batch['mask'])
  bins = losses.depth_bin_sums(prediction, batch['depth'], batch['mask'])
  return {'sums': sums, 'count': count, 'bins': bins, **_pair_ranges(batch)}, prediction


def _followup_metrics(prediction, batch):
  """test_depth.py's evaluation of a batch and its error by depth; the (unscaled) prediction."""
  sums, count = losses.followup_metric_sums(prediction, batch['depth'], batch['mask'], batch['scale'])
  bins = losses.followup_bin_sums(prediction, batch['depth'], batch['mask'], batch['scale'])
  return {'sums': sums, 'count': count, 'bins': bins, **_pair_ranges(batch)}, prediction


_METRICS = {'original': _original_metrics, 'followup': _followup_metrics}
_STEPS: dict = {}


def protocol_step(protocol: str, mesh, hosted: bool = False):
  """The jitted step of a protocol on a mesh: `step(graphdef, params, batch_stats, batch)` (the model's graph a
  static argument), compiled once per model and batch shape, shared by every evaluation of the process; or, if
  `hosted`, `step(batch)` of a batch holding the network's `prediction` (a runtime outside JAX made it). Its sums
  are replicated; the prediction stays sharded along the batch (read only for example pictures)."""
  key = (protocol, mesh, hosted)
  if key not in _STEPS:
    metrics = _METRICS[protocol]
    if hosted:
      fn, static = (lambda batch: metrics(batch['prediction'], batch)), ()
    else:
      fn, static = (lambda graphdef, params, batch_stats, batch: metrics(
          forward(graphdef, params, batch_stats, batch), batch)), (0,)
    _STEPS[key] = jax.jit(fn, static_argnums=static,
                          out_shardings=(sharding.replicated(mesh), sharding.data_sharded(mesh)))
  return _STEPS[key]


def batch_runner(protocol: str, mesh, graphdef, params, batch_stats, network=None):
  """`run(host batch) -> (sums, prediction)`: the protocol's step on the batch made global, the network JAX's
  (`graphdef`, `params`, `batch_stats`) or, if given, `network` (`runtimes.OnnxNetwork`: its `depth` of the
  normalised pairs, on the host)."""
  if network is None:
    step = protocol_step(protocol, mesh)
    return lambda local: step(graphdef, params, batch_stats, sharding.global_batch(local, mesh))
  step = protocol_step(protocol, mesh, hosted=True)
  return lambda local: step(sharding.global_batch(
      dict(local, prediction=np.asarray(network.depth(local['image_pair']), np.float32)), mesh))


# --- The evaluation ---------------------------------------------------------------------------------------------

def evaluate(graphdef, params, batch_stats, source, *, protocol: str = 'original', shift: int = SHIFT,
             batch_size: int = DEFAULT_BATCH_SIZE, nominal: float = NOMINAL_DISPLACEMENT, mesh=None,
             worker_count: int = 0, images: int = 0, show_progress: bool = False,
             stabilize: bool = False, network=None) -> Evaluation:
  """Evaluates a model on every (i, i + shift) pair of `source` (scene records, as `tfds.data_source` gives).

  Args:
    graphdef, params, batch_stats: the model in eval mode, split (`nnx.split(model, nnx.Param, nnx.BatchStat)`);
      params and statistics replicated over `mesh` when it has several devices.
    source: random-access scene records (a TFDS data source or a `tree_source.TreeSource`).
    protocol: 'original' or 'followup' (see the module docstring).
    shift: S, frames between the two of a pair (1 to frames - 1).
    batch_size: pairs per global batch (a multiple of the mesh's devices); the last one is padded and masked.
    nominal: the checkpoint's nominal displacement in metres (followup: the prediction is scaled by d / nominal).
    mesh: a ('data',) mesh (default: every device, `sharding.make_mesh`). With several processes each reads its
      rows of each batch, as training's evaluation.
    worker_count: grain worker processes (0: threads in this process).
    images: example pictures of the first batch to return (`Evaluation.pictures`), from this process's rows;
      0: none (None).
    show_progress: N/M pairs on stderr (`progress.Progress`).
    stabilize: each pair's first frame warped into the second's orientation (records with `orientation`, a rotated
      tree: `input_pipeline.stabilized`), its pixels without a source not evaluated.
    network: another runtime's network (`runtimes.OnnxNetwork`) to compute the predictions with, instead of the
      split model (`batch_runner`); the metrics are the same JAX code either way.
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f'protocol must be one of {PROTOCOLS}; got {protocol!r}')
  mesh = mesh if mesh is not None else sharding.make_mesh()
  ds = input_pipeline.eval_dataset(source, global_batch_size=batch_size, shift=shift,
                                   process_index=jax.process_index(), process_count=jax.process_count(),
                                   stabilize=stabilize)
  pairs = len(source) * (input_pipeline.frames_per_scene(source) - shift)
  run, totals, pictures = batch_runner(protocol, mesh, graphdef, params, batch_stats, network), Totals(protocol), None
  with progress.Progress(pairs, 'pairs', desc='evaluated', enabled=show_progress) as bar:
    pending = None   # the previous batch's results, read while the device computes this one
    for local in input_pipeline.make_iterator(ds, worker_count):
      local = with_scale(local, nominal if protocol == 'followup' else None)
      out, prediction = run(local)
      if images and pictures is None:
        pictures = example_pictures(local, _local_rows(prediction), images)
      if pending is not None:
        totals.add(pending)
        bar.update(min(batch_size, pairs - bar.done))
      pending = out
    if pending is not None:
      totals.add(pending)
      bar.update(pairs - bar.done)
  return totals.result(pairs, nominal, pictures)


def with_scale(local: dict[str, np.ndarray], nominal: float | None) -> dict[str, np.ndarray]:
  """A host batch with each pair's real displacement `distance` (metres) and its `scale` d / nominal (1 if
  `nominal` is None: the original protocol does not rescale); a pair of displacement 0 masked out and marked in
  `skipped`."""
  distance = input_pipeline.displacement_length(local['displacement'])
  still = (local['mask'] > 0) & (distance == 0)
  scale = distance / nominal if nominal is not None else np.ones_like(distance)
  return dict(local, mask=np.where(still, 0, local['mask']).astype(np.float32), skipped=still.astype(np.float32),
              distance=distance.astype(np.float32), scale=scale.astype(np.float32))


class Totals:
  """A protocol's sums over the batches, added in batch order. Original: float32 sums merged batch by batch, as
  clu's Average merged training's evaluation (the same figures); followup: float64, as test_depth.py."""

  def __init__(self, protocol: str):
    self.protocol = protocol
    self.dtype = np.float32 if protocol == 'original' else np.float64
    self.sums = {k: self.dtype(0) for k in metric_names(protocol)}
    self.count = self.dtype(0)
    self.bins = {k: np.zeros(len(losses.DEPTH_BIN_EDGES) - 1, np.float64) for k in ('pixels', 'abs_error',
                                                                                      'rel_error')}
    self.ranges = {'distance': [math.inf, -math.inf], 'scale': [math.inf, -math.inf]}
    self.skipped = 0

  def add(self, out) -> None:
    """A batch's results (the step's replicated sums)."""
    for k in self.sums:
      self.sums[k] = self.sums[k] + self.dtype(out['sums'][k])
    self.count = self.count + self.dtype(out['count'])
    for k in self.bins:
      self.bins[k] += np.asarray(out['bins'][k], np.float64)
    for k, (low, high) in self.ranges.items():
      self.ranges[k] = [min(low, float(out[f'{k}_min'])), max(high, float(out[f'{k}_max']))]
    self.skipped += int(round(float(out['skipped'])))

  def result(self, pairs: int, nominal: float, pictures: np.ndarray | None) -> Evaluation:
    # no evaluated pixel in the whole split (e.g. followup on scenes all beyond 80 m): NaN, as a mean of nothing
    metrics = {k: math.nan if not self.count else float(v / self.count) for k, v in self.sums.items()}
    original = self.protocol == 'original'
    # every pair skipped (no camera moved): no range of displacements or scales, (0, 0)
    ranges = {k: (0.0, 0.0) if low > high else (round(low, 6), round(high, 6))
              for k, (low, high) in self.ranges.items()}
    return Evaluation(
        protocol=self.protocol, metrics=metrics, images=int(round(float(self.count))), pairs=pairs,
        pixels=int(round(self.bins['pixels'].sum())), bins=_bin_table(self.bins), nominal=float(nominal),
        displacement=ranges['distance'], scale=None if original else ranges['scale'], pictures=pictures,
        skipped=self.skipped)


def _bin_table(bins) -> list[dict[str, Any]]:
  edges = losses.DEPTH_BIN_EDGES
  table = []
  for k, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
    n = int(round(bins['pixels'][k]))
    table.append({'depth_min': low, 'depth_max': high, 'pixels': n,
                  'mean_abs_error': float(bins['abs_error'][k] / n) if n else None,
                  'abs_rel': float(bins['rel_error'][k] / n) if n else None})
  return table


# --- Example pictures -------------------------------------------------------------------------------------------

def _local_rows(prediction: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in batch order."""
  shards = sorted(prediction.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards])


def example_pictures(local_batch, prediction: np.ndarray, count: int) -> np.ndarray:
  """[N, H, 4W, 3] uint8: frame 1, frame 2, ground truth and prediction (rainbow, 0-100 m) side by side, of up
  to `count` real pairs of a host batch."""
  # Spread over the batch (eval batches run scene by scene): several scenes rather than one scene's pairs.
  real = np.flatnonzero(local_batch['mask'] > 0)
  rows = real[np.linspace(0, len(real) - 1, min(count, len(real))).astype(int)] if len(real) else np.arange(1)
  return colormaps.example_strips(local_batch['image_pair'][rows], local_batch['depth'][rows], prediction[rows])
