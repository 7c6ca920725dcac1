"""The scene sources an evaluation reads, opened with errors that name the flag: a Still Box tree as records of the
TFDS format (`TreeSource`, `open_tree`), or a built TFDS split (`open_dataset`).

A tree is read with `tfds_stillbox.tree` into records of the TFDS dataset's format, so that `input_pipeline` reads
both alike; every scene of a tree is evaluated (a built dataset's `validation` split holds only the scenes training
did not see). The values an evaluation takes from a tree are checked (`tfds_stillbox.tree`, as a build from a tree
checks them): each scene's `speed` (three finite numbers, m/s; a component may be negative, it is a direction) and
`time_step` (a finite number of seconds > 0) when the tree is opened, each depth map's values (finite, >= 0 m) when
its scene is read. A scene whose speed is zero is valid (its camera stands still): the evaluation skips and counts
its pairs (`evaluate.evaluate`).
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Any

import numpy as np

from depthnet_jax.common import cli
from depthnet_jax.data import input_pipeline, shards
from tfds_stillbox import tree


class TreeSource:
  """Random access to the scenes of a Still Box tree (`<root>/<k>/metadata.json`) as records in the format of
  the TFDS dataset (`tfds_stillbox.tree.load_scene`), so that `input_pipeline` reads both alike. The layout, the
  metadata and the first scene are checked when it is made; the last few scenes read are kept (evaluation reads
  each scene once per pair)."""

  def __init__(self, root: str, cache: int = 8):
    self.root = os.path.abspath(root)
    self._refs = tree.list_scenes(self.root)
    frames = {len(r.scene['imgs']) for r in self._refs}
    if len(frames) > 1:
      odd = next(r for r in self._refs if len(r.scene['imgs']) != len(self._refs[0].scene['imgs']))
      raise tree.StillBoxFormatError(
          f'{os.path.join(odd.folder, "metadata.json")}: scene {odd.id} has {len(odd.scene["imgs"])} frames, '
          f'scene {self._refs[0].id} {len(self._refs[0].scene["imgs"])}; expected the same number in every scene')
    for ref in self._refs:   # every listed file exists (their contents are checked as they are read)
      tree.check_motion(ref)
      for name in ref.scene['imgs'] + ref.scene['depth']:
        if not os.path.isfile(os.path.join(ref.folder, name)):
          raise tree.StillBoxFormatError(f'{os.path.join(ref.folder, name)}: listed in scene {ref.id} but missing')
    self._orientations = [tree.orientations(r) for r in self._refs]
    first = dict(tree.load_scene(self._refs[0]), orientation=self._orientations[0])
    self.size = (int(first['height']), int(first['width']))
    self._cache_size = cache
    self._cache: collections.OrderedDict[int, dict] = collections.OrderedDict({0: first})
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self._refs)

  @property
  def rotates(self) -> bool:
    """Whether any scene's metadata gives its camera's orientation per frame (a rotated Still Box)."""
    return any(len(o) for o in self._orientations)

  def still_scenes(self, shift: int) -> list[str]:
    """The ids of the scenes whose pairs `shift` frames apart have displacement 0 (speed 0: the camera stands
    still), from the metadata alone; the evaluation skips their pairs."""
    return [r.id for r in self._refs if input_pipeline.displacement_length(
        shift * float(r.scene['time_step']) * np.asarray(r.scene['speed'], np.float64)) == 0]

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    with self._lock:
      if index in self._cache:
        self._cache.move_to_end(index)
        return self._cache[index]
    record = dict(tree.load_scene(self._refs[index], self.size), orientation=self._orientations[index])
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
  try:
    return TreeSource(root)
  except tree.StillBoxFormatError as e:
    raise _tree_error(root, e) from e


def open_dataset(dataset: str, split: str, data_dir: str | None):
  """`tfds.data_source` of a built split (as training opens it, its shards checked); a dataset not built or an
  unknown split is a one-line `cli.UserError` naming the flag, a damaged shard a `shards.ShardError` naming the
  file."""
  try:
    source = input_pipeline.open_source(dataset, split, data_dir or None)
  except input_pipeline.DatasetNotBuiltError as e:
    raise cli.UserError(f'--dataset={dataset!r}: {cli.one_line(e)}') from e
  except shards.ShardError:   # a shard missing, unreadable or of another length: its line names the file
    raise
  except ValueError as e:   # an unknown split
    raise cli.UserError(f'--split={split!r}: {cli.one_line(e)}') from e
  if len(source) == 0:
    raise cli.UserError(f'--split={split!r}: the split of {dataset} holds no scene; expected a split with scenes')
  return source
