"""Evaluates any checkpoint on Still Box pairs: `python -m depthnet_jax.evaluate --checkpoint PATH --dataset
tfds_stillbox/synth64 --split validation` (a built TFDS split) or `... --stillbox_tree ROOT/64` (a Still Box tree).

PATH is a training workdir (its best checkpoint, or `--eval_checkpoint latest`), a checkpoint directory, or a
PyTorch `.pth.tar` (imported on the fly). The pairs are every (i, i + S) of every scene, S = `--shift` (3), in a
fixed order, as training's evaluation visits them (`input_pipeline.eval_dataset`); the target is the depth of
frame i + S. A tree is read with `tfds_stillbox.tree` into records of the TFDS format, so both inputs go through
the same pipeline; every scene of the tree is evaluated (a built dataset's `validation` split holds only the
scenes training did not see).

Two protocols (`--protocol`):

- `original` (default): training's evaluation, the paper's. The error is taken at the network's output
  resolution (1/4 of the input), against the target area-downsampled to it (`losses.area_downsample`). Metrics
  (`losses.METRIC_NAMES`): each pair's metrics over its pixels with target > 1e-3 m, then the mean over the pairs
  (`losses.depth_metric_sums` summed over the split and divided by the number of pairs), summed batch by batch
  in float32 as training's evaluation merges them: the figures are those `train.py --config.eval_only=True`
  prints (it runs this code) and those `train_lib.Trainer.evaluate` logs during training. `depth_error` and
  `normalized_error` (the paper's) use the raw prediction; abs_rel, sq_rel, RMSE, log RMSE and the deltas clip it
  to >= 1e-3 first. RMSE and log RMSE are per pair, then averaged. No rescaling: the network's depths are
  compared as they are, which assumes the pairs' displacement is the checkpoint's nominal one.
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

Outputs: the two tables on stdout; `--json PATH`: metrics, bins, checkpoint, data, protocol, shift, numbers of
pairs and pixels, the scale factor; `--plot PATH.png`: the mean absolute error against true depth (line, left
axis) over the pixel count (bars, right axis), drawn with OpenCV. Files are written atomically and an existing
one is replaced only with `--overwrite`. Progress (pairs done, rate, ETA) goes to stderr.

Every user error (a missing checkpoint, an unknown dataset or split, a tree that is not Still Box, a flag out of
range, an existing output without --overwrite) is one `error:` line and exit code 1, found before the model
runs or anything is written; `--debug` (or DEPTHNET_DEBUG=1) adds the traceback. JAX is imported only after the
flags are checked.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import sys
import threading
from typing import Any

from depthnet_jax.common import cli, compile_cache
from depthnet_jax.common.conventions import NOMINAL_DISPLACEMENT, SHIFT

PROTOCOLS = ('original', 'followup')
DEFAULT_BATCH_SIZE = 16
_PROG = 'python -m depthnet_jax.evaluate'


# --- Data: a Still Box tree as a source of TFDS records ---------------------------------------------------------

class TreeSource:
  """Random access to the scenes of a Still Box tree (`<root>/<k>/metadata.json`) as records in the format of
  the TFDS dataset (`tfds_stillbox.tree.load_scene`), so that `input_pipeline` reads both alike. The layout, the
  metadata and the first scene are checked when it is made; the last few scenes read are kept (evaluation reads
  each scene once per pair)."""

  def __init__(self, root: str, cache: int = 8):
    from tfds_stillbox import tree
    self.root = os.path.abspath(root)
    self._refs = tree.list_scenes(self.root)
    frames = {len(r.scene['imgs']) for r in self._refs}
    if len(frames) > 1:
      odd = next(r for r in self._refs if len(r.scene['imgs']) != len(self._refs[0].scene['imgs']))
      raise tree.StillBoxFormatError(
          f'{os.path.join(odd.folder, "metadata.json")}: scene {odd.id} has {len(odd.scene["imgs"])} frames, '
          f'scene {self._refs[0].id} {len(self._refs[0].scene["imgs"])}; expected the same number in every scene')
    for ref in self._refs:   # every listed file exists (their contents are checked as they are read)
      for name in ref.scene['imgs'] + ref.scene['depth']:
        if not os.path.isfile(os.path.join(ref.folder, name)):
          raise tree.StillBoxFormatError(f'{os.path.join(ref.folder, name)}: listed in scene {ref.id} but missing')
    first = tree.load_scene(self._refs[0])
    self.size = (int(first['height']), int(first['width']))
    self._cache_size = cache
    self._cache: collections.OrderedDict[int, dict] = collections.OrderedDict({0: first})
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self._refs)

  def __getitem__(self, index: int) -> dict[str, Any]:
    from tfds_stillbox import tree
    index = int(index)
    with self._lock:
      if index in self._cache:
        self._cache.move_to_end(index)
        return self._cache[index]
    record = tree.load_scene(self._refs[index], self.size)
    with self._lock:
      self._cache[index] = record
      while len(self._cache) > self._cache_size:
        self._cache.popitem(last=False)
    return record

  def __getstate__(self):   # grain worker processes: no lock or cache to pickle
    state = dict(self.__dict__)
    state['_lock'], state['_cache'] = None, collections.OrderedDict()
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()


def _tree_error(root: str, error: Exception) -> cli.UserError:
  """A tree's format error as the flag's; a Still Box root given instead of its resolution folder is named."""
  root = os.path.abspath(root)
  hint = ''
  resolutions = sorted(n for n in os.listdir(root) if n.isdigit() and os.path.isdir(os.path.join(root, n))
                       and not os.path.isfile(os.path.join(root, n, 'metadata.json'))) if os.path.isdir(root) else []
  if resolutions and any(os.path.isfile(os.path.join(root, resolutions[0], k, 'metadata.json'))
                         for k in os.listdir(os.path.join(root, resolutions[0]))):
    hint = (f' ({root} looks like a Still Box root: pass a resolution folder, e.g. '
            f'--stillbox_tree {os.path.join(root, resolutions[0])})')
  return cli.UserError(f'--stillbox_tree {root}: not a Still Box tree: {cli.one_line(error)}{hint}')


def open_tree(root: str) -> TreeSource:
  """A `TreeSource`; a tree that is not Still Box is a one-line `cli.UserError` naming the file."""
  from tfds_stillbox import tree
  try:
    return TreeSource(root)
  except tree.StillBoxFormatError as e:
    raise _tree_error(root, e) from e


def open_dataset(dataset: str, split: str, data_dir: str | None):
  """`tfds.data_source` of a built split (as training opens it); a dataset not built or an unknown split is a
  one-line `cli.UserError` naming the flag."""
  from depthnet_jax.data import input_pipeline
  try:
    source = input_pipeline.open_source(dataset, split, data_dir or None)
  except input_pipeline.DatasetNotBuiltError as e:
    raise cli.UserError(f'--dataset={dataset!r}: {cli.one_line(e)}') from e
  except ValueError as e:   # an unknown split
    raise cli.UserError(f'--split={split!r}: {cli.one_line(e)}') from e
  if len(source) == 0:
    raise cli.UserError(f'--split={split!r}: the split of {dataset} holds no scene; expected a split with scenes')
  return source


# --- The evaluation ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Evaluation:
  """What an evaluation found; `metrics` in the protocol's order (`metric_names`)."""
  protocol: str
  metrics: dict[str, float]
  images: int                     # pairs counted in the metrics (those with evaluated pixels)
  pairs: int                      # pairs evaluated
  pixels: int                     # pixels evaluated (the bins' counts sum to it)
  bins: list[dict[str, Any]]      # per true-depth bin: depth_min, depth_max, pixels, mean_abs_error, abs_rel
  displacement: tuple[float, float]   # (min, max) real displacement of the pairs, metres
  nominal: float                  # the checkpoint's nominal displacement, metres
  scale: tuple[float, float] | None   # (min, max) factor d / nominal applied (followup), None if not applied


