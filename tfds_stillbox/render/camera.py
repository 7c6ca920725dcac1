"""The renderer's camera beyond Still Box's pinhole in pure translation: a turning camera (`rotation`), a flight
along given poses (`trajectory`) and a distorting lens (`distortion`), as export and contact_sheet take them:
checked (check_posing: render_scene's keywords), recorded in metadata.json's `args` (posing_args) and the lens
written beside the frames (write_calibration).
"""

from __future__ import annotations

import os

import numpy as np

from depthnet_jax.common import lens as lenses
from depthnet_jax.common import rotations
from depthnet_jax.common.cli import UserError
from tfds_stillbox.render import poses
from tfds_stillbox.render.checks import check_rotation
from tfds_stillbox.render.distortion import lens_view

CALIBRATION = 'calibration.yaml'  # the lens of a distorted tree, in each sub-folder


def check_posing(resolution, fov: float, num_frames: int, rotation=0.0, trajectory=None, distortion=None) -> dict:
  """The keywords of render_scene for a posed camera or a lens (only those not at their default), checked: a
  UserError naming `rotation`, `trajectory` or `distortion` otherwise (see export)."""
  posing = {}
  rotation = check_rotation('rotation', rotation, maximum=None)
  if rotation:
    posing['rotation'] = rotation
  if trajectory is not None:
    if isinstance(trajectory, (str, os.PathLike)):
      trajectory = poses.read_trajectory(os.fspath(trajectory), 'trajectory')
    if rotation:
      raise UserError(f'rotation={rotation!r} with trajectory {trajectory.source}: expected one of them')
    if len(trajectory.times) != num_frames:
      raise UserError(f'num_frames={num_frames!r}: trajectory {trajectory.source} has {len(trajectory.times)} '
                      'poses; expected as many frames')
    posing['trajectory'] = trajectory
  if distortion is not None:
    model, coefficients = _lens_model(distortion)
    lens_view(model, coefficients, resolution, fov, 'distortion')  # a lens that folds over, or too wide
    posing['distortion_model'] = (model, coefficients)
  return posing


def _lens_model(value) -> tuple[str, np.ndarray]:
  """(model, coefficients) of a distortion text (lens.parse_distortion) or pair, UserError unless one."""
  if isinstance(value, str):
    return lenses.parse_distortion(value, 'distortion')
  model, coefficients = value
  text = ','.join(str(float(c)) for c in np.ravel(coefficients))
  return lenses.parse_distortion(f'{model}:{text}', 'distortion')


def posing_args(posing: dict) -> dict:
  """The metadata `args` a posed camera or a lens adds (none at the defaults)."""
  args = {}
  if 'rotation' in posing:
    args['rotation'] = posing['rotation']
  if 'trajectory' in posing:
    trajectory = posing['trajectory']
    args.update(step=None, time_step=float(trajectory.times[-1] - trajectory.times[0]) / (len(trajectory.times) - 1),
                trajectory=trajectory.source)
  if 'distortion_model' in posing:
    model, coefficients = posing['distortion_model']
    args['distortion'] = {'model': model, 'coefficients': [float(c) for c in coefficients]}
    args['calibration'] = CALIBRATION
  return args


def write_calibration(path: str, resolution, fov: float, posing: dict) -> None:
  """Writes the lens of `posing` (check_posing's) on W x H frames of horizontal FOV `fov` to `path`
  (lens.write_calibration: K = rotations.intrinsics(W, H, fov), its coefficients, (W, H))."""
  (w, h), (model, coefficients) = resolution, posing['distortion_model']
  lenses.write_calibration(path, lenses.Lens(model, rotations.intrinsics(w, h, fov), coefficients, (w, h)))
