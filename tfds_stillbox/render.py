"""Procedural Still-Box-like scenes: random textured shapes in a textured room, seen by a translating camera.

    python -m tfds_stillbox.render --out DIR --resolution 64 --scenes 1000 --seed 0 [--fov 90] [--frames 10]
        [--jobs 4] [--scenes_per_folder 100] [--contact_sheet sheet.png [--overwrite]] [--debug]

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

On the command line every flag is checked before anything is written (its range is in `--help`); a mistake is
one `error:` line and exit code 1 (`--debug` or DEPTHNET_DEBUG=1 adds the traceback). `OUT/<R>` must not
exist, and an existing `--contact_sheet` file is replaced only with `--overwrite`. The tree is written to
`OUT/.<R>.partial-<host>-<pid>-*` and renamed when complete; the sheet likewise. Ctrl-C (exit 130) or SIGTERM
(143) removes the temporary folder or file; those a killed process left (SIGKILL) are removed by the next run
into the same folder, which says so (it never touches those of a live process or of another host).

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
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from typing import NamedTuple

import numpy as np

from depthnet_jax import cli
from depthnet_jax.cli import DEBUG_ENV, UserError, check_int, check_writable_dir  # noqa: F401 - re-exported
from tfds_stillbox import codec, render_world
from tfds_stillbox.render_shapes import Box, Ellipsoid, Frustum, Room, Shape, Sphere, Torus  # noqa: F401
from tfds_stillbox.render_textures import Material  # noqa: F401
from tfds_stillbox.render_world import (  # noqa: F401
    STEP, SUPERSAMPLE, World, as_resolution, focal_length, render_frame, render_frames, sample_world)

__all__ = [
    'Box', 'Ellipsoid', 'Frustum', 'Material', 'Room', 'STEP', 'Scene', 'Shape', 'Sphere', 'Torus', 'World',
    'contact_sheet', 'depth_colormap', 'export', 'focal_length', 'main', 'render_frame', 'render_frames',
    'render_scene', 'resolution_name', 'sample_world', 'UserError',
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


# --- Checks -----------------------------------------------------------------------------------------------
# The shared checks and errors come from depthnet_jax.cli (standard library only: importing it starts no JAX);
# the ones below are the renderer's own.

# Pixels per side on the command line and in builder configs (8x the largest Still Box): rendering takes ~45 bytes
# per pixel and frame, so a 4096 x 4096 scene of 10 frames needs ~7.5 GB; a typo like 6400 is refused up front.
MAX_RESOLUTION = 4096
MAX_FRAME_PIXELS = 10 * MAX_RESOLUTION ** 2  # frames x width x height of one scene, rendered at once (~7.5 GB)
MIN_FRAMES = 2  # on the command line and in builder configs: a training pair needs two frames of a scene


def check_fov(name: str, value) -> float:
  """`value` (degrees) in the open interval (0, 180): a pinhole camera sees less than a half space."""
  try:
    return render_world.check_fov(value)
  except ValueError:
    raise UserError(f'{name}={value!r}: expected a number of degrees in (0, 180)') from None


def check_resolution(name: str, value, maximum: int | None = MAX_RESOLUTION) -> tuple[int, int]:
  """'64', '96x64', 64 or (96, 64) -> (width, height), each side from 1 to `maximum` pixels."""
  expected = (f"expected a size like 64 (square) or WIDTHxHEIGHT like 96x64, each side from 1 to {maximum} "
              'pixels' if maximum else "expected a size like 64 (square) or WIDTHxHEIGHT like 96x64, each side >= 1")
  shown = value if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else value
  try:
    w, h = as_resolution(value)
  except ValueError:
    raise UserError(f'{name}={shown!r}: {expected}') from None
  if maximum and max(w, h) > maximum:
    raise UserError(f'{name}={shown!r}: {expected}')
  return w, h


def check_frames(name: str, value, resolution) -> int:
  """Frames per scene: >= MIN_FRAMES, and few enough that a scene (all its frames at once) fits in memory."""
  frames = check_int(name, value, MIN_FRAMES, why='a training pair needs two frames of a scene')
  w, h = resolution
  if frames * w * h > MAX_FRAME_PIXELS:
    raise UserError(f'{name}={value!r}: expected at most {MAX_FRAME_PIXELS // (w * h)} frames at {w}x{h} '
                    f'(a scene is rendered at once: frames x width x height <= {MAX_FRAME_PIXELS}, ~7.5 GB)')
  return frames


IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')  # what a contact sheet can be written as


def check_new_file(path: str, name: str, *, suffixes: tuple[str, ...] = IMAGE_SUFFIXES,
                   overwrite: bool = False) -> str:
  """Checks, creating nothing, that the file `path` can be written: returns it absolute.

  It must end in one of `suffixes`, not be a directory, lie in a writable (or creatable) folder, and not exist
  unless `overwrite`.
  """
  kinds = ' or '.join(suffixes)
  if not path:
    raise UserError(f'{name}={path!r}: expected a {kinds} file path')
  absolute = os.path.abspath(os.fspath(path))
  if os.path.isdir(absolute):
    raise UserError(f'{name} {absolute}: is a directory, expected a {kinds} file path')
  if not absolute.lower().endswith(tuple(suffixes)):
    raise UserError(f'{name} {absolute}: expected a file name ending in {kinds}')
  if os.path.lexists(absolute) and not overwrite:
    raise UserError(f'{name} {absolute}: exists already; pass --overwrite to replace it, or choose another path')
  check_writable_dir(os.path.dirname(absolute), f'{name} {absolute}: its folder')
  return absolute


# --- Temporary names, and the sweep of those left by killed processes -------------------------------------

_HOST = re.sub(r'[^A-Za-z0-9_.]', '_', socket.gethostname())[:40] or 'host'
# `.<name>.partial-<host>-<pid>-<random>[<suffix>]`: the host has no '-', the random part (tempfile's) neither.
_PARTIAL = re.compile(r'^\.(?P<name>.+)\.partial-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)-(?P<random>[A-Za-z0-9_]+)'
                      r'(?P<suffix>\.[A-Za-z]+)?$')


def _partial_prefix(name: str) -> str:
  """The prefix of a temporary path for `name`: the host and PID tell a later run whether its writer is alive."""
  return f'.{name}.partial-{_HOST}-{os.getpid()}-'


def sweep_stale(folder: str, *, directories: bool, log=None) -> list[str]:
  """Removes the temporary outputs of renderer processes of this host that are no longer running.

  `directories`: the `.<R>.partial-*` folders of unfinished exports (True) or the `.<name>.partial-*.png` (or
  .jpg) files of unfinished contact sheets (False). Temporary paths of live processes, or of other hosts (a
  shared disk), are left alone. Returns the removed paths; `log(line)` is called for each.
  """
  removed = []
  try:
    names = sorted(os.listdir(folder))
  except OSError:
    return removed
  for name in names:
    match = _PARTIAL.match(name)
    if (not match or match['host'] != _HOST or bool(match['suffix']) == directories
        or cli.pid_alive(int(match['pid']))):
      continue
    path = os.path.join(folder, name)
    try:
      if directories and os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
      elif not directories and os.path.isfile(path) and not os.path.islink(path):
        os.remove(path)
      else:
        continue
    except OSError:  # another run sweeping the same folder, or no permission: leave it, it is not ours to fail on
      continue
    removed.append(path)
    if log:
      log(f'removed {path}: left by renderer process {match["pid"]}, which is no longer running')
  return removed


def _makedirs(path: str) -> list[str]:
  """os.makedirs(path, exist_ok=True); returns the folders it created, deepest first (to undo it)."""
  created = []
  path = os.path.abspath(path)
  while not os.path.isdir(path):
    created.append(path)
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  os.makedirs(created[0] if created else path, exist_ok=True)
  return created


def _remove_empty(folders: list[str]) -> None:
  """Removes the folders (deepest first) this process created, if they are still empty."""
  for folder in folders:
    try:
      os.rmdir(folder)
    except OSError:
      return


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
    self.open = False  # a line without its newline is on the stream

  def update(self, done: int) -> None:
    now = time.monotonic()
    if done < self.total and now - self.last < 0.25:
      return
    self.last = now
    rate = done / max(now - self.start, 1e-9)
    eta = (self.total - done) / rate if rate > 0 else float('inf')
    eta_text = f'{int(eta // 3600)}:{int(eta % 3600 // 60):02d}:{int(eta % 60):02d}' if np.isfinite(eta) else '?'
    self.stream.write(f'\rrendered {done}/{self.total} scenes, {rate:.2f} scenes/s, ETA {eta_text}  ')
    self.open = done < self.total
    if not self.open:
      self.stream.write('\n')
    self.stream.flush()

  def close(self) -> None:
    """Ends an unfinished progress line, so that an error message starts a line of its own."""
    if self.open:
      self.stream.write('\n')
      self.stream.flush()
      self.open = False


def export(out_dir: str, resolution, num_scenes: int, seed: int, fov: float = 90.0, num_frames: int = 10,
           scenes_per_folder: int = 100, jobs: int = 1) -> str:
  """Renders scenes 0..num_scenes-1 of `seed` into the Still Box layout; returns `<out_dir>/<R>`.

  Writes `<out_dir>/<R>/<k>/metadata.json` plus the frame JPEGs and depth `.npy` files of sub-folder k (scenes
  k * scenes_per_folder onwards), R being '64' or '96x64'. Everything goes to a temporary folder
  `<out_dir>/.<R>.partial-<host>-<pid>-*`, renamed when complete: an export that fails or is interrupted
  (Ctrl-C, SIGTERM) removes it, and leaves no `<out_dir>/<R>` (nor an `out_dir` it created) behind; the ones a
  killed process (SIGKILL, power loss) left are removed by the next export into the same `out_dir`.

  Args:
    out_dir: parent folder (created if missing).
    resolution: int (square) or (width, height).
    num_scenes: scenes to render (>= 1); scene s is `render_scene((seed, s), resolution, fov, num_frames)`.
    seed: non-negative int.
    fov: horizontal field of view, degrees, in (0, 180).
    num_frames: frames per scene (>= 1).
    scenes_per_folder: scenes per numbered sub-folder (>= 1).
    jobs: rendering processes (1: in this process; 0: one per core).

  Raises:
    UserError: an argument out of its range (a ValueError).
    FileExistsError: `<out_dir>/<R>` exists already.
  """
  w, h = check_resolution('resolution', resolution, maximum=None)
  num_scenes = check_int('num_scenes', num_scenes, 1)
  seed = check_int('seed', seed, 0)
  fov = check_fov('fov', fov)
  num_frames = check_int('num_frames', num_frames, 1)
  scenes_per_folder = check_int('scenes_per_folder', scenes_per_folder, 1)
  jobs = check_int('jobs', jobs, 0)
  name = resolution_name((w, h))
  target = os.path.join(out_dir, name)
  if os.path.lexists(target):
    raise FileExistsError(f'{target} exists already: remove it or export elsewhere')
  created = _makedirs(out_dir)
  tmp = None
  try:
    sweep_stale(out_dir, directories=True, log=print)
    tmp = tempfile.mkdtemp(prefix=_partial_prefix(name), dir=out_dir)
    folders = [os.path.join(tmp, str(k)) for k in range((num_scenes + scenes_per_folder - 1) // scenes_per_folder)]
    for folder in folders:
      os.mkdir(folder)
    jobs_list = [(folders[s // scenes_per_folder], s % scenes_per_folder, seed, s, (w, h), fov, num_frames)
                 for s in range(num_scenes)]
    scenes = _run(jobs_list, jobs)
    for k, folder in enumerate(folders):
      metadata = {'args': {'fov': fov, 'resolution': [w, h], 'seed': seed, 'num_frames': num_frames,
                           'generator': GENERATOR},
                  'scenes': scenes[k * scenes_per_folder:(k + 1) * scenes_per_folder]}
      with open(os.path.join(folder, 'metadata.json'), 'w') as f:
        json.dump(metadata, f, indent=1)
    if os.path.lexists(target):  # appeared while rendering
      raise FileExistsError(f'{target} appeared during the export; the new one is not moved there')
    os.rename(tmp, target)
  except BaseException:
    if tmp is not None:
      shutil.rmtree(tmp, ignore_errors=True)
    _remove_empty(created)
    raise
  return target


def _ignore_sigint() -> None:
  """Worker initializer: Ctrl-C reaches the whole process group; the parent alone handles it (and waits for the
  workers' current scenes), rather than every worker printing a traceback."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(jobs_list: list, jobs: int) -> list[dict]:
  """Runs _export_scene over the jobs, in order, in `jobs` processes, with a progress line."""
  progress = _Progress(len(jobs_list))
  workers = min(jobs or os.cpu_count() or 1, len(jobs_list))
  results = []
  try:
    if workers <= 1:
      for job in jobs_list:
        results.append(_export_scene(job))
        progress.update(len(results))
      return results
    # forkserver/spawn, not fork: the parent may run threads (JAX, TF) that fork would copy mid-flight.
    method = 'forkserver' if 'forkserver' in multiprocessing.get_all_start_methods() else 'spawn'
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                                                  initializer=_ignore_sigint)
    try:
      for entry in pool.map(_export_scene, jobs_list, chunksize=max(1, min(8, len(jobs_list) // (8 * workers)))):
        results.append(entry)
        progress.update(len(results))
    finally:
      # On error, drop the queued scenes and wait for the running ones, so no worker writes into a deleted folder.
      pool.shutdown(wait=True, cancel_futures=True)
    return results
  finally:
    progress.close()


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
                  num_frames: int = 10, shown: tuple[int, ...] = (0, 3, 6, 9), *, overwrite: bool = False,
                  log=None) -> np.ndarray:
  """Writes a PNG (or JPEG: `path`'s extension): one row per scene `(seed, s)`, its frames `shown` then their
  depth maps (0..100 m).

  The image is written to a temporary file next to `path` and renamed: an interrupted call leaves no half-written
  sheet, and an existing file at `path` is replaced only with `overwrite` (otherwise FileExistsError, also when
  the file appears while rendering). Missing parent folders are created. Stale temporary files of killed
  processes in that folder are removed (`log(line)` tells).

  Returns the sheet, uint8 [rows, columns, 3].
  """
  import imageio.v3 as iio
  w, h = check_resolution('resolution', resolution, maximum=None)
  num_scenes = check_int('num_scenes', num_scenes, 1)
  num_frames = check_int('num_frames', num_frames, 1)
  path = os.path.abspath(os.fspath(path))
  if os.path.isdir(path):
    raise IsADirectoryError(f'{path} is a directory, expected a PNG file path')
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in IMAGE_SUFFIXES:
    raise UserError(f'{path}: expected a file name ending in {" or ".join(IMAGE_SUFFIXES)}')
  if os.path.lexists(path) and not overwrite:
    raise FileExistsError(f'{path} exists already: pass overwrite=True to replace it')
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
  folder = os.path.dirname(path)
  created = _makedirs(folder)
  tmp = None
  try:
    sweep_stale(folder, directories=False, log=log)
    fd, tmp = tempfile.mkstemp(prefix=_partial_prefix(os.path.basename(path)), suffix=suffix, dir=folder)
    os.close(fd)
    iio.imwrite(tmp, sheet, extension=suffix)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make the sheet private
    if overwrite:
      os.replace(tmp, path)
    else:
      _rename_no_clobber(tmp, path)
    tmp = None
  except BaseException:
    if tmp is not None and os.path.lexists(tmp):
      os.remove(tmp)
    _remove_empty(created)
    raise
  return sheet


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _rename_no_clobber(src: str, dst: str) -> None:
  """Renames src to dst unless dst exists (FileExistsError); atomic where hard links work (link + unlink)."""
  try:
    os.link(src, dst)
  except FileExistsError:
    raise FileExistsError(f'{dst} appeared while the contact sheet was drawn; it is left as it is') from None
  except OSError:  # no hard links on this file system: check, then rename (a narrow race)
    if os.path.lexists(dst):
      raise FileExistsError(f'{dst} appeared while the contact sheet was drawn; it is left as it is') from None
    os.rename(src, dst)
    return
  os.remove(src)


# --- Command line ---------------------------------------------------------------------------------------

_USAGE = ('python -m tfds_stillbox.render (--out DIR | --contact_sheet PNG | both) [--resolution R] [--scenes N] '
          '[options]; see --help')


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m tfds_stillbox.render', usage=_USAGE,
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', metavar='DIR',
                      help='parent folder: the tree goes to DIR/<R>/<k>/ (R: 64, or 96x64), which must not exist '
                           'yet; DIR is created if missing')
  parser.add_argument('--resolution', default='64', metavar='R',
                      help=f"'64' (square) or WIDTHxHEIGHT, e.g. '96x64'; each side from 1 to {MAX_RESOLUTION} "
                           'pixels (default 64)')
  parser.add_argument('--scenes', type=int, default=100, metavar='N', help='number of scenes, >= 1 (default 100)')
  parser.add_argument('--seed', type=int, default=0,
                      help='an integer >= 0; scene s is rendered from the seed (SEED, s) (default 0)')
  parser.add_argument('--fov', type=float, default=90.0,
                      help='horizontal field of view in degrees, in (0, 180) (default 90, as Still Box)')
  parser.add_argument('--frames', type=int, default=10, metavar='T',
                      help=f'frames per scene, >= {MIN_FRAMES}: a training pair needs two frames, evaluation at '
                           'frame shift S needs more than S (S = 3 by default); at most frames x width x height = '
                           f'{MAX_FRAME_PIXELS} (default 10, as Still Box)')
  parser.add_argument('--jobs', type=int, default=1, metavar='J',
                      help='rendering processes, >= 0 (0: one per core; default 1)')
  parser.add_argument('--scenes_per_folder', type=int, default=100, metavar='K',
                      help='scenes per numbered sub-folder, >= 1 (default 100, as Still Box)')
  parser.add_argument('--contact_sheet', metavar='PNG',
                      help='also (or, without --out, only) draw the first min(N, 8) scenes into this .png (or '
                           '.jpg) file, which must not exist yet (unless --overwrite); its folder is created if '
                           'missing')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace an existing --contact_sheet file (a tree DIR/<R> is never replaced)')
  parser.add_argument('--debug', action='store_true',
                      help=f'show the traceback of an error (also: environment variable {DEBUG_ENV}=1)')
  return parser


def _check_args(args) -> dict:
  """Every flag in its range and every path usable, before any work: the settings, with absolute paths."""
  settings = dict(
      resolution=check_resolution('--resolution', args.resolution),
      scenes=check_int('--scenes', args.scenes, 1),
      seed=check_int('--seed', args.seed, 0),
      fov=check_fov('--fov', args.fov),
      frames=None,
      jobs=check_int('--jobs', args.jobs, 0, why='0: one per core'),
      scenes_per_folder=check_int('--scenes_per_folder', args.scenes_per_folder, 1),
      out=None, target=None, sheet=None)
  settings['frames'] = check_frames('--frames', args.frames, settings['resolution'])
  if args.out is not None:
    settings['out'] = check_writable_dir(args.out, '--out')
    settings['target'] = os.path.join(settings['out'], resolution_name(settings['resolution']))
    if os.path.lexists(settings['target']):
      note = ' (--overwrite only replaces a contact sheet, never a tree)' if args.overwrite else ''
      raise UserError(f'--out {settings["out"]}: {settings["target"]} exists already; remove it or choose another '
                      f'--out{note}')
  if args.contact_sheet is not None:
    sheet = check_new_file(args.contact_sheet, '--contact_sheet', overwrite=args.overwrite)
    target = settings['target']
    if target and (sheet == target or sheet.startswith(target + os.sep)):
      raise UserError(f'--contact_sheet {sheet}: inside the tree {target} this run writes; expected a path outside '
                      'it')
    settings['sheet'] = sheet
  return settings


def _work(args) -> int:
  settings = _check_args(args)
  # Everything is checked: from here on, files are written.
  if settings['out']:
    path = export(settings['out'], settings['resolution'], settings['scenes'], settings['seed'], fov=settings['fov'],
                  num_frames=settings['frames'], scenes_per_folder=settings['scenes_per_folder'],
                  jobs=settings['jobs'])
    print(f'wrote {settings["scenes"]} scenes to {path}', flush=True)
  if settings['sheet']:
    frames = settings['frames']
    contact_sheet(settings['sheet'], settings['resolution'], min(settings['scenes'], 8), settings['seed'],
                  settings['fov'], frames, shown=tuple(sorted({0, frames // 3, 2 * frames // 3, frames - 1})),
                  overwrite=args.overwrite, log=print)
    print(f'wrote a contact sheet to {settings["sheet"]}', flush=True)
  return 0


class _Terminated(KeyboardInterrupt):
  """SIGTERM, raised like Ctrl-C so that the same clean-up runs."""


def _on_sigterm(signum, frame):
  del frame
  raise _Terminated(signum)


def main(argv: list[str] | None = None) -> int:
  """The command line; returns the exit code: 0, 1 (a user error: one `error:` line), 2 (argparse's usage
  errors), 130 (Ctrl-C) or 143 (SIGTERM), the temporary files removed in every case."""
  parser = _parser()
  args = parser.parse_args(argv)
  if args.out is None and args.contact_sheet is None:
    parser.error('give --out, --contact_sheet, or both')
  debug = cli.debug_enabled(args.debug)
  handle_term = threading.current_thread() is threading.main_thread()
  previous = signal.signal(signal.SIGTERM, _on_sigterm) if handle_term else None
  try:
    return _work(args)
  except KeyboardInterrupt as e:
    terminated = isinstance(e, _Terminated)
    if debug:
      traceback.print_exception(e, file=sys.stderr)
    cli.report(f'interrupted ({"SIGTERM" if terminated else "Ctrl-C"}); temporary files were removed, finished '
               'outputs kept')
    return 143 if terminated else 130
  except (UserError, OSError) as e:  # OSError: a disk that fills up or a folder that goes away mid-run
    cli.report(e, debug=debug)
    return 1
  finally:
    if handle_term:
      signal.signal(signal.SIGTERM, previous)


if __name__ == '__main__':
  sys.exit(main())