def metric_names(protocol: str) -> tuple[str, ...]:
  from depthnet_jax.model import losses
  return losses.METRIC_NAMES if protocol == 'original' else losses.FOLLOWUP_METRIC_NAMES


def _forward(graphdef, params, batch_stats, batch):
  from flax import nnx

  from depthnet_jax.model import models
  return models.depth_of(nnx.merge(graphdef, params, batch_stats, copy=True)(batch['image_pair']))


def _pair_ranges(batch) -> dict:
  """Min and max over the real pairs of their displacement and scale factor (padding rows excluded)."""
  import jax.numpy as jnp
  real = batch['mask'] > 0
  return {f'{k}_{f.__name__}': f(jnp.where(real, batch[k], fill)) for k in ('distance', 'scale')
          for f, fill in ((jnp.min, jnp.inf), (jnp.max, -jnp.inf))}


def _original_step(graphdef, params, batch_stats, batch):
  """Training's evaluation of a batch (`train_lib.make_eval_step` + `metrics_of`), and its error by depth."""
  from depthnet_jax.model import losses
  prediction = _forward(graphdef, params, batch_stats, batch)
  sums, count = losses.depth_metric_sums(prediction, batch['depth'], batch['mask'])
  bins = losses.depth_bin_sums(prediction, batch['depth'], batch['mask'])
  return {'sums': sums, 'count': count, 'bins': bins, **_pair_ranges(batch)}


