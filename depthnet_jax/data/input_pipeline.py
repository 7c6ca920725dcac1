"""The grain input pipeline: Still Box scenes from `tfds.data_source` to host batches of image pairs and depth.

    source = input_pipeline.open_source('tfds_stillbox/synth64', 'train', data_dir)
    ds = input_pipeline.train_dataset(source, global_batch_size=32, seed=0)     # infinite, grain MapDataset
    it = input_pipeline.make_iterator(ds, worker_count=2)                       # state: it.get_state()
    batch = next(it)   # {'image_pair': [B, H, W, 6] f32, 'depth': [B, H, W] f32, 'mask': [B] f32,
                       #  'displacement': [B, 3] f32}

Training samples exactly as the original (docs/architecture.md, "The data"): each epoch visits every scene once
per frame it holds, in an order shuffled per epoch; per visit a first frame i1 ~ U[0, T), a shift round(2 S u), i2 =
min(T - 1, i1 + shift), a swap with p = 0.5, the depth of the second frame rescaled by S / |i2 - i1| (filled with
100 when i1 == i2), a vertical and a horizontal flip (p = 0.5 each), a clip to [0, 100] and the normalisation
(x / 255 - 0.5) / 0.2. Only the two frames and the one depth map a sample uses are decoded.

Evaluation visits every pair (i, i + S) of every scene once, in a fixed order; the last batch is padded with
copies of the first pair and `mask` is 0 on the padding.

Determinism: every sample is a pure function of (seed, its position in the global stream), where the global
stream is cut into global batches of `global_batch_size` and process p of P reads rows [p B/P, (p+1) B/P) of
each. So a run gives the same global batches whatever the worker count and the number of processes, and the
iterator can resume from any step (`get_state` / `set_state`, or `start_step`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
from typing import Any

import grain
import numpy as np
from absl import flags

# Targets are clipped to [0, MAX_DEPTH]; SHIFT is S, the original's nominal frame shift.
from depthnet_jax.common import processes, rotations
from depthnet_jax.common.conventions import MAX_DEPTH, SHIFT, normalize
from depthnet_jax.data import shards
from tfds_stillbox import codec


class DatasetNotBuiltError(FileNotFoundError):
  """The TFDS dataset a pipeline needs is not under data_dir."""


def open_source(dataset: str, split: str, data_dir: str | None = None):
  """`tfds.data_source` of a built Still Box config, e.g. 'tfds_stillbox/synth64'; a one-line error if not built.

  Every shard file the split lists is checked first (`shards.verify`: there, readable, the record count
  dataset_info.json records; a `shards.ShardError` names the file), and a record found damaged while reading is a
  `shards.DamagedRecordError` naming the file and the record (`shards.CheckedSource`)."""
  import tensorflow_datasets as tfds

  from tfds_stillbox import tfds_stillbox_dataset_builder as tfds_stillbox  # registers the builder
  try:
    source = tfds.data_source(dataset, split=split, data_dir=data_dir, download=False, try_gcs=False)
  except (tfds.core.registered.DatasetNotFoundError, KeyError, ValueError) as e:
    # KeyError: a folder with no finished build; ValueError: an unknown config (or split) of the builder.
    name, _, config = dataset.partition('/')
    config = config.partition(':')[0]
    where = data_dir or os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')
    known = list(tfds_stillbox.Builder.builder_configs)
    if name != 'tfds_stillbox' or not config:
      raise DatasetNotBuiltError(f"dataset {dataset!r}: expected 'tfds_stillbox/<config>' (built-in configs: "
                                 f'{", ".join(known)})') from None
    if isinstance(e, ValueError) and 'BuilderConfig' not in str(e):  # e.g. an unknown split
      reason = '; '.join(line.strip() for line in str(e).splitlines() if line.strip())
      raise ValueError(f'dataset {dataset!r} under data_dir {where}: {reason}') from e
    if config in known:
      hint = f'tfds build tfds_stillbox --config {config} --data_dir {where}'
      if not config.startswith('synth'):
        hint += ' --manual_dir <Still Box root>'
      raise DatasetNotBuiltError(f'dataset {dataset!r} is not built (or not completely) under data_dir {where}: '
                                 f'build it first with `{hint}`') from None
    close = difflib.get_close_matches(config, known, n=2, cutoff=0.6)
    raise DatasetNotBuiltError(
        f'dataset {dataset!r} is not built under data_dir {where}, and {config!r} is not a built-in config'
        f'{" (did you mean " + " or ".join(close) + "?)" if close else ""}: expected one of {", ".join(known)} '
        f'(build it with `tfds build tfds_stillbox --config <name> --data_dir {where}`), or the name of a JSON '
        'config built there') from None
  return shards.checked(source)


def frames_per_scene(source) -> int:
  """T, the frames of a scene, read from the first record (every Still Box scene has the same count)."""
  if len(source) == 0:
    raise ValueError('the split holds no scene')
  return len(source[0]['frames'])


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where a process's sample sits in the global stream of batches."""
  global_batch_size: int
  process_index: int = 0
  process_count: int = 1

  def __post_init__(self):
    if self.process_count < 1 or not 0 <= self.process_index < self.process_count:
      raise ValueError(f'process_index {self.process_index} out of range for process_count {self.process_count}')
    if self.global_batch_size < 1 or self.global_batch_size % self.process_count:
      raise ValueError(f'global_batch_size {self.global_batch_size} must be a positive multiple of the '
                       f'process count {self.process_count}')

  @property
  def local_batch_size(self) -> int:
    return self.global_batch_size // self.process_count

  def global_position(self, local_index: int) -> int:
    """Local stream index -> global stream index (step * B + this process's row)."""
    step, row = divmod(local_index, self.local_batch_size)
    return step * self.global_batch_size + self.process_index * self.local_batch_size + row


