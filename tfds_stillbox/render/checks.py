"""The renderer's own ranges, checked where a user gives them: on the command line (cli) and in the TFDS
builder's configs (tfds_stillbox_dataset_builder.StillBoxConfig). Each check raises depthnet_jax.cli.UserError
naming the flag or field, its value and the range; the shared checks (check_int, ...) are depthnet_jax.cli's.
The library (scenes, export) runs the same checks without the upper bounds (`maximum=None`).
"""

from __future__ import annotations

import math
import numbers
import os
import shutil

from depthnet_jax.common import memory
from depthnet_jax.common.cli import UserError, check_float, check_int
from tfds_stillbox.render import raycast

# Pixels per side on the command line and in builder configs (8x the largest Still Box): rendering takes ~45 bytes
# per pixel and frame, so a 4096 x 4096 scene of 10 frames needs ~7.5 GB; a typo like 6400 is refused up front.
MAX_RESOLUTION = 4096
MAX_FRAME_PIXELS = 10 * MAX_RESOLUTION ** 2  # frames x width x height of one scene, rendered at once (~7.5 GB)
MIN_FRAMES = 2  # on the command line and in builder configs: a training pair needs two frames of a scene
# Memory while a scene renders, per pixel and frame: 56-61 bytes measured (render_scene's peak RSS, 10 frames,
# supersampled: at 256x256 less the process's own; its growth from 64x64 to 192x192), rounded up; and a rendering
# process besides its scene (Python, NumPy, the renderer: 35-54 MiB measured).
RENDER_BYTES_PER_PIXEL = 64
JOB_BYTES = 64 * 2**20
MAX_JOBS_PER_CORE = 4  # rendering processes per core beyond which --jobs is a typo, not a speed-up
MAX_SCENES = 10**7  # scenes of one command (each is a job in a list held in memory; Still Box has 16000 per size)
DISK_BYTES_PER_PIXEL = 4  # written per pixel and frame at least: the depth map's float32 (the JPEG comes on top)
MAX_STEP = 10.0  # metres per frame on the command line (Still Box: 0.1); more is a typo, not a flight
MAX_DEPTH = 10000.0  # metres: the farthest wall distance the command line accepts (Still Box's rooms: 8 to 150)
MAX_ROTATION = 30.0  # degrees per frame on the command line: more turns a 90-degree view away in three frames


def check_fov(name: str, value) -> float:
  """`value` (degrees) in the open interval (0, 180): a pinhole camera sees less than a half space."""
  try:
    return raycast.check_fov(value)
  except ValueError:
    raise UserError(f'{name}={value!r}: expected a number of degrees in (0, 180)') from None


def check_resolution(name: str, value, maximum: int | None = MAX_RESOLUTION) -> tuple[int, int]:
  """'64', '96x64', 64 or (96, 64) -> (width, height), each side from 1 to `maximum` pixels."""
  expected = (f"expected a size like 64 (square) or WIDTHxHEIGHT like 96x64, each side from 1 to {maximum} "
              'pixels' if maximum else "expected a size like 64 (square) or WIDTHxHEIGHT like 96x64, each side >= 1")
  shown = value if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else value
  try:
    w, h = raycast.as_resolution(value)
  except ValueError:
    raise UserError(f'{name}={shown!r}: {expected}') from None
  if maximum and max(w, h) > maximum:
    raise UserError(f'{name}={shown!r}: {expected}')
  return w, h


def check_frames(name: str, value, resolution) -> int:
  """Frames per scene: >= MIN_FRAMES, and few enough that a scene (all its frames at once) fits in memory: at most
  MAX_FRAME_PIXELS pixels, and RENDER_BYTES_PER_PIXEL x its pixels within this machine's memory."""
  frames = check_int(name, value, MIN_FRAMES, why='a training pair needs two frames of a scene')
  w, h = resolution
  if frames * w * h > MAX_FRAME_PIXELS:
    raise UserError(f'{name}={value!r}: expected at most {MAX_FRAME_PIXELS // (w * h)} frames at {w}x{h} '
                    f'(a scene is rendered at once: frames x width x height <= {MAX_FRAME_PIXELS}, ~7.5 GB)')
  memory.check_count(name, frames, RENDER_BYTES_PER_PIXEL * w * h, f'a frame rendered at {w}x{h} (a scene is '
                     'rendered at once)')
  return frames