def _followup_step(graphdef, params, batch_stats, batch):
  """test_depth.py's evaluation of a batch, and its error by depth."""
  from depthnet_jax.model import losses
  prediction = _forward(graphdef, params, batch_stats, batch)
  sums, count = losses.followup_metric_sums(prediction, batch['depth'], batch['mask'], batch['scale'])
  bins = losses.followup_bin_sums(prediction, batch['depth'], batch['mask'], batch['scale'])
  return {'sums': sums, 'count': count, 'bins': bins, **_pair_ranges(batch)}


_STEPS: dict = {}


def _step(protocol: str, mesh):
  """The jitted step of a protocol on a mesh (the model's graph a static argument): compiled once per model and
  batch shape, shared by every evaluation of the process."""
  key = (protocol, mesh)
  if key not in _STEPS:
    import jax

    from depthnet_jax.data import sharding
    fn = _original_step if protocol == 'original' else _followup_step
    _STEPS[key] = jax.jit(fn, static_argnums=0, out_shardings=sharding.replicated(mesh))
  return _STEPS[key]


def evaluate(graphdef, params, batch_stats, source, *, protocol: str = 'original', shift: int = SHIFT,
             batch_size: int = DEFAULT_BATCH_SIZE, nominal: float = NOMINAL_DISPLACEMENT, mesh=None,
             worker_count: int = 0, show_progress: bool = False) -> Evaluation:
  """Evaluates a model on every (i, i + shift) pair of `source` (scene records, as `tfds.data_source` gives).

  Args:
    graphdef, params, batch_stats: the model in eval mode, split (`nnx.split(model, nnx.Param, nnx.BatchStat)`);
      params and statistics replicated over `mesh` when it has several devices.
    source: random-access scene records (a TFDS data source or a `TreeSource`).
    protocol: 'original' or 'followup' (see the module docstring).
    shift: S, frames between the two of a pair (1 to frames - 1).
    batch_size: pairs per global batch (a multiple of the mesh's devices); the last one is padded and masked.
    nominal: the checkpoint's nominal displacement in metres (followup: the prediction is scaled by d / nominal).
    mesh: a ('data',) mesh (default: every device, `sharding.make_mesh`). With several processes each reads its
      rows of each batch, as training's evaluation.
    worker_count: grain worker processes (0: threads in this process).
    show_progress: N/M pairs on stderr (`progress.Progress`).
  """
  import jax
  import numpy as np

  from depthnet_jax.common import progress
  from depthnet_jax.data import input_pipeline, sharding
  from depthnet_jax.model import losses
  if protocol not in PROTOCOLS:
    raise ValueError(f'protocol must be one of {PROTOCOLS}; got {protocol!r}')
  mesh = mesh if mesh is not None else sharding.make_mesh()
  ds = input_pipeline.eval_dataset(source, global_batch_size=batch_size, shift=shift,
                                   process_index=jax.process_index(), process_count=jax.process_count())
  pairs = len(source) * (input_pipeline.frames_per_scene(source) - shift)
  step = _step(protocol, mesh)
  original = protocol == 'original'
  # original: float32 sums merged batch by batch, as clu's Average merges training's evaluation (same figures)
  sums = {k: np.float32(0) if original else 0.0 for k in metric_names(protocol)}
  count = np.float32(0) if original else 0.0
  bins = {k: np.zeros(len(losses.DEPTH_BIN_EDGES) - 1, np.float64) for k in ('pixels', 'abs_error', 'rel_error')}
  ranges = {'distance': [math.inf, -math.inf], 'scale': [math.inf, -math.inf]}
  done = 0

  def add(out, bar):   # a batch's results, in batch order
    nonlocal count, done
    for k in sums:
      sums[k] = sums[k] + (np.float32(out['sums'][k]) if original else float(out['sums'][k]))
    count = count + (np.float32(out['count']) if original else float(out['count']))
    for k in bins:
      bins[k] += np.asarray(out['bins'][k], np.float64)
    for k, (low, high) in ranges.items():
      ranges[k] = [min(low, float(out[f'{k}_min'])), max(high, float(out[f'{k}_max']))]
    now = min(done + batch_size, pairs)
    bar.update(now - done)
    done = now

  with progress.Progress(pairs, 'pairs', desc='evaluated', enabled=show_progress) as bar:
    pending = None   # the previous batch's results, read while the device computes this one
    for local in input_pipeline.make_iterator(ds, worker_count):
      distance = input_pipeline.displacement_length(local['displacement'])
      local = dict(local, distance=distance.astype(np.float32),
                   scale=(distance / nominal if not original else np.ones_like(distance)).astype(np.float32))
      out = step(graphdef, params, batch_stats, sharding.global_batch(local, mesh))
      if pending is not None:
        add(pending, bar)
      pending = out
    if pending is not None:
      add(pending, bar)
  # no evaluated pixel in the whole split (e.g. followup on scenes all beyond 80 m): NaN, as a mean of nothing
  metrics = {k: math.nan if not count else float(np.float32(v) / count) if original else v / count
             for k, v in sums.items()}
  return Evaluation(
      protocol=protocol, metrics=metrics, images=int(round(float(count))), pairs=pairs,
      pixels=int(round(bins['pixels'].sum())), bins=_bin_table(bins), nominal=float(nominal),
      displacement=tuple(round(v, 6) for v in ranges['distance']),
      scale=None if original else tuple(round(v, 6) for v in ranges['scale']))


