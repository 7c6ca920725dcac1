"""Procedural Still-Box-like scenes: random textured shapes in a textured room, seen by a translating camera.

    python -m tfds_stillbox.render --out DIR --resolution 64 --scenes 1000 --seed 0 [--fov 90] [--frames 10]
        [--jobs 4] [--scenes_per_folder 100] [--contact_sheet sheet.png]

A scene is a static world (a randomly rotated box room, walls 8 to 150 m away, and 12 to 40 spheres, ellipsoids,
boxes, cylinders, cones and tori of random size, position, orientation and solid texture; one random directional
light plus ambient, Lambert) and a camera in pure translation at constant velocity: frame i is at
`i * time_step * speed`, and every scene moves the camera by exactly 0.1 m per frame (0.3 m over the nominal
frame shift of 3) in a direction uniform on the sphere, so that depth from two frames is metric, as in Still
Box. Apparent size is drawn independently of depth (see render_world.sample_world).

Depth is planar z-depth in metres: the distance along the optical axis, not the length of the ray (a
fronto-parallel wall at distance d reads d at every pixel). It is not clipped; over many scenes the median
pixel is ~18 m away, 1 % of pixels are nearer than 1 m and ~2 % beyond 100 m. Camera axes: x image-right,
y image-down, z forward; see render_world for the pinhole model.

Everything is a pure function of the seed: the same seed gives the same bytes. `export` writes the Still Box
on-disk layout (see tfds_stillbox/tree.py), where scene s is `render_scene((seed, s), ...)`.

Lower-level pieces, for custom scenes: the shapes of render_shapes (each with `intersect(origins, directions)
-> (t, normal)`), render_textures.Material, `render_frame(objects, camera_position, resolution, fov)` and
`render_frames`, `sample_world(seed, resolution, fov, num_frames)`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from typing import NamedTuple

import numpy as np

from tfds_stillbox import codec
from tfds_stillbox.render_shapes import Box, Ellipsoid, Frustum, Room, Shape, Sphere, Torus  # noqa: F401
from tfds_stillbox.render_textures import Material  # noqa: F401
from tfds_stillbox.render_world import (  # noqa: F401
    STEP, SUPERSAMPLE, World, as_resolution, focal_length, render_frame, render_frames, sample_world)

__all__ = [
    'Box', 'Ellipsoid', 'Frustum', 'Material', 'Room', 'STEP', 'Scene', 'Shape', 'Sphere', 'Torus', 'World',
    'contact_sheet', 'depth_colormap', 'export', 'focal_length', 'main', 'render_frame', 'render_frames',
    'render_scene', 'resolution_name', 'sample_world',
]

GENERATOR = 'depthnet-jax tfds_stillbox.render'
MAX_DEPTH = 100.0  # metres: the top of the training targets' range, and of the contact sheet's colormap


class Scene(NamedTuple):
  """A rendered scene; frame i is seen from `i * time_step * speed`."""
  frames: np.ndarray  # uint8 [T, H, W, 3]
  depth: np.ndarray  # float32 [T, H, W], planar z-depth in metres
  speed: np.ndarray  # float32 [3], m/s in camera axes (x right, y down, z forward); |time_step * speed| = 0.1
  time_step: float  # seconds


def render_scene(seed, resolution, fov: float = 90.0, num_frames: int = 10, *,
                 supersample: int = SUPERSAMPLE) -> Scene:
  """Samples (sample_world) and renders the scene of `seed` (an int or a tuple of ints).

  Args:
    seed: int or tuple of non-negative ints, e.g. (dataset_seed, scene_index).
    resolution: int (square) or (width, height).
    fov: horizontal field of view, degrees.
    num_frames: frames in the scene.
    supersample: colour rays per pixel and axis (anti-aliased edges); depth is always the pixel-centre ray's.
  """
  world = sample_world(seed, resolution, fov, num_frames)
  frames, depth = render_frames(world.objects, world.positions, resolution, fov, light=world.light,
                                ambient=world.ambient, supersample=supersample)
  return Scene(frames=frames, depth=depth, speed=world.speed, time_step=world.time_step)


def resolution_name(resolution) -> str:
  """The folder name of a resolution: '64' for square 64, '96x64' for width 96, height 64."""
  w, h = as_resolution(resolution)
  return str(w) if w == h else f'{w}x{h}'


# --- Export ---------------------------------------------------------------------------------------------


def _export_scene(job: tuple) -> dict:
  """Renders scene `index` into `folder` as entry `position` of its metadata; returns that entry."""
  folder, position, seed, index, resolution, fov, num_frames = job
  scene = render_scene((seed, index), resolution, fov=fov, num_frames=num_frames)
  imgs, depths = [], []
  for t in range(len(scene.frames)):
    imgs.append(f'RGB_{position:04d}_{t:02d}.jpg')
    depths.append(f'D_{position:04d}_{t:02d}.npy')
    with open(os.path.join(folder, imgs[-1]), 'wb') as f:
      f.write(codec.encode_jpeg(scene.frames[t]))
    np.save(os.path.join(folder, depths[-1]), scene.depth[t].astype(np.float32), allow_pickle=False)
  return {'imgs': imgs, 'depth': depths, 'speed': [float(v) for v in scene.speed],
          'time_step': float(scene.time_step), 'orientation': [], 'length': len(imgs)}


class _Progress:
  """`done/total scenes, rate, ETA` on stderr, rewritten in place at most a few times a second."""

  def __init__(self, total: int, stream=None):
    self.total, self.stream, self.start, self.last = total, stream or sys.stderr, time.monotonic(), -1.0

  def update(self, done: int) -> None:
    now = time.monotonic()
    if done < self.total and now - self.last < 0.25:
      return
    self.last = now
    rate = done / max(now - self.start, 1e-9)
    eta = (self.total - done) / rate if rate > 0 else float('inf')
    eta_text = f'{int(eta // 3600)}:{int(eta % 3600 // 60):02d}:{int(eta % 60):02d}' if np.isfinite(eta) else '?'
    self.stream.write(f'\rrendered {done}/{self.total} scenes, {rate:.2f} scenes/s, ETA {eta_text}  ')
    if done >= self.total:
      self.stream.write('\n')
    self.stream.flush()


def export(out_dir: str, resolution, num_scenes: int, seed: int, fov: float = 90.0, num_frames: int = 10,
           scenes_per_folder: int = 100, jobs: int = 1) -> str:
  """Renders scenes 0..num_scenes-1 of `seed` into the Still Box layout; returns `<out_dir>/<R>`.

  Writes `<out_dir>/<R>/<k>/metadata.json` plus the frame JPEGs and depth `.npy` files of sub-folder k (scenes
  k * scenes_per_folder onwards), R being '64' or '96x64'. Everything goes to a temporary folder next to the
  target, renamed when complete: an interrupted export leaves no `<out_dir>/<R>` behind.

  Args:
    out_dir: parent folder (created if missing).
    resolution: int (square) or (width, height).
    num_scenes: scenes to render; scene s is `render_scene((seed, s), resolution, fov, num_frames)`.
    seed: non-negative int.
    fov: horizontal field of view, degrees.
    num_frames: frames per scene.
    scenes_per_folder: scenes per numbered sub-folder.
    jobs: rendering processes (1: in this process; 0: one per core).

  Raises:
    FileExistsError: `<out_dir>/<R>` exists already.
  """
  w, h = as_resolution(resolution)
  if num_scenes < 1 or scenes_per_folder < 1 or num_frames < 1:
    raise ValueError('num_scenes, scenes_per_folder and num_frames must be at least 1')
  if int(seed) != seed or seed < 0:
    raise ValueError(f'seed must be a non-negative int, got {seed!r}')
  target = os.path.join(out_dir, resolution_name((w, h)))
  if os.path.exists(target):
    raise FileExistsError(f'{target} exists already: remove it or export elsewhere')
  os.makedirs(out_dir, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{resolution_name((w, h))}.partial-', dir=out_dir)
  try:
    folders = [os.path.join(tmp, str(k)) for k in range((num_scenes + scenes_per_folder - 1) // scenes_per_folder)]
    for folder in folders:
      os.mkdir(folder)
    jobs_list = [(folders[s // scenes_per_folder], s % scenes_per_folder, int(seed), s, (w, h), float(fov),
                  int(num_frames)) for s in range(num_scenes)]
    scenes = _run(jobs_list, jobs)
    for k, folder in enumerate(folders):
      metadata = {'args': {'fov': float(fov), 'resolution': [w, h], 'seed': int(seed), 'num_frames': int(num_frames),
                           'generator': GENERATOR},
                  'scenes': scenes[k * scenes_per_folder:(k + 1) * scenes_per_folder]}
      with open(os.path.join(folder, 'metadata.json'), 'w') as f:
        json.dump(metadata, f, indent=1)
    if os.path.exists(target):  # appeared while rendering
      raise FileExistsError(f'{target} appeared during the export; the new one is not moved there')
    os.rename(tmp, target)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return target


def _run(jobs_list: list, jobs: int) -> list[dict]:
  """Runs _export_scene over the jobs, in order, in `jobs` processes, with a progress line."""
  progress = _Progress(len(jobs_list))
  workers = min(jobs or os.cpu_count() or 1, len(jobs_list))
  results = []
  if workers <= 1:
    for job in jobs_list:
      results.append(_export_scene(job))
      progress.update(len(results))
    return results
  # forkserver/spawn, not fork: the parent may run threads (JAX, TF) that fork would copy mid-flight.
  method = 'forkserver' if 'forkserver' in multiprocessing.get_all_start_methods() else 'spawn'
  pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
  try:
    for entry in pool.map(_export_scene, jobs_list, chunksize=max(1, min(8, len(jobs_list) // (8 * workers)))):
      results.append(entry)
      progress.update(len(results))
  finally:
    # On error, drop the queued scenes and wait for the running ones, so no worker writes into a deleted folder.
    pool.shutdown(wait=True, cancel_futures=True)
  return results


# --- Contact sheet --------------------------------------------------------------------------------------

# (depth / max_depth, R, G, B): near is dark violet, then blue, cyan, green, yellow, orange, and dark red at 100 m.
_COLORMAP = np.array([[0.0, 0.17, 0.0, 0.3], [0.1, 0.2, 0.3, 1.0], [0.3, 0.0, 0.8, 0.8], [0.5, 0.5, 0.9, 0.2],
                      [0.7, 1.0, 0.8, 0.0], [0.85, 1.0, 0.35, 0.0], [1.0, 0.55, 0.0, 0.05]])


def depth_colormap(depth: np.ndarray, max_depth: float = MAX_DEPTH) -> np.ndarray:
  """Depth [...] in metres -> RGB uint8 [..., 3], linear from 0 to max_depth (beyond: the last colour)."""
  s = np.clip(np.nan_to_num(np.asarray(depth, np.float64) / max_depth, nan=1.0, posinf=1.0), 0.0, 1.0)
  rgb = np.stack([np.interp(s, _COLORMAP[:, 0], _COLORMAP[:, c]) for c in (1, 2, 3)], -1)
  return (rgb * 255.0 + 0.5).astype(np.uint8)


def contact_sheet(path: str, resolution=128, num_scenes: int = 6, seed: int = 0, fov: float = 90.0,
                  num_frames: int = 10, shown: tuple[int, ...] = (0, 3, 6, 9)) -> np.ndarray:
  """Writes a PNG: one row per scene `(seed, s)`, its frames `shown` then their depth maps (0..100 m).

  Returns the sheet, uint8 [rows, columns, 3].
  """
  import imageio.v3 as iio
  w, h = as_resolution(resolution)
  shown = [t for t in shown if t < num_frames] or [0]
  gap, split = 4, 12  # white between tiles, and between the frames and the depth maps
  rows = []
  for s in range(num_scenes):
    scene = render_scene((seed, s), (w, h), fov=fov, num_frames=num_frames)
    tiles = [scene.frames[t] for t in shown] + [depth_colormap(scene.depth[t]) for t in shown]
    row = np.full((h, len(tiles) * (w + gap) + gap + split, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
      x0 = gap + i * (w + gap) + (split if i >= len(shown) else 0)
      row[:, x0:x0 + w] = tile
    rows.append(row)
  spacer = np.full((gap, rows[0].shape[1], 3), 255, np.uint8)
  sheet = np.concatenate([spacer] + [r for row in rows for r in (row, spacer)], 0)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  iio.imwrite(path, sheet)
  return sheet


# --- Command line ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m tfds_stillbox.render', description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', help='parent folder: the tree goes to OUT/<R>/<k>/ (R: 64, or 96x64)')
  parser.add_argument('--resolution', default='64', help="'64' (square) or WIDTHxHEIGHT, e.g. '96x64'")
  parser.add_argument('--scenes', type=int, default=100, help='number of scenes')
  parser.add_argument('--seed', type=int, default=0, help='scene s is rendered from the seed (SEED, s)')
  parser.add_argument('--fov', type=float, default=90.0, help='horizontal field of view, degrees')
  parser.add_argument('--frames', type=int, default=10, help='frames per scene')
  parser.add_argument('--jobs', type=int, default=1, help='rendering processes (0: one per core)')
  parser.add_argument('--scenes_per_folder', type=int, default=100, help='scenes per numbered sub-folder')
  parser.add_argument('--contact_sheet', metavar='PNG',
                      help='also (or, without --out, only) draw the first min(SCENES, 8) scenes into this PNG')
  args = parser.parse_args(argv)
  if not args.out and not args.contact_sheet:
    parser.error('give --out, --contact_sheet, or both')
  try:
    resolution = as_resolution(args.resolution)
  except ValueError:
    parser.error(f"--resolution must be like '64' or '96x64', got {args.resolution!r}")
  if args.out:
    try:
      path = export(args.out, resolution, args.scenes, args.seed, fov=args.fov, num_frames=args.frames,
                    scenes_per_folder=args.scenes_per_folder, jobs=args.jobs)
    except FileExistsError as e:
      print(f'error: {e}', file=sys.stderr)
      return 1
    print(f'wrote {args.scenes} scenes to {path}')
  if args.contact_sheet:
    contact_sheet(args.contact_sheet, resolution, min(args.scenes, 8), args.seed, args.fov, args.frames,
                  shown=tuple(sorted({0, args.frames // 3, 2 * args.frames // 3, args.frames - 1})))
    print(f'wrote a contact sheet to {args.contact_sheet}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