class TrainSample:
  """Global stream position -> one training sample; a picklable grain map function (opens its source lazily)."""

  def __init__(self, source, *, seed: int, shift: int, layout: Layout, steps_per_epoch: int):
    self._source = source
    self._seed = int(seed)
    self._shift = shift
    self._layout = layout
    self._num_scenes = len(source)
    self._frames = frames_per_scene(source)
    self._steps_per_epoch = steps_per_epoch
    self._perm_epoch, self._perm = -1, None

  def __getstate__(self):
    state = dict(self.__dict__)
    state['_perm_epoch'], state['_perm'] = -1, None
    return state

  def _order(self, epoch: int) -> np.ndarray:
    """The epoch's visiting order: each scene T times, shuffled by (seed, epoch)."""
    if epoch != self._perm_epoch:
      rng = np.random.default_rng([self._seed, epoch, 0x5EED])
      self._perm = rng.permutation(self._num_scenes * self._frames) % self._num_scenes
      self._perm_epoch = epoch
    return self._perm

  def __call__(self, local_index: int) -> dict[str, np.ndarray]:
    position = self._layout.global_position(int(local_index))
    epoch, in_epoch = divmod(position, self._steps_per_epoch * self._layout.global_batch_size)
    scene_index = int(self._order(epoch)[in_epoch])
    # One generator per sample, keyed by its place in the stream: independent of workers and processes.
    rng = np.random.default_rng([self._seed, epoch, in_epoch, 1])
    u_i1, u_shift, u_swap, u_vflip, u_hflip = rng.random(5)
    return sample_pair(self._source[scene_index], self._frames, self._shift,
                       u_i1, u_shift, u_swap < 0.5, u_vflip < 0.5, u_hflip < 0.5)


def displacement_length(displacement) -> np.ndarray:
  """|displacement| (last axis) in metres, rounded to 6 decimals: a pair's distance as checkpoints record the
  nominal one and evaluation compares with it (the float32 record of 0.1 s x 1 m/s is not exactly 0.1)."""
  return np.round(np.linalg.norm(np.asarray(displacement, np.float64), axis=-1), 6)


def sample_pair(record: dict[str, Any], frames: int, shift: int, u_i1: float, u_shift: float, swap: bool,
                vflip: bool, hflip: bool) -> dict[str, np.ndarray]:
  """The original's training sample of one scene, from uniform draws; pure, so the tests can drive it."""
  i1 = min(int(u_i1 * frames), frames - 1)
  i2 = min(frames - 1, i1 + int(math.floor(2 * shift * u_shift + 0.5)))
  # Displacement of the camera from the first to the second frame, at the nominal shift S the target assumes.
  displacement = shift * float(record['time_step']) * np.asarray(record['speed'], np.float32)
  if swap:
    i1, i2 = i2, i1
    displacement = -displacement
  first, second = (codec.decode_jpeg(record['frames'][i]) for i in (i1, i2))
  if i1 == i2:
    depth = np.full(first.shape[:2], MAX_DEPTH, np.float32)
  else:
    depth = codec.decode_depth(record['depth'][i2]) * np.float32(shift / abs(i2 - i1))
  pair = np.concatenate([first, second], axis=-1)  # [H, W, 6] uint8, frame i1 first
  if vflip:
    pair, depth = pair[::-1], depth[::-1]
    displacement = displacement * np.array([1, -1, 1], np.float32)
  if hflip:
    pair, depth = pair[:, ::-1], depth[:, ::-1]
    displacement = displacement * np.array([-1, 1, 1], np.float32)
  return {'image_pair': normalize(pair),
          'depth': np.clip(depth, 0, MAX_DEPTH).astype(np.float32),
          'mask': np.float32(1),
          'displacement': displacement.astype(np.float32),
          'pair': np.array([i1, i2], np.int32)}


def stabilized(record, i: int, j: int, first: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Frame i of a scene record warped into frame j's orientation (the record's `orientation`, [T, 4] w, x, y, z;
  K of its FOV at its size: `rotations.homography`), and frame j's depth set to 0 (not evaluated) where the warped
  frame has no source pixel: the follow-up's `--stabilize-from-GT`."""
  orientation = record.get('orientation')
  if orientation is None or not len(orientation):
    return first, depth
  h, w = first.shape[:2]
  k = rotations.intrinsics(w, h, float(record['fov']))
  r = rotations.quaternion_to_matrix(np.asarray(orientation, np.float64)[[i, j]])
  warped, valid = rotations.warp(first, rotations.homography(k, r[0], r[1]))
  return warped, np.where(valid, depth, 0).astype(depth.dtype)