def _bin_table(bins) -> list[dict[str, Any]]:
  from depthnet_jax.model import losses
  edges = losses.DEPTH_BIN_EDGES
  table = []
  for k, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
    n = int(round(bins['pixels'][k]))
    table.append({'depth_min': low, 'depth_max': high, 'pixels': n,
                  'mean_abs_error': float(bins['abs_error'][k] / n) if n else None,
                  'abs_rel': float(bins['rel_error'][k] / n) if n else None})
  return table


# --- Reports: tables, JSON, plot ---------------------------------------------------------------------------------

def metrics_table(result: Evaluation) -> list[str]:
  """`name value` lines, full precision (the figures training's eval_only prints for the original protocol)."""
  width = max(len(k) for k in result.metrics)
  return [f'{k:<{width}}  {v!r}' for k, v in result.metrics.items()]


def bins_table(result: Evaluation) -> list[str]:
  lines = [f'{"true depth (m)":>14}  {"pixels":>10}  {"mean abs error (m)":>18}  {"abs rel":>8}']
  for b in result.bins:
    rng = f'{b["depth_min"]:g}-{b["depth_max"]:g}'
    error = '-' if b['mean_abs_error'] is None else f'{b["mean_abs_error"]:.4f}'
    rel = '-' if b['abs_rel'] is None else f'{b["abs_rel"]:.4f}'
    lines.append(f'{rng:>14}  {b["pixels"]:>10}  {error:>18}  {rel:>8}')
  return lines


def scale_line(result: Evaluation) -> str:
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
           f'# {scale_line(result)}',
           *metrics_table(result), '',
           f'# error by true depth over {result.pixels} pixels, pooled ({pixels_where})',
           *bins_table(result)]
  return '\n'.join(lines)


def to_json(result: Evaluation, *, checkpoint: dict[str, Any], data: dict[str, Any], shift: int) -> dict[str, Any]:
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


# --- The command line ------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
  """argparse whose usage errors are a cli.UserError (one `error:` line, exit 1) instead of usage + exit 2."""

  def error(self, message):
    raise cli.UserError(f'{message} (usage: {_PROG} --checkpoint PATH (--dataset NAME [--split SPLIT] | '
                        '--stillbox_tree DIR); --help lists the flags)')


