"""The footage's camera as infer.py undoes it: the lens (`--calibration`) and the rotation (`--attitude`).

DepthNet sees only translation through a pinhole. Two stages bring footage there, both optional:

1. **Undistortion** (`--calibration FILE`, `depthnet_jax.common.lens`): every frame is remapped to the pinhole with
   the calibration's own camera matrix at the frames' size (`--undistort_balance B`: OpenCV's choice of another
   one, 0 keeping only valid pixels, 1 keeping every source pixel), the maps computed once. The frames' FOV then
   comes from that camera matrix (no `--fov` needed) and the FOV rule resizes as with `--fov`.
2. **Stabilization** (`--attitude LOG`, `attitude`): for a pair (t - k, t), frame t - k is warped into frame t's
   orientation by the rotation-only homography K R_{t-k}^T R_t K^-1 (`rotations.homography`, bilinear), exact for
   every depth, so that only the translation's parallax is left, as the authors' follow-up
   (`inverse_warp.inverse_rotate`). K is that of the frames as the network's FOV rule takes them: from the
   calibration, else `--fov` at the frames' size, else the network's training FOV. The output pixels whose source
   fell outside frame t - k are invalid: the network sees frame t - k's border pixel replicated there (the
   follow-up's `padding_mode='border'`; docs/inference.md gives the fills measured), and their depth is NaN in the
   `.npy`, grey in the pictures, counted in the summary and in `shifts.csv`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from depthnet_jax.common import cli, lens, rotations

INVALID_GREY = 128   # the colour of invalid pixels in the depth and disparity pictures


@dataclasses.dataclass
class Camera:
  """What infer.py knows of the footage's camera (see the module docstring).

  Attributes:
    calibration: the lens (`--calibration`), None without one.
    balance: `--undistort_balance` (None: the calibration's own camera matrix).
    orientations: [N, 3, 3] camera-to-world rotation of input frame 0..N-1 (`--attitude`), None without one.
    fov: the footage's horizontal FOV (degrees) as given by `--fov`, None if not given.
  """
  calibration: lens.Lens | None = None
  balance: float | None = None
  orientations: np.ndarray | None = None
  fov: float | None = None
  attitude_source: str = ''
  calibration_source: str = ''
  calibration_flag: str = '--calibration'   # the flag and the file's whole path, as messages name it
  _undistorter: lens.Undistorter | None = None
  _k: np.ndarray | None = None

  @property
  def stabilizes(self) -> bool:
    return self.orientations is not None

  def setup(self, frame_size: tuple[int, int], train_fov: float) -> None:
    """Settles the undistortion maps and K for frames of (w, h) `frame_size` (once, before any frame is read); a
    calibration of another aspect ratio is a `cli.UserError`."""
    width, height = frame_size
    if self.calibration is not None:
      scaled = lens.scale_lens(self.calibration, (width, height), self.calibration_flag)
      self._undistorter = lens.Undistorter(scaled, balance=self.balance)
      self._k = np.asarray(self._undistorter.camera_matrix, np.float64)
    else:
      self._k = rotations.intrinsics(width, height, self.fov or train_fov)

  def check_covers(self, frames: int | None, what: str) -> None:
    """A `cli.UserError` if the attitude gives fewer orientations than `frames` (the input `what`'s frames)."""
    if self.orientations is None or frames is None or frames <= len(self.orientations):
      return
    raise cli.UserError(f'{self.attitude_source}: orientations for {len(self.orientations)} frames (0 to '
                        f'{len(self.orientations) - 1}) but --input {what} has {frames} or more; expected one per '
                        'frame (a --frame_times row or a camera_capture per frame)')

  @property
  def frame_fov(self) -> float | None:
    """The frames' horizontal FOV after undistortion (from the calibration), else --fov (None: not known)."""
    if self._undistorter is not None:
      return float(self._undistorter.fov)
    if self.calibration is not None:   # before `setup`: the calibration's own
      return float(self.calibration.fov)
    return self.fov

  def frame(self, image: np.ndarray) -> np.ndarray:
    """An input frame as the network's pinhole sees it (undistorted with the calibration; else as it is)."""
    return image if self._undistorter is None else self._undistorter.undistort(image)

  def stabilize(self, first: np.ndarray, first_index: int, index: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Frame `first_index` (image `first`) in frame `index`'s orientation, and the valid mask [H, W] (None: every
    pixel valid, no attitude)."""
    if self.orientations is None:
      return first, None
    h = rotations.homography(self._k, self.orientations[first_index], self.orientations[index])
    if np.allclose(h, np.eye(3), atol=1e-12):
      return first, None
    return rotations.warp(first, h)

  def rotation_between(self, first_index: int, index: int) -> float:
    """Degrees the camera turned from frame `first_index` to frame `index` (0 without an attitude)."""
    if self.orientations is None:
      return 0.0
    r = self.orientations[first_index].T @ self.orientations[index]
    return math.degrees(math.acos(float(np.clip((np.trace(r) - 1) / 2, -1, 1))))


def masked_pictures(valid: np.ndarray | None, picture: np.ndarray) -> np.ndarray:
  """A picture [H, W, 3] with the pixels not `valid` grey (None: every pixel valid)."""
  if valid is None:
    return picture
  return np.where(valid[..., None], picture, np.uint8(INVALID_GREY)).astype(np.uint8)
