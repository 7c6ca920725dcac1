"""infer.py's flight logs and lens read into what the run needs, before any work: the frames' times on the log's
clock (`frame_times`), a `.ulg` --motion (`ulog_motion`) and the `camera.Camera` (`camera`: --calibration and
--attitude at the frames). The logs themselves are read by `attitude` and `flight_log`, the lens by
`depthnet_jax.common.lens`."""

from __future__ import annotations

import os

from depthnet_jax.common import cli, lens
from depthnet_jax.infer import attitude, flight_log, motion
from depthnet_jax.infer.camera import Camera
from depthnet_jax.infer.options import InferOptions


def is_ulog(path: str | None) -> bool:
  return bool(path) and flight_log.is_ulog(path)


def _needs_times(opts: InferOptions) -> tuple[bool, attitude.Attitude | None]:
  """(whether the frames' times are needed: a timed --attitude or a .ulg --motion, the attitude read)."""
  read = attitude.read_attitude(opts.attitude) if opts.attitude is not None else None
  return (read is not None and read.timed) or is_ulog(opts.motion_log), read


def frame_times(opts: InferOptions, count: int | None) -> tuple[flight_log.FrameTimes | None, attitude.Attitude | None]:
  """(the frames' times, or None where no log needs them; the attitude read, or None): --frame_times, else the
  camera_capture topic of the .ulg given (--attitude, then --motion)."""
  needed, read = _needs_times(opts)
  if not needed:
    return None, read
  ulog, flag = None, '--attitude'
  for f, path in (('--attitude', opts.attitude), ('--motion', opts.motion_log)):
    if ulog is None and is_ulog(path):
      ulog, flag = path, f
  if opts.frame_times is None and ulog is None:
    given = f'{read.prefix}: orientations by time ({read.where})' if read is not None and read.timed else \
        f'--motion {opts.motion_log}: positions by time'
    raise cli.UserError(f"{given} need the frames' times; expected --frame_times CSV (frame,time: seconds on the "
                        "log's clock) or a .ulg with a camera_capture topic")
  times = attitude.frame_times(opts.frame_times, ulog, opts.time_offset, ulog_flag=flag)
  return times, read


def ulog_motion(path: str, times: flight_log.FrameTimes) -> motion.Motion:
  """--motion f.ulg: the positions of `vehicle_local_position` at the frames' times."""
  positions = flight_log.positions_at(path, times)
  return motion.Motion(source=f'--motion {os.path.basename(path)} (vehicle_local_position)', kind='positions',
                       positions=positions, path=os.path.abspath(path))


def camera(opts: InferOptions, count: int | None, times, read: attitude.Attitude | None) -> Camera:
  """The footage's camera: the calibration read, the orientation of every frame (`count`: the input's frames when
  counted; a timed log gives one per frame time)."""
  calibration = lens.read_calibration(opts.calibration) if opts.calibration is not None else None
  orientations, source = None, ''
  if read is not None:
    orientations = attitude.orientations_at(read, count, times, opts.camera_rotation)
    source = read.source
  return Camera(calibration=calibration, balance=opts.undistort_balance, orientations=orientations, fov=opts.fov,
                attitude_source=source, calibration_source=f'--calibration {os.path.basename(opts.calibration or "")}',
                calibration_flag=f'--calibration {os.path.abspath(opts.calibration or "")}')