def parser() -> argparse.ArgumentParser:
  p = _Parser(prog=_PROG, description=__doc__.split('\n\n')[0], allow_abbrev=False)
  p.add_argument('--checkpoint', required=True,
                 help='a training workdir (its best checkpoint), a checkpoint directory, or a PyTorch .pth.tar')
  p.add_argument('--eval_checkpoint', choices=['best', 'latest'], default='best',
                 help="with a workdir: its best (default) or latest checkpoint")
  p.add_argument('--dataset', default=None,
                 help="a built TFDS dataset, e.g. tfds_stillbox/synth64 (give it or --stillbox_tree)")
  p.add_argument('--split', default=None, help='split of --dataset, default validation')
  p.add_argument('--data_dir', default=None, help='TFDS data_dir of --dataset (default $TFDS_DATA_DIR or '
                 '~/tensorflow_datasets)')
  p.add_argument('--stillbox_tree', default=None, metavar='DIR',
                 help='a Still Box tree at one resolution, e.g. STILLBOX/64 (<k>/metadata.json inside) or what '
                      'python -m tfds_stillbox.render exports; every scene of it is evaluated')
  p.add_argument('--protocol', choices=PROTOCOLS, default='original',
                 help="'original' (training's evaluation, the paper's; default) or 'followup' (unsupervised-"
                      "depthnet's test_depth.py)")
  p.add_argument('--shift', type=int, default=SHIFT, help=f'pairs are (i, i + shift); 1 to frames - 1, '
                 f'default {SHIFT}')
  p.add_argument('--batch_size', type=int, default=DEFAULT_BATCH_SIZE,
                 help=f'pairs per network call, >= 1 and a multiple of the devices; default {DEFAULT_BATCH_SIZE}')
  p.add_argument('--json', default=None, metavar='PATH', help='write the metrics, bins and settings as JSON')
  p.add_argument('--plot', default=None, metavar='PNG', help='draw the error against true depth (a .png)')
  p.add_argument('--overwrite', action='store_true', help='replace an existing --json or --plot file')
  p.add_argument('--compilation_cache', default='', metavar='DIR', help=compile_cache.FLAG_HELP)
  p.add_argument('--no_compilation_cache', action='store_true', help=compile_cache.OFF_FLAG_HELP)
  p.add_argument('--debug', action='store_true', help='print the traceback of an error too')
  return p


@dataclasses.dataclass
class Args:
  """The checked flags."""
  checkpoint: str
  eval_checkpoint: str
  dataset: str | None
  split: str
  data_dir: str | None
  tree: str | None
  protocol: str
  shift: int
  batch_size: int
  json: str | None
  plot: str | None
  overwrite: bool
  compilation_cache: str
  no_compilation_cache: bool


def check_args(argv: list[str]) -> Args:
  """The flags, checked without JAX, the dataset or the model: a mistake is a `cli.UserError`."""
  a = parser().parse_args(argv)
  if (a.dataset is None) == (a.stillbox_tree is None):
    raise cli.UserError('--dataset and --stillbox_tree: expected exactly one of them (the data to evaluate on), '
                        f'got {"both" if a.dataset is not None else "neither"}')
  if a.stillbox_tree is not None:
    for flag, value in (('--split', a.split), ('--data_dir', a.data_dir)):
      if value is not None:
        raise cli.UserError(f'{flag}={value!r}: only with --dataset (a Still Box tree is evaluated whole)')
    tree = os.path.abspath(a.stillbox_tree)
    if not os.path.isdir(tree):
      raise cli.UserError(f'--stillbox_tree {tree}: {"is a file" if os.path.exists(tree) else "does not exist"}; '
                          'expected the folder of a Still Box tree (<k>/metadata.json inside)')
  else:
    tree = None
    if not a.dataset.strip():
      raise cli.UserError("--dataset='': expected a built dataset such as tfds_stillbox/synth64")
    if a.split is not None and not a.split.strip():
      raise cli.UserError("--split='': expected a split of the dataset, e.g. validation")
    if a.data_dir is not None and not os.path.isdir(a.data_dir):
      raise cli.UserError(f'--data_dir {os.path.abspath(a.data_dir)}: '
                          f'{"is a file" if os.path.exists(a.data_dir) else "does not exist"}; expected the TFDS '
                          'data_dir the dataset was built in')
  checkpoint = os.path.abspath(a.checkpoint) if a.checkpoint else ''
  if not checkpoint or not os.path.exists(checkpoint):
    raise cli.UserError(f'--checkpoint {checkpoint or repr(a.checkpoint)}: does not exist; expected a training '
                        'workdir, a checkpoint directory or a PyTorch .pth.tar')
  shift = cli.check_int('--shift', a.shift, 1)
  batch_size = cli.check_int('--batch_size', a.batch_size, 1)
  json_path = cli.check_output_file('--json', a.json, a.overwrite, ('.json',))
  plot_path = cli.check_output_file('--plot', a.plot, a.overwrite, ('.png',))
  if json_path and json_path == plot_path:
    raise cli.UserError(f'--json and --plot: both are {json_path}; expected two files')
  compile_cache.check_flag(a.compilation_cache, a.no_compilation_cache)
  return Args(checkpoint, a.eval_checkpoint, a.dataset, a.split or 'validation', a.data_dir, tree, a.protocol,
              shift, batch_size, json_path, plot_path, a.overwrite, a.compilation_cache, a.no_compilation_cache)


