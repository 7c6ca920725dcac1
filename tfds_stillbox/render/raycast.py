"""The camera and the vectorised ray caster of the Still Box renderer: numpy, all frames of a scene at once.

Camera (pinhole, its axes the world's: a turned camera sees the world moved into its axes, poses.in_camera):
x image-right, y image-down, z the optical axis; horizontal FOV `fov`, focal
f = (W / 2) / tan(fov / 2) pixels, square pixels, principal point at the image centre, pixel (u, v) sampled at
its centre (u + 0.5, v + 0.5). The ray of a pixel is `position + t * (x, y, 1)`, so the ray parameter `t` of the
first hit IS the planar z-depth (metres along the optical axis, not the ray length) that the renderer returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from depthnet_jax.common import geometry
from tfds_stillbox.render import shapes, textures

SUPERSAMPLE = 1  # colour rays per pixel and axis by default (2: smoother edges, 3-4x slower; JPEG loss alike)
_CHUNK = 1 << 16  # pixels shaded at a time: bounds the temporaries of the noise at high resolution


def as_resolution(resolution) -> tuple[int, int]:
  """An int (square), a (width, height) pair, or a string '64' / '96x64' -> (width, height), each >= 1.

  Raises:
    ValueError: naming the value and the expected form (not a bare int() or unpacking error).
  """
  expected = "expected a positive size like 64 (square), (width, height) or '96x64' (width x height)"
  value = resolution
  if isinstance(value, str):
    parts = value.strip().lower().split('x')
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
      raise ValueError(f'resolution {resolution!r}: {expected}')
    value = int(parts[0]) if len(parts) == 1 else tuple(int(p) for p in parts)
  if np.ndim(value) == 0:
    value = (value, value)
  try:
    sizes = [v.item() if isinstance(v, np.generic) else v for v in value]
  except TypeError:
    raise ValueError(f'resolution {resolution!r}: {expected}') from None
  # bools and non-integral floats are mistakes, not sizes; int(63.7) would silently render 63
  if len(sizes) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v)
                            or v != int(v) for v in sizes):
    raise ValueError(f'resolution {resolution!r}: {expected}')
  w, h = (int(v) for v in sizes)
  if w < 1 or h < 1:
    raise ValueError(f'resolution {resolution!r}: {expected}')
  return w, h


def check_fov(fov) -> float:
  """`fov` (horizontal field of view, degrees) as a float in the open interval (0, 180)."""
  if isinstance(fov, bool) or not isinstance(fov, (int, float, np.number)) or not 0.0 < float(fov) < 180.0:
    raise ValueError(f'fov={fov!r}: expected a number of degrees in (0, 180)')
  return float(fov)


def pixel_slopes(resolution, fov: float) -> tuple[np.ndarray, np.ndarray, float]:
  """(x [W], y [H], f): the ray (x[u], y[v], 1) goes through the centre of pixel (u, v)."""
  w, h = as_resolution(resolution)
  f = geometry.focal_length(w, check_fov(fov))
  x = ((np.arange(w) + 0.5 - w / 2.0) / f).astype(np.float32)
  y = ((np.arange(h) + 0.5 - h / 2.0) / f).astype(np.float32)
  return x, y, f


def _slope_range(a, z, radius):
  """Range of slopes a/z of the rays from the origin that can meet a disc (a, z, radius) of their plane."""
  dist = np.hypot(a, z)
  inside = dist <= radius * (1.0 + 1e-6)
  theta = np.arctan2(a, z)
  delta = np.arcsin(np.minimum(radius / np.maximum(dist, 1e-12), 1.0))
  lo = np.maximum(theta - delta, -np.pi / 2)
  hi = np.minimum(theta + delta, np.pi / 2)
  visible = inside | (lo < hi)
  lo = np.where(inside, -np.pi / 2, lo)
  hi = np.where(inside, np.pi / 2, hi)
  return np.clip(np.tan(lo), -1e6, 1e6), np.clip(np.tan(hi), -1e6, 1e6), visible


def _screen_window(shape, positions, f, w, h):
  """(v0, v1, u0, u1): pixels whose rays may meet the shape's bounding sphere in some frame; None if none."""
  if not np.isfinite(shape.bound):
    return 0, h, 0, w
  rel = shape.center - positions  # [T, 3]
  x_lo, x_hi, x_vis = _slope_range(rel[:, 0], rel[:, 2], shape.bound)
  y_lo, y_hi, y_vis = _slope_range(rel[:, 1], rel[:, 2], shape.bound)
  visible = x_vis & y_vis
  if not visible.any():
    return None
  # Pixel i is sampled at slope (i + 0.5 - size / 2) / f; one pixel of margin absorbs rounding.
  u0 = int(np.clip(np.floor(f * x_lo[visible].min() + w / 2 - 0.5) - 1, 0, w))
  u1 = int(np.clip(np.ceil(f * x_hi[visible].max() + w / 2 - 0.5) + 2, 0, w))
  v0 = int(np.clip(np.floor(f * y_lo[visible].min() + h / 2 - 0.5) - 1, 0, h))
  v1 = int(np.clip(np.ceil(f * y_hi[visible].max() + h / 2 - 0.5) + 2, 0, h))
  return (v0, v1, u0, u1) if u0 < u1 and v0 < v1 else None


