"""Frames as a distorting lens sees them: the renderer's pinhole canvas remapped through OpenCV's lens models.

A LensView (`lens_view`) is the lens of a W x H frame: camera matrix K = rotations.intrinsics(W, H, fov) (the
pinhole's, OpenCV's pixel centres) and the coefficients of OpenCV's radial-tangential or fisheye model
(depthnet_jax.common.lens). Every output pixel averages SUBSAMPLES x SUBSAMPLES rays; each ray's undistorted
direction (cv2.undistortPoints or cv2.fisheye.undistortPoints, iterated to convergence and checked by distorting
it back) is looked up, bilinearly, in a pinhole canvas of the same optical axis and CANVAS_SCALE times the focal
length, wide enough for every ray (`canvas_size`, `canvas_fov`). A lens whose rays do not come back within
ROUND_TRIP pixels (it folds over, or a fisheye reaches past OpenCV's distorted angle of 90 degrees), or that
sees farther than MAX_ANGLE from the axis (a pinhole canvas cannot hold it), is refused with a `cli.UserError`
naming the flag. Textures are filtered over the frame's pixel, not the canvas's (raycast.render_frames' `pixel`).
Depth maps are not distorted: they stay those of the pinhole with the same K.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from depthnet_jax.common import lens as lenses
from depthnet_jax.common import rotations
from depthnet_jax.common.cli import UserError
from tfds_stillbox.render import checks

CANVAS_SCALE = 2  # canvas pixels per frame pixel and axis at the image centre
SUBSAMPLES = 2  # rays per output pixel and axis, averaged (anti-aliasing)
MAX_ANGLE = 80.0  # degrees from the optical axis: the widest ray a pinhole canvas is rendered for
ROUND_TRIP = 0.01  # pixels: an undistorted ray distorted back must land this near its pixel
_CRITERIA = (3, 200, 1e-12)  # cv2.TERM_CRITERIA_COUNT + EPS, iterations, epsilon


@dataclasses.dataclass(frozen=True, eq=False)
class LensView:
  """The rays of a distorting lens, in a pinhole canvas.

  Attributes:
    lens: the lens (depthnet_jax.common.lens.Lens) of the frames: K of the pinhole, the coefficients, (W, H).
    canvas_size: (width, height) of the pinhole canvas to render, centred on the optical axis.
    canvas_fov: its horizontal field of view, degrees (its focal length is CANVAS_SCALE x K's).
    map_x, map_y: float32 [H * SUBSAMPLES, W * SUBSAMPLES] canvas coordinates of every ray (cv2.remap's maps).
  """
  lens: lenses.Lens
  canvas_size: tuple[int, int]
  canvas_fov: float
  map_x: np.ndarray
  map_y: np.ndarray

  def distort(self, canvas: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] frame of a uint8 [canvas H, canvas W, 3] canvas: each pixel the mean of its rays."""
    import cv2
    w, h = self.lens.size
    s = SUBSAMPLES
    rays = cv2.remap(canvas.astype(np.float32), self.map_x, self.map_y, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)
    rgb = rays.reshape(h, s, w, s, 3).mean(axis=(1, 3), dtype=np.float32)
    return np.clip(rgb + 0.5, 0.0, 255.0).astype(np.uint8)


_CACHE: dict = {}


def lens_view(model: str, coefficients, resolution, fov: float, flag: str = '--distortion') -> LensView:
  """The LensView of a (model, coefficients) lens (lens.parse_distortion's) on W x H frames of horizontal FOV
  `fov`; a UserError naming `flag` for a lens that folds over or sees farther than MAX_ANGLE (kept: the last 8)."""
  w, h = resolution
  coefficients = np.asarray(coefficients, np.float64).ravel()
  key = (model, coefficients.tobytes(), int(w), int(h), float(fov))
  if key not in _CACHE:
    while len(_CACHE) >= 8:
      _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = _lens_view(model, coefficients, (int(w), int(h)), float(fov), flag)
  return _CACHE[key]


def _shown(model: str, coefficients) -> str:
  text = ','.join(f'{c:g}' for c in coefficients)
  return f'fisheye:{text}' if model == 'fisheye' else text


def _lens_view(model: str, coefficients: np.ndarray, size: tuple[int, int], fov: float, flag: str) -> LensView:
  w, h = size
  k = rotations.intrinsics(w, h, fov)
  lens = lenses.Lens(model, k, coefficients, (w, h))
  s = SUBSAMPLES
  u, v = np.meshgrid((np.arange(w * s) + 0.5) / s - 0.5, (np.arange(h * s) + 0.5) / s - 0.5)
  pixels = np.stack([u.ravel(), v.ravel()], -1)
  rays = _undistort(lens, pixels)  # [N, 2] normalised
  where = f'{flag}={_shown(model, coefficients)}'
  error = np.abs(_distort(lens, rays) - pixels).max(initial=0.0) if np.all(np.isfinite(rays)) else math.inf
  if not error <= ROUND_TRIP:
    raise UserError(f'{where}: at {w}x{h} and --fov {fov:g} the lens folds over or leaves OpenCV\'s model (its '
                    f'rays do not come back to their pixels within {ROUND_TRIP:g} px); expected a lens that is '
                    'one-to-one over the frame (a smaller --fov or a weaker distortion)')
  angle = math.degrees(math.atan(float(np.hypot(rays[:, 0], rays[:, 1]).max())))
  if angle > MAX_ANGLE:
    raise UserError(f'{where}: at {w}x{h} and --fov {fov:g} the lens sees rays {angle:.1f} degrees from the '
                    f'optical axis; expected at most {MAX_ANGLE:g} (a smaller --fov or a weaker distortion)')
  f = CANVAS_SCALE * float(k[0, 0])
  cw, ch = (2 * math.ceil(f * float(np.abs(rays[:, j]).max()) + 2.0) for j in (0, 1))
  if cw * ch > checks.MAX_FRAME_PIXELS:
    raise UserError(f'{where}: at {w}x{h} and --fov {fov:g} the lens needs a {cw}x{ch} canvas; expected at most '
                    f'{checks.MAX_FRAME_PIXELS} pixels (a smaller --resolution, --fov or distortion)')
  map_x = (f * rays[:, 0] + (cw - 1) / 2.0).reshape(h * s, w * s).astype(np.float32)
  map_y = (f * rays[:, 1] + (ch - 1) / 2.0).reshape(h * s, w * s).astype(np.float32)
  return LensView(lens, (cw, ch), math.degrees(2.0 * math.atan(cw / 2.0 / f)), map_x, map_y)


def _undistort(lens: lenses.Lens, pixels: np.ndarray) -> np.ndarray:
  """[N, 2] pixels of the distorted frame -> [N, 2] normalised undistorted coordinates (x / z, y / z)."""
  import cv2
  points = pixels.reshape(-1, 1, 2).astype(np.float64)
  k, d = lens.camera_matrix, lens.coefficients
  if lens.model == 'fisheye':
    out = cv2.fisheye.undistortPoints(points, k, d, criteria=_CRITERIA)
  else:
    out = cv2.undistortPoints(points, k, d, criteria=_CRITERIA)
  return out.reshape(-1, 2)


def _distort(lens: lenses.Lens, rays: np.ndarray) -> np.ndarray:
  """[N, 2] normalised undistorted coordinates -> [N, 2] pixels of the distorted frame."""
  import cv2
  k, d = lens.camera_matrix, lens.coefficients
  if lens.model == 'fisheye':
    out = cv2.fisheye.distortPoints(rays.reshape(-1, 1, 2), k, d)
  else:
    points = np.concatenate([rays, np.ones((len(rays), 1))], -1).reshape(-1, 1, 3)
    out, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), k, d)
  return out.reshape(-1, 2)