class EvalSample:
  """Global stream position -> the pair (i, i + S) it names, or padding (mask 0) past the last pair."""

  def __init__(self, source, *, shift: int, layout: Layout, stabilize: bool = False):
    self._source = source
    self._shift = shift
    self._layout = layout
    self._stabilize = stabilize
    frames = frames_per_scene(source)
    if frames <= shift:
      raise ValueError(f'scenes of {frames} frames hold no pair at shift {shift}')
    self._pairs_per_scene = frames - shift
    self.num_pairs = len(source) * self._pairs_per_scene

  def __call__(self, local_index: int) -> dict[str, np.ndarray]:
    position = self._layout.global_position(int(local_index))
    valid = position < self.num_pairs
    scene_index, i = divmod(position if valid else 0, self._pairs_per_scene)
    record = self._source[scene_index]
    first, second = (codec.decode_jpeg(record['frames'][j]) for j in (i, i + self._shift))
    depth = codec.decode_depth(record['depth'][i + self._shift])
    if self._stabilize:
      first, depth = stabilized(record, i, i + self._shift, first, depth)
    displacement = self._shift * float(record['time_step']) * np.asarray(record['speed'], np.float32)
    return {'image_pair': normalize(np.concatenate([first, second], axis=-1)),
            'depth': np.clip(depth, 0, MAX_DEPTH).astype(np.float32),
            'mask': np.float32(valid),
            'displacement': displacement.astype(np.float32),
            'pair': np.array([i, i + self._shift], np.int32)}


def steps_per_epoch(num_scenes: int, frames: int, global_batch_size: int) -> int:
  """Full global batches in an epoch of `num_scenes * frames` samples (the tail is dropped, as the original)."""
  steps = num_scenes * frames // global_batch_size
  if steps == 0:
    raise ValueError(f'an epoch of {num_scenes} scenes x {frames} frames holds no full batch of '
                     f'{global_batch_size}: lower the batch size or build more scenes')
  return steps


def train_dataset(source, *, global_batch_size: int, seed: int, shift: int = SHIFT, process_index: int = 0,
                  process_count: int = 1, num_epochs: int | None = None) -> grain.MapDataset:
  """Training batches of this process, endless (or `num_epochs` long); element k is the local batch of step k."""
  layout = Layout(global_batch_size, process_index, process_count)
  steps = steps_per_epoch(len(source), frames_per_scene(source), global_batch_size)
  total_steps = steps * num_epochs if num_epochs else 2**62 // global_batch_size
  sample = TrainSample(source, seed=seed, shift=shift, layout=layout, steps_per_epoch=steps)
  ds = grain.MapDataset.range(total_steps * layout.local_batch_size).map(sample)
  return ds.batch(layout.local_batch_size, drop_remainder=True)


def eval_dataset(source, *, global_batch_size: int, shift: int = SHIFT, process_index: int = 0,
                 process_count: int = 1, stabilize: bool = False) -> grain.MapDataset:
  """Evaluation batches of this process: every pair once, the tail padded (mask 0); equal counts everywhere.
  `stabilize`: each pair's first frame in the second's orientation (`stabilized`)."""
  layout = Layout(global_batch_size, process_index, process_count)
  sample = EvalSample(source, shift=shift, layout=layout, stabilize=stabilize)
  steps = -(-sample.num_pairs // global_batch_size)
  ds = grain.MapDataset.range(steps * layout.local_batch_size).map(sample)
  return ds.batch(layout.local_batch_size, drop_remainder=True)


def make_iterator(ds: grain.MapDataset, worker_count: int = 0, prefetch_buffer_size: int = 2,
                  start_step: int = 0):
  """A checkpointable iterator (`get_state` / `set_state`) over `ds`, from batch `start_step`.

  Args:
    ds: from `train_dataset` or `eval_dataset`.
    worker_count: 0 decodes in this process (threads); N > 0 in N worker processes. The batches are the same. The
      workers die with this process, however it ends (`processes.init_worker`), and leave Ctrl-C to it.
    prefetch_buffer_size: batches each worker prepares ahead.
    start_step: first batch to yield (resume without a saved state).
  """
  if start_step:
    ds = ds[start_step:]
  # Elements are whole batches, so workers and threads split the stream by batch and a batch is the same
  # whoever builds it (grain interleaves the workers' outputs back into order).
  threads = max(1, min(4, os.cpu_count() or 1))
  iter_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                 prefetch_buffer_size=max(threads, prefetch_buffer_size)))
  if worker_count > 0:
    # grain's worker start-up reads its absl flags; outside an absl app (tests, notebooks) use their defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                               per_worker_buffer_size=prefetch_buffer_size),
                                  worker_init_fn=functools.partial(processes.init_worker, os.getpid()))
  return iter(iter_ds)
