"""Reads a tree in the Still Box layout (the real dataset, or what `tfds_stillbox.render` exports).

    <root>/<k>/metadata.json     k: numbered sub-folders
    <root>/<k>/<frame files>     listed by metadata.json's scenes[].imgs (JPEG) and scenes[].depth (.npy)

Only the metadata lists name files: scene and frame indices are positions in those lists, never parsed from file
names (the published lists use several zero paddings). Every problem names the file and what was wrong.

The values taken from a tree are checked: a scene's `speed` (three finite numbers, m/s; a component may be negative,
it is a direction; all three 0 is a camera standing still, valid) and `time_step` (a finite number of seconds > 0)
by `check_motion`, and each depth map (finite floats >= 0 m, the frames' size) as its scene is read (`load_scene`,
which checks the motion too): one `StillBoxFormatError` naming the file and the field or value.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from tfds_stillbox import codec


class StillBoxFormatError(ValueError):
  """A tree that does not follow the Still Box layout; the message names the file and what was wrong."""


@dataclasses.dataclass(frozen=True)
class SceneRef:
  """Where one scene of a tree is described: `metadata.json` of `folder`, entry `index` of its scenes."""
  folder: str
  index: int
  scene: dict[str, Any]
  fov: float
  resolution: tuple[int, int] | None  # (width, height) from metadata args, when given

  @property
  def id(self) -> str:
    """Stable scene id: `<sub-folder>/<index>`."""
    return f'{os.path.basename(self.folder)}/{self.index}'


def resolution_dir(manual_dir: str, resolution: str) -> str:
  """The folder holding the numbered sub-folders: `<manual_dir>/<resolution>`, or manual_dir itself."""
  candidate = os.path.join(manual_dir, resolution)
  if os.path.isdir(candidate):
    return candidate
  if _numbered_subfolders(manual_dir):
    return manual_dir
  raise StillBoxFormatError(
      f'{manual_dir}: no Still Box tree for resolution {resolution}: expected {candidate}/<k>/metadata.json '
      f'(or <k>/metadata.json directly in {manual_dir})')


def _numbered_subfolders(root: str) -> list[str]:
  if not os.path.isdir(root):
    return []
  names = [n for n in os.listdir(root) if n.isdigit() and os.path.isdir(os.path.join(root, n))]
  return [os.path.join(root, n) for n in sorted(names, key=int)]


def _require(condition: bool, where: str, message: str) -> None:
  if not condition:
    raise StillBoxFormatError(f'{where}: {message}')


def list_scenes(root: str) -> list[SceneRef]:
  """Every scene of every numbered sub-folder of `root`, in folder then list order; metadata checked."""
  folders = _numbered_subfolders(root)
  _require(bool(folders), root, 'no numbered sub-folders (<k>/metadata.json) found')
  refs = []
  for folder in folders:
    path = os.path.join(folder, 'metadata.json')
    _require(os.path.isfile(path), path, 'missing: every sub-folder of a Still Box tree has a metadata.json')
    try:
      with open(path) as f:
        metadata = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise StillBoxFormatError(f'{path}: not readable JSON ({e})') from None
    _require(isinstance(metadata, dict) and isinstance(metadata.get('scenes'), list), path,
             "expected an object with a 'scenes' list")
    args = metadata.get('args') or {}
    fov = float(args.get('fov', 90.0))
    resolution = tuple(int(v) for v in args['resolution']) if args.get('resolution') else None
    for index, scene in enumerate(metadata['scenes']):
      where = f'{path}: scenes[{index}]'
      _require(isinstance(scene, dict), where, 'expected an object')
      for field in ('imgs', 'depth', 'speed', 'time_step'):
        _require(field in scene, where, f"missing field '{field}'")
      _require(isinstance(scene['imgs'], list) and len(scene['imgs']) >= 2, where,
               "'imgs' must list at least 2 frames")
      _require(isinstance(scene['depth'], list) and len(scene['depth']) == len(scene['imgs']), where,
               f"'depth' must list one file per frame ({len(scene['imgs'])})")
      _require(np.shape(scene['speed']) == (3,), where, f"'speed' must be 3 numbers, got {scene['speed']!r}")
      refs.append(SceneRef(folder, index, scene, fov, resolution))
  return refs


def _finite(value) -> bool:
  """A finite number as JSON (or NumPy) gives it; not a bool, a string or a list."""
  return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)) and \
      math.isfinite(value)


def check_motion(ref: SceneRef) -> None:
  """A scene's `speed` (3 finite numbers) and `time_step` (finite, > 0) as metadata.json gives them, else a
  StillBoxFormatError naming the file, the scene and the field."""
  where = f'{os.path.join(ref.folder, "metadata.json")}: scenes[{ref.index}]'
  speed = ref.scene['speed']
  numbers = isinstance(speed, (list, tuple, np.ndarray)) and len(speed) == 3 and all(_finite(v) for v in speed)
  _require(numbers, where, f"'speed' {speed!r}: expected 3 finite numbers (the velocity in m/s; a zero vector is a "
           'camera standing still)')
  step = ref.scene['time_step']
  _require(_finite(step) and step > 0, where,
           f"'time_step' {step!r}: expected a finite number of seconds > 0 (the time between two frames)")


def orientations(ref: SceneRef) -> np.ndarray:
  """A scene's `orientation` (rotated Still Box: one camera-to-world quaternion [w, x, y, z] per frame) as
  [T, 4] float64, normalised; [0, 4] when the list is empty or missing (a camera that does not rotate). A
  StillBoxFormatError naming the file, the scene and the field when it is not one unit quaternion per frame."""
  where = f'{os.path.join(ref.folder, "metadata.json")}: scenes[{ref.index}]'
  value = ref.scene.get('orientation') or []
  frames = len(ref.scene['imgs'])
  numbers = isinstance(value, list) and all(isinstance(q, list) and len(q) == 4 and all(_finite(v) for v in q)
                                            for q in value)
  _require(numbers and len(value) in (0, frames), where, f"'orientation': expected [] or {frames} quaternions "
           '[w, x, y, z] (one per frame)')
  q = np.asarray(value, np.float64).reshape(-1, 4)
  norms = np.linalg.norm(q, axis=1)
  bad = np.flatnonzero(np.abs(norms - 1) > 1e-2)
  _require(not len(bad), where, f"'orientation'[{bad[0] if len(bad) else 0}]: norm "
           f"{norms[bad[0]] if len(bad) else 1:.4g}; expected unit quaternions")
  return q / norms[:, None] if len(q) else q


def load_scene(ref: SceneRef, expected_size: tuple[int, int] | None = None) -> dict[str, Any]:
  """Reads and checks one scene; returns its TFDS example (frames as their JPEG bytes, depth encoded).

  Args:
    ref: the scene.
    expected_size: (height, width) every frame and depth map must have (default: the first frame's).

  Raises:
    StillBoxFormatError: an impossible speed or time step (`check_motion`), a listed file missing or unreadable,
      an undecodable image, frames of different sizes, a depth map of the wrong shape, with non-finite values or
      with values below 0 m.
  """
  check_motion(ref)
  frames, depths = [], []
  size = expected_size
  for name in ref.scene['imgs']:
    path = os.path.join(ref.folder, name)
    _require(os.path.isfile(path), path, f'listed in scene {ref.id} but missing')
    with open(path, 'rb') as f:
      data = f.read()
    try:
      image = codec.decode_jpeg(data)
    except Exception as e:  # noqa: BLE001 - any decoder failure means the same thing here
      raise StillBoxFormatError(f'{path}: not a readable image ({e})') from None
    if size is None:
      size = image.shape[:2]
    _require(image.shape[:2] == tuple(size), path, f'frame of size {image.shape[1]}x{image.shape[0]}, expected '
             f'{size[1]}x{size[0]} (width x height) like the rest of the scene')
    frames.append(data)
  for name in ref.scene['depth']:
    path = os.path.join(ref.folder, name)
    _require(os.path.isfile(path), path, f'listed in scene {ref.id} but missing')
    try:
      depth = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise StillBoxFormatError(f'{path}: not a readable .npy depth map ({e})') from None
    depth = np.squeeze(depth) if depth.ndim == 3 and 1 in (depth.shape[0], depth.shape[-1]) else depth
    _require(depth.shape == tuple(size), path, f'depth map of shape {depth.shape}, expected {tuple(size)} '
             '(height, width of the frames)')
    _require(depth.dtype.kind == 'f' and bool(np.all(np.isfinite(depth))), path,
             f'depth must be finite floats (metres), got {depth.dtype}' +
             ('' if depth.dtype.kind != 'f' else ' with non-finite values'))
    low = float(np.min(depth)) if depth.size else 0.0
    _require(low >= 0, path, f'depth map of scene {ref.id} holds values below 0 (min {low:g} m); expected depths '
             '>= 0 m')
    depths.append(codec.encode_depth(depth))
  return {
      'id': ref.id,
      'frames': frames,
      'depth': depths,
      'speed': np.asarray(ref.scene['speed'], np.float32),
      'time_step': np.float32(ref.scene['time_step']),
      'fov': np.float32(ref.fov),
      'height': np.int32(size[0]),
      'width': np.int32(size[1]),
  }


def iter_examples(refs: list[SceneRef], expected_size, skip_bad: bool, skipped: list) -> Iterator[tuple]:
  """(id, example) of each scene; with `skip_bad`, scenes with problems are left out and listed in `skipped`."""
  for ref in refs:
    try:
      yield ref.id, load_scene(ref, expected_size)
    except StillBoxFormatError as e:
      if not skip_bad:
        raise
      skipped.append(str(e))
