"""Orientations of a camera, and the rotation-only homography that removes a rotation between two frames.

The conventions (docs/inference.md states them the same way):

- Camera axes: x right, y down, z forward (Still Box's).
- An orientation is the camera-to-world rotation R (it maps camera coordinates to world coordinates: a ray d in
  the camera is R d in the world), as a Hamilton quaternion [w, x, y, z]. World axes are any fixed right-handed
  frame.
- PX4's `vehicle_attitude.q` is the body (FRD: x forward, y right, z down) to NED rotation. A forward-looking
  camera has camera x = body y, camera y = body z, camera z = body x (`BODY_FROM_FORWARD_CAMERA`); a camera turned
  on the body by (roll, pitch, yaw) (a gimbal pointing down: pitch -90) is `camera_to_body(roll, pitch, yaw)`.
- Euler angles (roll, pitch, yaw in degrees, as flight logs give them) are the aerospace Z-Y-X sequence: yaw about
  z, then pitch about the new y, then roll about the new x, i.e. R = Rz(yaw) Ry(pitch) Rx(roll) (scipy's
  `Rotation.from_euler('ZYX', [yaw, pitch, roll])`).

The pixel convention is OpenCV's: pixel (u, v) has its centre at integer coordinates, so a W x H pinhole of
horizontal FOV `fov` centred on its axis has K = [[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]] with
f = (W / 2) / tan(fov / 2) (`intrinsics`; the renderer's rays go through the same pixel centres).

Removing the rotation (`homography`): frame a (orientation R_a) is warped into frame b's orientation (R_b) by the
rotation-only homography H = K R_a^T R_b K^-1: the output pixel p' of frame b's orientation takes frame a's pixel
H p' (exact for every depth; only the translation's parallax is left). NumPy and the standard library only.
"""

from __future__ import annotations

import math

import numpy as np

# A forward-looking camera in a FRD body: its columns are the camera's x, y, z axes in body coordinates.
BODY_FROM_FORWARD_CAMERA = np.array([[0.0, 0.0, 1.0],
                                     [1.0, 0.0, 0.0],
                                     [0.0, 1.0, 0.0]])
UNIT_TOLERANCE = 1e-2   # |q| may differ from 1 by this much (float32 logs, rounded CSVs); normalised after


def quaternion_to_matrix(q) -> np.ndarray:
  """Hamilton quaternions [..., 4] (w, x, y, z; normalised here) -> rotation matrices [..., 3, 3]."""
  q = np.asarray(q, np.float64)
  w, x, y, z = np.moveaxis(q / np.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
  return np.stack([
      np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
      np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
      np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)], -2)


def matrix_to_quaternion(matrix) -> np.ndarray:
  """Rotation matrices [..., 3, 3] -> Hamilton quaternions [..., 4] (w, x, y, z) with w >= 0."""
  from scipy.spatial.transform import Rotation
  m = np.asarray(matrix, np.float64)
  q = Rotation.from_matrix(m.reshape(-1, 3, 3)).as_quat(scalar_first=True)
  q = np.where(q[:, :1] < 0, -q, q)
  return q.reshape(*m.shape[:-2], 4)


def euler_to_matrix(roll, pitch, yaw) -> np.ndarray:
  """Roll, pitch, yaw in degrees (arrays alike) -> Rz(yaw) Ry(pitch) Rx(roll), [..., 3, 3]."""
  r, p, y = (np.radians(np.asarray(a, np.float64)) for a in (roll, pitch, yaw))
  cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
  return np.stack([
      np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], -1),
      np.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], -1),
      np.stack([-sp, cp * sr, cp * cr], -1)], -2)


def axis_angle(axis, degrees: float) -> np.ndarray:
  """The rotation of `degrees` about `axis` (any non-zero 3-vector, right-handed), [3, 3] (Rodrigues)."""
  a = np.asarray(axis, np.float64)
  a = a / np.linalg.norm(a)
  theta = math.radians(degrees)
  cross = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
  return np.eye(3) + math.sin(theta) * cross + (1.0 - math.cos(theta)) * cross @ cross