def _local_origins(shape, positions):
  """Camera positions in the shape's frame, as float32 (x, y, z) components of shape [T, 1, 1]."""
  o = ((positions - shape.center) @ shape.rotation).astype(np.float32)  # [T, 3]
  return tuple(o[:, k, None, None] for k in range(3))


def _cast(objects, positions, resolution, fov):
  """(depth float32 [T, H, W], object index int32 [T, H, W], -1 where none) of the pixel-centre rays."""
  w, h = resolution
  x, y, f = pixel_slopes((w, h), fov)
  depth = np.full((len(positions), h, w), np.inf, np.float32)
  ids = np.full((len(positions), h, w), -1, np.int32)
  for k, shape in enumerate(objects):
    window = _screen_window(shape, positions, f, w, h)
    if window is None:
      continue
    v0, v1, u0, u1 = window
    rot = shape.rotation.astype(np.float32)
    dx, dy = x[None, u0:u1], y[v0:v1, None]
    d = tuple(rot[0, j] * dx + rot[1, j] * dy + rot[2, j] for j in range(3))  # local [h', w'] each
    t = shape.local_hit(_local_origins(shape, positions), d)  # [T, h', w']
    view = depth[:, v0:v1, u0:u1]
    closer = t < view
    view[closer] = t[closer]
    ids[:, v0:v1, u0:u1][closer] = k
  return depth, ids


