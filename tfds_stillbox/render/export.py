"""What the renderer writes: the Still Box tree (export), the TFDS examples of rendered scenes (tfds_examples,
for the builder's synth configs) and the contact sheet.

`export` writes the Still Box on-disk layout (see tfds_stillbox/tree.py), where scene s is
`scenes.render_scene((seed, s), ...)`; it is byte-identical for a seed whatever the number of processes. Beside
each scene's frames it writes its motion log, `motion_<position>.csv` (write_motion): the camera position of every
frame, so that a rendered tree is also a set of flights with their motion.
Files and folders appear whole (depthnet_jax.atomic): the tree is written to `OUT/.<R>.partial-<host>-<pid>-*`
and renamed when complete, the sheet likewise. An error, Ctrl-C or SIGTERM removes the temporary folder or file;
those a killed process left (SIGKILL) are removed by the next run into the same folder, which says so (it never
touches those of a live process or of another host).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import importlib.machinery
import itertools
import json
import multiprocessing
import os
import re
import sys
from collections.abc import Callable, Iterator

import numpy as np

from depthnet_jax.common import atomic, colormaps, processes, progress
from depthnet_jax.common.cli import UserError, check_int
from depthnet_jax.common.conventions import STEP
from tfds_stillbox import codec
from tfds_stillbox.render import camera, poses, raycast, scenes
from tfds_stillbox.render.checks import check_depth_range, check_fov, check_resolution, check_step

GENERATOR = 'depthnet-jax tfds_stillbox.render'
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')  # what a contact sheet can be written as
_TREE_NAME = re.compile(r'\d+(x\d+)?')  # what `resolution_name` gives: the tree folders an export writes


def resolution_name(resolution) -> str:
  """The folder name of a resolution: '64' for square 64, '96x64' for width 96, height 64."""
  w, h = raycast.as_resolution(resolution)
  return str(w) if w == h else f'{w}x{h}'


def _sweep_stale(folder: str, *, directories: bool, log=None) -> list[str]:
  """Removes what renderer processes of this host that are no longer running left in `folder` (atomic.sweep).

  `directories`: the temporary folders of unfinished exports (True: `.<R>.partial-*`, R a tree name such as 64
  or 96x64) or the temporary image files of unfinished contact sheets (False: `.<name>.partial-*.png`, .jpg or
  .jpeg). Those of live processes, or of other hosts (a shared disk), are left alone. Returns the removed paths;
  `log(line)` is called for each.
  """
  def accept(fields: dict[str, str], path: str) -> bool:
    if directories:
      return os.path.isdir(path) and not fields['ext'] and bool(_TREE_NAME.fullmatch(fields['name']))
    return os.path.isfile(path) and fields['ext'].lower() in IMAGE_SUFFIXES

  removed = atomic.sweep(folder, accept=accept)
  for path in removed if log else ():
    pid = atomic.parse_temporary(os.path.basename(path))['pid']
    log(f'removed {path}: left by renderer process {pid}, which is no longer running')
  return removed


# --- Rendering in worker processes ----------------------------------------------------------------------


def _apply(function: Callable, part: list) -> list:
  return [function(job) for job in part]


@contextlib.contextmanager
def _main_not_imported() -> Iterator[None]:
  """While worker processes start inside: multiprocessing imports nothing of `__main__` in them.

  A spawn or forkserver worker first runs the parent's main script again (as `__mp_main__`), unless the main module
  was run by name (`python -m`). Under `tfds build` that script is TFDS's command line: every worker spent ~30 s
  and ~800 MB importing TensorFlow before its first scene (and before `processes.init_worker` tied it to its owner).
  The jobs are functions of this module and need nothing of `__main__`, so for as long as the workers start
  `__main__.__spec__` names a package's `__main__`, which multiprocessing.spawn does not import.
  """
  main = sys.modules.get('__main__')
  if main is None or getattr(main, '__spec__', None) is not None:
    yield
    return
  main.__spec__ = importlib.machinery.ModuleSpec('tfds_stillbox.render.__main__', None)
  try:
    yield
  finally:
    main.__spec__ = None


def _in_order(function: Callable, jobs_list: list, jobs: int) -> Iterator:
  """`function(job)` of each job, in order: in this process (`jobs` 1) or in `jobs` processes (0: one per core).

  The workers die with this process, however it ends (SIGKILL included: `processes.init_worker`), and ignore
  Ctrl-C. At most two chunks of jobs per worker are queued ahead. Closing the generator, an error, Ctrl-C or SIGTERM
  (raised here like Ctrl-C where nothing else handles it: `processes.sigterm_as_interrupt`) drops the queued jobs
  and waits for the running ones, so that no worker writes into a folder that is being removed, and none is left.
  """
  workers = min(jobs or os.cpu_count() or 1, len(jobs_list))
  if workers <= 1:
    yield from map(function, jobs_list)
    return
  size = max(1, min(8, len(jobs_list) // (8 * workers)))
  parts = iter([jobs_list[i:i + size] for i in range(0, len(jobs_list), size)])
  # forkserver/spawn, not fork: the parent may run threads (JAX, TF) that fork would copy mid-flight.
  method = 'forkserver' if 'forkserver' in multiprocessing.get_all_start_methods() else 'spawn'
  # Where nothing above handles SIGTERM (`tfds build`), it ends the build with exit code 143 and the line a
  # command would print, after the clean-ups (TFDS removes its `incomplete.*` folder).
  with processes.sigterm_as_interrupt(say_at_exit=True):
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                                                  initializer=processes.init_worker, initargs=(os.getpid(),))
    try:
      with _main_not_imported():   # the first `workers` submissions start the workers
        queued = collections.deque(pool.submit(_apply, function, part) for part in itertools.islice(parts, 2 * workers))
      while queued:
        done = queued.popleft().result()
        queued.extend(pool.submit(_apply, function, part) for part in itertools.islice(parts, 1))
        yield from done
    finally:
      pool.shutdown(wait=True, cancel_futures=True)


# --- The Still Box tree ---------------------------------------------------------------------------------

MOTION_HEADER = 'frame,time,x,y,z'  # the motion log's columns: infer.py --motion reads frame, x, y, z


def _number(value: float) -> str:
  """A float as the shortest text that reads back as the same float (repr); -0.0 is written 0.0."""
  return repr(float(value) + 0.0)


def write_motion(path: str, speed, time_step: float, num_frames: int) -> None:
  """Writes a scene's motion log: the header MOTION_HEADER, then one row per frame i (its position in the
  scene's `imgs`): i, the time i * time_step in seconds and the camera position i * time_step * speed in metres
  (camera axes: x right, y down, z forward; scenes.camera_positions, the positions the frames were rendered
  from), each number as repr of its float."""
  positions = scenes.camera_positions(num_frames, speed, time_step)
  _write_table(path, MOTION_HEADER, [i * float(time_step) for i in range(len(positions))], positions)


def write_path(path: str, times, positions) -> None:
  """Writes the motion log (MOTION_HEADER, as write_motion) of a trajectory's frames: i, `times[i]` s and
  `positions[i]` m (the trajectory's axes), each number as repr of its float."""
  _write_table(path, MOTION_HEADER, times, positions)


def write_attitude(path: str, times, quaternions) -> None:
  """Writes a scene's attitude log: the header poses.ATTITUDE_HEADER (frame,time,qw,qx,qy,qz), then one row per
  frame i: i, `times[i]` in seconds and its camera-to-world orientation [w, x, y, z] (depthnet_jax.common.rotations'
  convention), each number as repr of its float."""
  _write_table(path, poses.ATTITUDE_HEADER, times, quaternions)


def _write_table(path: str, header: str, times, values) -> None:
  """Rows `frame,time,values...` under `header`, numbers as repr (_number), '\\n' line ends."""
  lines = [header]
  for i, (time, row) in enumerate(zip(times, values)):
    lines.append(','.join([str(i), _number(time), *map(_number, row)]))
  with open(path, 'w', newline='') as f:
    f.write('\n'.join(lines) + '\n')


@contextlib.contextmanager
def _naming(path: str) -> Iterator[None]:
  """An OSError inside that names no file (a full disk's failed write names none) names `path`, the file being
  written, and for a full disk the space left (`processes.free_space`)."""
  try:
    yield
  except OSError as e:
    if e.filename is not None or e.errno is None:
      raise
    reason = e.strerror or os.strerror(e.errno)
    if processes.disk_full(e):
      reason += f' ({processes.free_space(path)} on its file system)'
    raise OSError(e.errno, reason, path) from e


def _export_scene(job: tuple) -> dict:
  """Renders scene `index` into `folder` as entry `position` of its metadata; returns that entry."""
  folder, position, seed, index, resolution, fov, num_frames, step, depth_range, posing = job
  scene = scenes.render_scene((seed, index), resolution, fov=fov, num_frames=num_frames, step=step,
                              depth_range=depth_range, **posing)
  imgs, depths = [], []
  for t in range(len(scene.frames)):
    imgs.append(f'RGB_{position:04d}_{t:02d}.jpg')
    depths.append(f'D_{position:04d}_{t:02d}.npy')
    path = os.path.join(folder, imgs[-1])
    with _naming(path), open(path, 'wb') as f:
      f.write(codec.encode_jpeg(scene.frames[t]))
    path = os.path.join(folder, depths[-1])
    with _naming(path):
      np.save(path, scene.depth[t].astype(np.float32), allow_pickle=False)
  motion = f'motion_{position:04d}.csv'
  with _naming(os.path.join(folder, motion)):
    if scene.times is None:
      write_motion(os.path.join(folder, motion), scene.speed, scene.time_step, len(imgs))
    else:
      write_path(os.path.join(folder, motion), scene.times, scene.positions)
  entry = {'imgs': imgs, 'depth': depths, 'speed': [float(v) for v in scene.speed],
           'time_step': float(scene.time_step), 'orientation': [], 'length': len(imgs), 'motion': motion}
  if scene.quaternions is not None:
    entry['orientation'] = [[float(v) for v in q] for q in scene.quaternions]
    entry['attitude'] = f'attitude_{position:04d}.csv'
    times = scene.times if scene.times is not None else [i * float(scene.time_step) for i in range(len(imgs))]
    with _naming(os.path.join(folder, entry['attitude'])):
      write_attitude(os.path.join(folder, entry['attitude']), times, scene.quaternions)
  return entry


def _run(jobs_list: list, jobs: int) -> list[dict]:
  """Runs _export_scene over the jobs, in order, in `jobs` processes, with progress on stderr (tqdm's bar on a
  terminal, a plain line every 10 s and at the end on a pipe)."""
  results = []
  with progress.Progress(len(jobs_list), 'scenes', desc='rendered') as bar, \
       contextlib.closing(_in_order(_export_scene, jobs_list, jobs)) as entries:
    for entry in entries:
      results.append(entry)
      bar.update()
  return results


def export(out_dir: str, resolution, num_scenes: int, seed: int, fov: float = 90.0, num_frames: int = 10,
           scenes_per_folder: int = 100, jobs: int = 1, *, step: float = STEP, depth_range=scenes.WALL_RANGE,
           rotation: float = 0.0, trajectory=None, distortion=None) -> str:
  """Renders scenes 0..num_scenes-1 of `seed` into the Still Box layout; returns `<out_dir>/<R>`.

  Writes `<out_dir>/<R>/<k>/metadata.json` plus the frame JPEGs, depth `.npy` files and motion logs
  (`motion_<position>.csv`, write_motion) of sub-folder k (scenes k * scenes_per_folder onwards), R being '64' or
  '96x64'. metadata.json's `args` hold fov, resolution, seed, num_frames, step (m/frame), time_step (s),
  depth_range ([near, far] m) and the generator; each of its `scenes` the Still Box fields (imgs, depth, speed,
  time_step, orientation, length) and `motion`, the name of its motion log. Everything goes to a temporary folder
  `<out_dir>/.<R>.partial-<host>-<pid>-*`, renamed when complete: an export that fails or is interrupted
  (Ctrl-C, SIGTERM) removes it, and leaves no `<out_dir>/<R>` (nor an `out_dir` it created) behind; the ones a
  killed process (SIGKILL, power loss) left are removed by the next export into the same `out_dir`.

  A posed camera (`rotation` or `trajectory`) fills each scene's `orientation` (one [w, x, y, z] per frame) and
  writes its attitude log `attitude_<position>.csv` (write_attitude; the entry's `attitude`); `args` then hold
  `rotation` (degrees per frame) or `trajectory` (the file; `step` is None and `time_step` the trajectory's mean).
  A `distortion` writes `calibration.yaml` (lens.write_calibration) in every sub-folder and `args.distortion`
  ({model, coefficients}). Without them (the defaults) the tree is byte for byte what it was before them.

  Args:
    out_dir: parent folder (created if missing).
    resolution: int (square) or (width, height).
    num_scenes: scenes to render (>= 1); scene s is `render_scene((seed, s), resolution, fov, num_frames,
      step=step, depth_range=depth_range, ...)`.
    seed: non-negative int.
    fov: horizontal field of view, degrees, in (0, 180).
    num_frames: frames per scene (>= 1; a trajectory's row count).
    scenes_per_folder: scenes per numbered sub-folder (>= 1).
    jobs: rendering processes (1: in this process; 0: one per core).
    step: metres the camera moves per frame (> 0; default conventions.STEP = 0.1, as Still Box).
    depth_range: (near, far) metres, the walls' distances (0 < near < far; default scenes.WALL_RANGE).
    rotation: degrees the camera turns per frame about each scene's random axis (>= 0; default 0).
    trajectory: the poses every scene follows: a poses.Trajectory or the path of a trajectory CSV file.
    distortion: the lens: 'k1,k2,p1,p2,k3', 'fisheye:k1,k2,k3,k4' or (model, coefficients).

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
  step = check_step('step', step, maximum=None)
  depth_range = check_depth_range('depth_range', depth_range, maximum=None)
  posing = camera.check_posing((w, h), fov, num_frames, rotation, trajectory, distortion)
  target = os.path.join(out_dir, resolution_name((w, h)))
  if os.path.lexists(target):
    raise FileExistsError(f'{target} exists already: remove it or export elsewhere')
  args = {'fov': fov, 'resolution': [w, h], 'seed': seed, 'num_frames': num_frames, 'step': step,
          'time_step': scenes.TIME_STEP, 'depth_range': list(depth_range), **camera.posing_args(posing),
          'generator': GENERATOR}
  created = atomic.make_dirs(out_dir)
  try:
    _sweep_stale(out_dir, directories=True, log=print)
    with atomic.writing_dir(target) as tmp:
      folders = [os.path.join(tmp, str(k)) for k in range((num_scenes + scenes_per_folder - 1) // scenes_per_folder)]
      for folder in folders:
        os.mkdir(folder)
      jobs_list = [(folders[s // scenes_per_folder], s % scenes_per_folder, seed, s, (w, h), fov, num_frames,
                    step, depth_range, posing) for s in range(num_scenes)]
      entries = _run(jobs_list, jobs)
      for k, folder in enumerate(folders):
        _write_metadata(folder, {'args': args, 'scenes': entries[k * scenes_per_folder:(k + 1) * scenes_per_folder]},
                        posing, fov)
      if os.path.lexists(target):  # appeared while rendering
        raise FileExistsError(f'{target} appeared during the export; the new one is not moved there')
  except BaseException:
    atomic.remove_empty(created)
    raise
  return target


def _write_metadata(folder: str, metadata: dict, posing: dict, fov: float) -> None:
  """metadata.json of a sub-folder, and its calibration.yaml for a lens."""
  path = os.path.join(folder, 'metadata.json')
  with _naming(path), open(path, 'w') as f:
    json.dump(metadata, f, indent=1)
  if 'distortion_model' in posing:
    path = os.path.join(folder, camera.CALIBRATION)
    with _naming(path):
      camera.write_calibration(path, metadata['args']['resolution'], fov, posing)
# --- TFDS examples (the builder's synth configs) --------------------------------------------------------


def tfds_example(job: tuple) -> tuple[str, dict]:
  """(scene id, example) of a rendered scene, in the features of tfds_stillbox's builder (as tree.load_scene
  reads a real one); `job` is (scene id, seed, index, (height, width), fov, num_frames)."""
  scene_id, seed, index, (h, w), fov, num_frames = job
  scene = scenes.render_scene((seed, index), (w, h), fov=fov, num_frames=num_frames)
  return scene_id, {
      'id': scene_id,
      'frames': [codec.encode_jpeg(f) for f in scene.frames],
      'depth': [codec.encode_depth(d) for d in scene.depth],
      'speed': np.asarray(scene.speed, np.float32),
      'time_step': np.float32(scene.time_step),
      'fov': np.float32(fov),
      'height': np.int32(h),
      'width': np.int32(w),
  }


def tfds_examples(jobs_list: list[tuple], jobs: int = 0) -> Iterator[tuple[str, dict]]:
  """`tfds_example(job)` of each job, in order, rendered in `jobs` processes (0: one per core; 1: here)."""
  yield from _in_order(tfds_example, jobs_list, jobs)


# --- Contact sheet --------------------------------------------------------------------------------------


def contact_sheet(path: str, resolution=128, num_scenes: int = 6, seed: int = 0, fov: float = 90.0,
                  num_frames: int = 10, shown: tuple[int, ...] = (0, 3, 6, 9), *, overwrite: bool = False,
                  log=None, step: float = STEP, depth_range=scenes.WALL_RANGE, rotation: float = 0.0,
                  trajectory=None, distortion=None) -> np.ndarray:
  """Writes a PNG (or JPEG: `path`'s extension): one row per scene `(seed, s)` (rendered with `step`,
  `depth_range`, `rotation`, `trajectory` and `distortion`, as export), its frames `shown` then their depth maps
  (depthnet_jax.colormaps.depth_to_rgb: OpenCV's rainbow, 0..100 m).

  The image is written to a temporary file next to `path` and renamed: an interrupted call leaves no half-written
  sheet, and an existing file at `path` is replaced only with `overwrite` (otherwise FileExistsError, also when
  the file appears while rendering). Missing parent folders are created. Stale temporary files of killed
  processes in that folder are removed (`log(line)` tells).

  Returns the sheet, uint8 [rows, columns, 3].
  """
  w, h = check_resolution('resolution', resolution, maximum=None)
  num_scenes = check_int('num_scenes', num_scenes, 1)
  num_frames = check_int('num_frames', num_frames, 1)
  step = check_step('step', step, maximum=None)
  depth_range = check_depth_range('depth_range', depth_range, maximum=None)
  posing = camera.check_posing((w, h), check_fov('fov', fov), num_frames, rotation, trajectory, distortion)
  path = os.path.abspath(os.fspath(path))
  if os.path.isdir(path):
    raise IsADirectoryError(f'{path} is a directory, expected a PNG file path')
  if os.path.splitext(path)[1].lower() not in IMAGE_SUFFIXES:
    raise UserError(f'{path}: expected a file name ending in {" or ".join(IMAGE_SUFFIXES)}')
  if os.path.lexists(path) and not overwrite:
    raise FileExistsError(f'{path} exists already: pass overwrite=True to replace it')
  shown = [t for t in shown if t < num_frames] or [0]
  gap, split = 4, 12  # white between tiles, and between the frames and the depth maps
  rows = []
  for s in range(num_scenes):
    scene = scenes.render_scene((seed, s), (w, h), fov=fov, num_frames=num_frames, step=step,
                                depth_range=depth_range, **posing)
    tiles = [scene.frames[t] for t in shown] + [colormaps.depth_to_rgb(scene.depth[t]) for t in shown]
    row = np.full((h, len(tiles) * (w + gap) + gap + split, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
      x0 = gap + i * (w + gap) + (split if i >= len(shown) else 0)
      row[:, x0:x0 + w] = tile
    rows.append(row)
  spacer = np.full((gap, rows[0].shape[1], 3), 255, np.uint8)
  sheet = np.concatenate([spacer] + [r for row in rows for r in (row, spacer)], 0)
  folder = os.path.dirname(path)
  created = atomic.make_dirs(folder)
  try:
    _sweep_stale(folder, directories=False, log=log)
    atomic.write_png(path, sheet, overwrite=overwrite)
  except BaseException:
    atomic.remove_empty(created)
    raise
  return sheet