def check_jobs(name: str, value, frames: int, resolution, scenes: int) -> int:
  """Rendering processes (0: one per core): at most MAX_JOBS_PER_CORE per core, and as many scenes rendered at
  once (the processes started: at most one per scene) within this machine's memory."""
  cores = os.cpu_count() or 1
  jobs = check_int(name, value, 0, MAX_JOBS_PER_CORE * cores,
                   why=f'0: one per core; at most {MAX_JOBS_PER_CORE} per core of this machine')
  w, h = resolution
  memory.check_count(name, jobs, RENDER_BYTES_PER_PIXEL * w * h * frames + JOB_BYTES,
                     f'a process rendering a scene of {frames} frames at {w}x{h}', used=min(jobs or cores, scenes))
  return jobs


def check_scenes(name: str, value, frames: int, resolution, out: str | None) -> int:
  """Scenes: >= 1, at most MAX_SCENES (every scene is one job in a list), and if `out` (the folder written) is
  given, their frames' depth maps alone (DISK_BYTES_PER_PIXEL a pixel) within the free space of its file system."""
  scenes = check_int(name, value, 1, MAX_SCENES)
  if out is None:
    return scenes
  existing = os.path.abspath(out)
  while not os.path.exists(existing) and os.path.dirname(existing) != existing:
    existing = os.path.dirname(existing)
  try:
    free = shutil.disk_usage(existing).free
  except OSError:
    return scenes
  w, h = resolution
  each = DISK_BYTES_PER_PIXEL * w * h * frames
  if scenes * each > free:
    raise UserError(f'{name}={value!r}: expected at most {free // each} (a scene of {frames} frames at {w}x{h} '
                    f'writes at least {memory.shown(each)}: {scenes} need ~{memory.shown(scenes * each)}, the file '
                    f'system of {existing} has {memory.shown(free)} free)')
  return scenes


def check_step(name: str, value, maximum: float | None = MAX_STEP) -> float:
  """The camera's motion per frame in metres: a finite number in (0, maximum] (> 0 without a maximum)."""
  try:
    return check_float(name, value, 0.0, maximum, low_open=True)
  except UserError as e:
    raise UserError(f'{e} (metres per frame)') from None


def check_rotation(name: str, value, maximum: float | None = MAX_ROTATION) -> float:
  """Degrees the camera turns per frame: a finite number in [0, maximum] (>= 0 without a maximum)."""
  try:
    return check_float(name, value, 0.0, maximum)
  except UserError as e:
    raise UserError(f'{e} (degrees per frame)') from None


def check_depth_range(name: str, value, maximum: float | None = MAX_DEPTH) -> tuple[float, float]:
  """'NEAR,FAR' or (near, far) in metres -> (near, far) floats with 0 < near < far <= maximum."""
  bound = f' <= {maximum:g}' if maximum else ''
  expected = f'expected two numbers NEAR,FAR in metres with 0 < NEAR < FAR{bound}'
  shown = value if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else value
  parts = value.split(',') if isinstance(value, str) else value
  try:
    parts = list(parts)
    if len(parts) != 2:
      raise ValueError
    near, far = (float(p) if isinstance(p, str) else p for p in parts)
    if any(isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) for v in (near, far)):
      raise ValueError
    near, far = float(near), float(far)
  except (TypeError, ValueError):
    raise UserError(f'{name}={shown!r}: {expected}') from None
  if not 0.0 < near < far or (maximum and far > maximum):
    raise UserError(f'{name}={shown!r}: {expected}')
  return near, far
