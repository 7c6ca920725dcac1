"""Procedural Still-Box-like scenes: random textured shapes in a textured room, seen by a translating camera.

    python -m tfds_stillbox.render --out DIR --resolution 64 --scenes 1000 --seed 0 [--fov 90] [--frames 10]
        [--step 0.1] [--depth_range 8,150] [--jobs 4] [--scenes_per_folder 100]
        [--rotation DEG] [--trajectory poses.csv] [--distortion k1,k2,p1,p2,k3 | fisheye:k1,k2,k3,k4]
        [--contact_sheet sheet.png [--overwrite]] [--debug]
    python -m tfds_stillbox.render --out DIR --scenes 1 --frames 40 --step 0.2   # a flight: DIR/64/0/
    python -m tfds_stillbox.render --out DIR --scenes 10 --rotation 2            # turning 2 degrees a frame
    python -m tfds_stillbox.render --out DIR --scenes 10 --trajectory poses.csv  # along given poses
    python -m tfds_stillbox.render --out DIR --scenes 10 --distortion=-0.28,0.07,0,0,0   # through a barrel lens

The camera beyond Still Box's (none of these flags: the tree is byte for byte what it was before them):
`--rotation DEG` turns it DEG degrees per frame about a random axis per scene (frame 0 unturned; the scene's world
is frame 0's camera axes). `--trajectory CSV` flies every scene along the poses of the file (columns
frame,time,x,y,z,qw,qx,qy,qz: metres, seconds, camera-to-world quaternions; one row per frame, so it sets the
frames: a --frames other than its row count is an error, and so are --step and --rotation with it), each scene in
its own random room around the path. Both fill each scene's `orientation` in metadata.json and write
`attitude_<k>.csv` (frame,time,qw,qx,qy,qz) beside its frames; a trajectory's motion log holds its own times and
positions, and the scene's speed is its mean velocity. `--distortion` renders the frames as that lens (OpenCV's
radial-tangential or fisheye model, camera matrix that of the pinhole: depthnet_jax.common.rotations.intrinsics)
sees them, the depth maps staying the pinhole's, and writes `calibration.yaml` in each sub-folder.

The command line of the renderer (tfds_stillbox/render/__main__.py runs `main`). Every flag is checked before
anything is written (its range is in `--help`); a mistake is one `error:` line and exit code 1 (`--debug` or
DEPTHNET_DEBUG=1 adds the traceback). `OUT/<R>` must not exist, and an existing `--contact_sheet` file is replaced
only with `--overwrite`; both are held for the whole run (`folder_lock`: `OUT/.<R>.lock`), so a second renderer
writing the same tree or sheet is refused at once (one `error:` line naming it and the holder's pid). The tree and
the sheet are written as export.export and export.contact_sheet write them: under temporary names, renamed when
complete. Ctrl-C (exit 130) or SIGTERM (143) removes the temporary folder or file. Progress goes to stderr: tqdm's
bar on a terminal, a plain line every 10 s and at the end on a pipe.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback

from depthnet_jax.common import cli, folder_lock
from depthnet_jax.common.cli import UserError, check_int, check_writable_dir
from depthnet_jax.common.conventions import STEP
from depthnet_jax.common.lens import parse_distortion
from tfds_stillbox.render import distortion, export, poses, scenes
from tfds_stillbox.render.checks import (
  MAX_DEPTH,
  MAX_FRAME_PIXELS,
  MAX_RESOLUTION,
  MAX_ROTATION,
  MAX_STEP,
  MIN_FRAMES,
  check_depth_range,
  check_fov,
  check_frames,
  check_jobs,
  check_resolution,
  check_rotation,
  check_scenes,
  check_step,
)


def check_new_file(path: str, name: str, *, suffixes: tuple[str, ...] = export.IMAGE_SUFFIXES,
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


_USAGE = ('python -m tfds_stillbox.render (--out DIR | --contact_sheet PNG | both) [--resolution R] [--scenes N] '
          '[options]')


def _parser() -> cli.ArgumentParser:
  parser = cli.ArgumentParser(prog='python -m tfds_stillbox.render', usage=_USAGE, usage_hint=_USAGE,
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
  parser.add_argument('--frames', type=int, default=None, metavar='T',
                      help=f'frames per scene, >= {MIN_FRAMES}: a training pair needs two frames, evaluation at '
                           'frame shift S needs more than S (S = 3 by default); at most frames x width x height = '
                           f'{MAX_FRAME_PIXELS} (default 10, as Still Box; with --trajectory its row count, which '
                           'a --frames must equal)')
  parser.add_argument('--step', type=float, default=None, metavar='M',
                      help=f'metres the camera moves per frame, in (0, {MAX_STEP:g}]; the time step stays '
                           f'{scenes.TIME_STEP:g} s, so the speed is M / {scenes.TIME_STEP:g} m/s (default {STEP:g}, '
                           'as Still Box; not with --trajectory)')
  parser.add_argument('--rotation', type=float, default=0.0, metavar='DEG',
                      help=f'degrees the camera turns per frame, in [0, {MAX_ROTATION:g}], about a random axis of '
                           'each scene (default 0: pure translation, as Still Box)')
  parser.add_argument('--trajectory', metavar='CSV',
                      help='fly every scene along these poses: a CSV file with the columns '
                           f'{",".join(poses.TRAJECTORY_HEADER)} (frames 0, 1, ... in order, increasing times in s, '
                           'positions in m, unit camera-to-world quaternions), one row per frame')
  parser.add_argument('--distortion', metavar='COEFFS',
                      help="render through a lens: k1,k2,p1,p2,k3 (OpenCV's radial-tangential model) or "
                           "fisheye:k1,k2,k3,k4 (OpenCV's fisheye model), e.g. --distortion=-0.28,0.07,0,0,0 (a "
                           "value starting with '-' needs the '='); camera matrix rotations.intrinsics(W, H, fov); "
                           "depth maps stay the pinhole's; calibration.yaml is written beside them")
  near, far = scenes.WALL_RANGE
  parser.add_argument('--depth_range', default=f'{near:g},{far:g}', metavar='NEAR,FAR',
                      help=f'metres, 0 < NEAR < FAR <= {MAX_DEPTH:g}: the six walls of the room are at '
                           'log-uniform distances in [NEAR, FAR], object centres at z-depths from NEAR/8 to the '
                           f'wall behind them (default {near:g},{far:g}, as Still Box)')
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
  return parser


def _check_args(args) -> dict:
  """Every flag in its range and every path usable, before any work: the settings, with absolute paths."""
  if args.out is None and args.contact_sheet is None:
    raise UserError(f'give --out, --contact_sheet, or both (usage: {_USAGE}; --help lists the flags)')
  settings = dict(
      resolution=check_resolution('--resolution', args.resolution),
      scenes=None,
      seed=check_int('--seed', args.seed, 0),
      fov=check_fov('--fov', args.fov),
      frames=None,
      jobs=None,
      scenes_per_folder=check_int('--scenes_per_folder', args.scenes_per_folder, 1),
      out=None, target=None, sheet=None)
  settings.update(_check_camera(args, settings['resolution'], settings['fov']))
  settings['scenes'] = check_scenes('--scenes', args.scenes, settings['frames'], settings['resolution'], None)
  settings['jobs'] = check_jobs('--jobs', args.jobs, settings['frames'], settings['resolution'], settings['scenes'])
  settings['depth_range'] = check_depth_range('--depth_range', args.depth_range)
  if args.out is not None:
    settings['out'] = check_writable_dir(args.out, '--out')
    settings['target'] = os.path.join(settings['out'], export.resolution_name(settings['resolution']))
    check_scenes('--scenes', args.scenes, settings['frames'], settings['resolution'], settings['out'])  # the disk
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


def _check_camera(args, resolution, fov: float) -> dict:
  """frames, step, rotation, trajectory and distortion (render_scene's keywords beyond the defaults: `posing`)."""
  camera = dict(rotation=check_rotation('--rotation', args.rotation), posing={})
  if camera['rotation']:
    camera['posing']['rotation'] = camera['rotation']
  if args.trajectory is None:
    camera['frames'] = check_frames('--frames', 10 if args.frames is None else args.frames, resolution)
    camera['step'] = check_step('--step', STEP if args.step is None else args.step)
  else:
    path = os.path.abspath(args.trajectory)
    trajectory = poses.read_trajectory(path, '--trajectory')
    rows = len(trajectory.times)
    if args.frames is not None and args.frames != rows:
      raise UserError(f'--frames={args.frames}: --trajectory {path} has {rows} rows (frames); expected {rows} or '
                      'no --frames')
    if args.step is not None:
      raise UserError(f'--step={args.step:g}: not with --trajectory {path} (its rows give the positions); '
                      'expected no --step')
    if camera['rotation']:
      raise UserError(f'--rotation={camera["rotation"]:g}: not with --trajectory {path} (its rows give the '
                      'orientations); expected 0 or no --rotation')
    camera.update(frames=check_frames(f'--trajectory {path}: rows', rows, resolution), step=STEP)
    camera['posing']['trajectory'] = trajectory
  if args.distortion is not None:
    model, coefficients = parse_distortion(args.distortion, '--distortion')
    distortion.lens_view(model, coefficients, resolution, fov, '--distortion')  # folds over, or too wide
    camera['posing']['distortion'] = (model, coefficients)
  return camera


def _render(args) -> int:
  settings = _check_args(args)
  with contextlib.ExitStack() as held:
    # One writer per output (`folder_lock`: `.<name>.lock` beside the tree and the sheet), taken before any file.
    for flag, path in (('--out', settings['target']), ('--contact_sheet', settings['sheet'])):
      if path:
        held.enter_context(folder_lock.hold(path, flag, beside=True))
    return _write(args, settings)


def _write(args, settings: dict) -> int:
  """The tree and the sheet written (everything is checked and held)."""
  if settings['out']:
    path = export.export(settings['out'], settings['resolution'], settings['scenes'], settings['seed'],
                         fov=settings['fov'], num_frames=settings['frames'],
                         scenes_per_folder=settings['scenes_per_folder'], jobs=settings['jobs'],
                         step=settings['step'], depth_range=settings['depth_range'], **settings['posing'])
    print(f'wrote {settings["scenes"]} scenes to {path}', flush=True)
  if settings['sheet']:
    frames = settings['frames']
    export.contact_sheet(settings['sheet'], settings['resolution'], min(settings['scenes'], 8), settings['seed'],
                         settings['fov'], frames, shown=tuple(sorted({0, frames // 3, 2 * frames // 3, frames - 1})),
                         overwrite=args.overwrite, log=print, step=settings['step'],
                         depth_range=settings['depth_range'], **settings['posing'])
    print(f'wrote a contact sheet to {settings["sheet"]}', flush=True)
  return 0


class _Terminated(KeyboardInterrupt):
  """SIGTERM, raised like Ctrl-C so that the same clean-up runs."""


def _on_sigterm(signum, frame):
  del frame
  signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM does not interrupt the clean-up (`main` restores)
  raise _Terminated(signum)


def _work(args) -> int:
  """Renders; SIGTERM, like Ctrl-C, removes the temporary folder or file, and is exit code 143."""
  try:
    return _render(args)
  except _Terminated as e:
    if cli.debug_enabled(args.debug):
      traceback.print_exception(e, file=sys.stderr)
    cli.report('interrupted (SIGTERM); temporary files were removed, finished outputs kept')
    return 143


def main(argv: list[str] | None = None) -> int:
  """The command line; returns the exit code: 0, 1 (a user error, usage errors too: one `error:` line), 130
  (Ctrl-C) or 143 (SIGTERM), the temporary files removed in every case."""
  handle_term = threading.current_thread() is threading.main_thread()
  previous = signal.signal(signal.SIGTERM, _on_sigterm) if handle_term else None
  try:
    # OSError: a disk that fills up or a folder that goes away mid-run.
    return cli.main(_parser(), _work, argv, user_errors=(OSError,))
  finally:
    if handle_term:
      signal.signal(signal.SIGTERM, previous)