def _load(args: Args):
  """(CheckpointInfo, model) of --checkpoint; anything that keeps it from loading is the flag's error."""
  from depthnet_jax.checkpoints import checkpointing, loading, torch_import
  try:
    info = loading.checkpoint_info(args.checkpoint, args.eval_checkpoint)
    model = loading.load_any(info.resolved, args.eval_checkpoint)
  except (checkpointing.CheckpointError, torch_import.TorchCheckpointError, ValueError, OSError) as e:
    raise cli.UserError(f'--checkpoint {args.checkpoint}: {cli.one_line(e)}') from e
  return info, model


def run(args: Args, *, stdout=None) -> Evaluation:
  """Opens the data and the checkpoint (checks that need them), evaluates, prints, writes --json and --plot."""
  stdout = stdout or sys.stdout
  compile_cache.enable(args.compilation_cache, disabled=args.no_compilation_cache)
  from absl import logging
  logging.set_verbosity(logging.WARNING)   # Orbax logs every file it reads at INFO
  from depthnet_jax.data import input_pipeline
  if args.tree:
    source = open_tree(args.tree)
    data_name, data = args.tree, {'stillbox_tree': args.tree}
  else:
    source = open_dataset(args.dataset, args.split, args.data_dir)
    data_name = f'{args.dataset}:{args.split}'
    data = {'dataset': args.dataset, 'split': args.split,
            'data_dir': os.path.abspath(args.data_dir) if args.data_dir else None}
  first = source[0]
  frames = input_pipeline.frames_per_scene(source)
  if args.shift >= frames:
    raise cli.UserError(f'--shift={args.shift}: expected an integer from 1 to {frames - 1} (the scenes of '
                        f'{data_name} have {frames} frames)')
  data.update(scenes=len(source), frames=frames, height=int(first['height']), width=int(first['width']))
  info, model = _load(args)
  from flax import nnx

  from depthnet_jax.data import sharding
  from depthnet_jax.model import models
  mesh = sharding.make_mesh()
  sharding.check_batch_size(args.batch_size, mesh, '--batch_size')
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  params, batch_stats = sharding.replicate((params, batch_stats), mesh)
  result = evaluate(graphdef, params, batch_stats, source, protocol=args.protocol, shift=args.shift,
                    batch_size=args.batch_size, nominal=info.displacement, mesh=mesh, show_progress=True)
  h, w = data['height'], data['width']
  oh, ow = models.output_sizes(h, w)[0]
  resolution = f'input {w}x{h}, network output {ow}x{oh}'
  print(report(result, info.resolved, data_name, args.shift, resolution), file=stdout, flush=True)
  checkpoint = {'path': args.checkpoint, 'resolved': info.resolved, 'nominal_displacement': info.displacement,
                'displacement_recorded': info.displacement_recorded, **model.options()}
  written = []
  from depthnet_jax.common import atomic
  from depthnet_jax.evaluation import charts
  try:
    for path in (args.json, args.plot):
      if path:
        atomic.make_dirs(os.path.dirname(path))
    if args.json:
      document = to_json(result, checkpoint=checkpoint, data=data, shift=args.shift)
      written.append(atomic.write_text(args.json, json.dumps(document, indent=2) + '\n', overwrite=args.overwrite))
    if args.plot:
      title = f'{_short(info.resolved)} - {args.protocol} protocol, {data_name}'
      written.append(atomic.write_png(args.plot, charts.error_by_depth(result.bins, title), overwrite=args.overwrite))
  except FileExistsError as e:
    raise cli.UserError(f'{cli.one_line(e)} (pass --overwrite to replace it)') from e
  for path in written:
    print(f'wrote {path}', file=stdout, flush=True)
  return result


def _short(path: str, parts: int = 3) -> str:
  """The last `parts` components of a path (a workdir's best/<step> keeps the run's name)."""
  pieces = os.path.normpath(path).split(os.sep)
  return os.sep.join(pieces[-parts:])


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)

  def work() -> int:
    args = check_args(argv)
    from tfds_stillbox import tree
    try:
      run(args)
    except tree.StillBoxFormatError as e:   # a file of the tree found damaged while reading it
      raise cli.UserError(f'--stillbox_tree {args.tree}: {cli.one_line(e)}') from e
    return 0

  return cli.run(work, debug='--debug' in argv)


if __name__ == '__main__':
  sys.exit(main())