def render_frames(objects: Sequence[shapes.Shape], positions, resolution, fov: float = 90.0, *,
                  light=(0.0, -0.6, -0.8), ambient: float = 0.4,
                  supersample: int = SUPERSAMPLE, pixel: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """Renders the objects from each camera position (camera axes = world axes, no rotation).

  Args:
    objects: shapes (see shapes.py); where several meet a ray, the nearest wins.
    positions: [T, 3] camera positions (or one [3] position: then T = 1).
    resolution: int (square) or (width, height).
    fov: horizontal field of view, degrees.
    light: vector towards the directional light (normalised here).
    ambient: share of the ambient term in the shading.
    supersample: colour is the mean of supersample x supersample rays per pixel (anti-aliasing); depth is
      always that of the single ray through the pixel centre (a z-buffer, not an average across edges).
    pixel: the width, in pixels of this render, over which textures are filtered (default 1: a pixel; a canvas
      resampled to a coarser frame, distortion's, filters over the frame's pixel).

  Returns:
    (rgb uint8 [T, H, W, 3], depth float32 [T, H, W]): depth is planar z-depth in metres, inf (and black)
    where no object is hit.
  """
  positions = np.asarray(positions, np.float64).reshape(-1, 3)
  w, h = as_resolution(resolution)
  s = int(supersample)
  if s < 1:
    raise ValueError(f'supersample must be at least 1, got {supersample}')
  with shapes.errstate():
    depth, ids = _cast(objects, positions, (w, h), fov)
    # The s-times finer grid of the same field of view has its pixels' s x s blocks inside ours.
    fine_depth, fine_ids = (depth, ids) if s == 1 else _cast(objects, positions, (w * s, h * s), fov)
    x, y, f = pixel_slopes((w * s, h * s), fov)
    rgb = _shade(objects, positions, fine_ids, fine_depth, x, y, f / pixel, np.asarray(light, np.float64), ambient)
  rgb = rgb.reshape(len(positions), h, s, w, s, 3).mean(axis=(2, 4), dtype=np.float32)
  return np.clip(rgb * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8), depth


def _shade(objects, positions, ids, depth, x, y, f, light, ambient):
  """Colour in [0, 1] of every pixel from its object, depth and direction; [T * H * W, 3] float32."""
  light = (light / np.linalg.norm(light)).astype(np.float32)
  flat_ids = ids.ravel()
  flat_depth = depth.ravel()
  order = np.argsort(flat_ids, kind='stable')
  ends = np.cumsum(np.bincount(flat_ids + 1, minlength=len(objects) + 1))
  rgb = np.zeros((flat_ids.size, 3), np.float32)
  for k, shape in enumerate(objects):
    pixels = order[ends[k]:ends[k + 1]]
    rot = shape.rotation.astype(np.float32)
    origins = ((positions - shape.center) @ shape.rotation).astype(np.float32)  # [T, 3] local
    for start in range(0, pixels.size, _CHUNK):
      idx = pixels[start:start + _CHUNK]
      frame, row, col = np.unravel_index(idx, ids.shape)
      t = flat_depth[idx]
      d = np.stack([x[col], y[row], np.ones_like(t)], -1) @ rot  # [N, 3] local, unnormalised
      p = origins[frame] + t[:, None] * d  # [N, 3] local hit points
      n = np.stack(shape.local_normal(tuple(p[:, j] for j in range(3))), -1).astype(np.float32)
      n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
      # A pixel covers t / f metres on a fronto-parallel surface, stretched by the slant of the surface.
      cos = np.abs(np.sum(n * d, -1)) / np.linalg.norm(d, axis=-1)
      footprint = t / np.float32(f) / np.sqrt(np.maximum(cos, 0.1))
      color = textures.albedo(shape.material, tuple(p[:, j] for j in range(3)), tuple(n[:, j] for j in range(3)),
                              footprint)
      rgb[idx] = textures.shade(color, n @ rot.T, light, ambient)
  return np.clip(rgb, 0.0, 1.0)


def cast_depth(objects: Sequence[shapes.Shape], positions, resolution, fov: float = 90.0) -> np.ndarray:
  """The depth maps alone, float32 [T, H, W] planar z-depth (inf where no object is hit), as render_frames
  returns them, without shading (the depth of a frame whose colour comes from elsewhere: distortion)."""
  positions = np.asarray(positions, np.float64).reshape(-1, 3)
  with shapes.errstate():
    return _cast(objects, positions, as_resolution(resolution), fov)[0]


def render_frame(objects: Sequence[shapes.Shape], camera_position, resolution, fov: float = 90.0,
                 **shading) -> tuple[np.ndarray, np.ndarray]:
  """One frame: (rgb uint8 [H, W, 3], z-depth float32 [H, W]); see render_frames."""
  rgb, depth = render_frames(objects, np.asarray(camera_position, np.float64)[None], resolution, fov, **shading)
  return rgb[0], depth[0]