def camera_to_body(roll: float = 0.0, pitch: float = 0.0, yaw: float = 0.0) -> np.ndarray:
  """The camera-to-body rotation of a camera turned by (roll, pitch, yaw) degrees on a FRD body from the
  forward-looking one (0, 0, 0: camera x = body y, y = body z, z = body x; pitch -90: looking down)."""
  return euler_to_matrix(roll, pitch, yaw) @ BODY_FROM_FORWARD_CAMERA


def intrinsics(width: int, height: int, fov: float) -> np.ndarray:
  """K [3, 3] of a W x H pinhole of horizontal FOV `fov` degrees, centred, OpenCV's pixel centres."""
  f = (width / 2.0) / math.tan(math.radians(fov) / 2.0)
  return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def scaled_intrinsics(k, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
  """K of an image of (w, h) `from_size` resized to `to_size`: pixel edges stay where they are (the centre of
  pixel u moves to (u + 0.5) s - 0.5)."""
  (w0, h0), (w1, h1) = from_size, to_size
  sx, sy = w1 / w0, h1 / h0
  k = np.asarray(k, np.float64)
  return np.array([[k[0, 0] * sx, k[0, 1] * sx, (k[0, 2] + 0.5) * sx - 0.5],
                   [0.0, k[1, 1] * sy, (k[1, 2] + 0.5) * sy - 0.5],
                   [0.0, 0.0, 1.0]])


def homography(k, source, target) -> np.ndarray:
  """H [3, 3] = K R_source^T R_target K^-1: the pixel of the frame of orientation `source` (camera-to-world
  [3, 3]) that the output pixel p' of orientation `target` takes (p = H p', homogeneous). As `cv2.warpPerspective`
  with `WARP_INVERSE_MAP`, or `warp`."""
  k = np.asarray(k, np.float64)
  return k @ np.asarray(source, np.float64).T @ np.asarray(target, np.float64) @ np.linalg.inv(k)


# The interpolation of `warp` (cv2.INTER_LANCZOS4): a stabilized first frame as sharp as the second. Measured with
# evaluate --stabilize on a rendered rotated tree (docs/inference.md): the shipped model's error 13.39 m with
# Lanczos, 13.90 bicubic, 15.06 bilinear, 17.24 nearest (unrotated: 8.94 m).
WARP = 4


def warp(image: np.ndarray, h: np.ndarray, fill=None, interpolation: int = WARP) -> tuple[np.ndarray, np.ndarray]:
  """`image` [H, W, C] warped by the homography `h` (output pixel p' takes image(h p'), by `interpolation`, a cv2
  flag: Lanczos by default), and the valid mask [H, W] bool: the output pixels whose source lies inside the image
  (0 <= x <= W - 1, 0 <= y <= H - 1, in front of the camera). Invalid pixels take `fill` [H, W, C] there (None:
  the nearest border pixel, i.e. their source clamped into the image)."""
  import cv2
  rows, cols = image.shape[:2]
  u, v = np.meshgrid(np.arange(cols, dtype=np.float64), np.arange(rows, dtype=np.float64))
  p = np.asarray(h, np.float64) @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
  z = p[2]
  ahead = z > 1e-9
  with np.errstate(divide='ignore', invalid='ignore'):
    x, y = np.where(ahead, p[0] / z, 0.0), np.where(ahead, p[1] / z, 0.0)
  valid = ahead & (x >= -1e-6) & (x <= cols - 1 + 1e-6) & (y >= -1e-6) & (y <= rows - 1 + 1e-6)
  map_x = np.clip(x, 0, cols - 1).reshape(rows, cols).astype(np.float32)
  map_y = np.clip(y, 0, rows - 1).reshape(rows, cols).astype(np.float32)
  out = cv2.remap(image, map_x, map_y, interpolation, borderMode=cv2.BORDER_REPLICATE).reshape(image.shape)
  valid = valid.reshape(rows, cols)
  if fill is not None:
    out = np.where(valid[..., None], out, fill).astype(image.dtype)
  return out, valid
