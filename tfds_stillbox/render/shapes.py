"""Ray-primitive intersection for the Still Box renderer: numpy, vectorised over rays.

Each shape sits in its own frame: `p_world = center + rotation @ p_local` (the columns of `rotation` are the
local axes in world coordinates), so `p_local = (p_world - center) @ rotation`. A ray is `o + t * d` with any
direction `d`, unit or not, and `t` is in units of `d`: the renderer casts `d = (x, y, 1)` through each pixel,
which makes `t` the planar z-depth.

Shapes: `Ellipsoid` (and `Sphere`), `Box`, `Frustum` (capped cylinder, cone or truncated cone), `Torus`, and
`Room`, the inside of a box, whose walls face inwards. Inside the renderer rays are three component arrays
(structure of arrays) that broadcast against each other, e.g. origins `[T, 1, 1]` against directions
`[H, W]` for all frames of a scene at once; `Shape.intersect` is the plain `[N, 3]` interface.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfds_stillbox.render.textures import Material

EPS = 1e-5  # hits closer than this (in units of t) are ignored: a ray does not hit the surface it leaves
_TORUS_STEPS = 400  # a bound: with the minimum step a ray takes far fewer
_BISECTIONS = 24


def errstate():
  """NumPy's floating-point warnings off: inf and nan are the expected result of parallel rays and misses, which
  the ray casting filters (here and in raycast); they are not errors."""
  return np.errstate(divide='ignore', invalid='ignore', over='ignore')


def _nearest_root(a, b, c):
  """Smallest root > EPS of a t^2 + 2 b t + c = 0, else inf. Stable form, also for a == 0."""
  disc = b * b - a * c
  s = np.sqrt(np.maximum(disc, 0.0))
  q = -(b + np.copysign(s, b))
  t1, t2 = q / a, c / q
  lo, hi = np.fmin(t1, t2), np.fmax(t1, t2)
  t = np.where(lo > EPS, lo, np.where(hi > EPS, hi, np.inf))
  return np.where(disc >= 0.0, t, np.inf)


def _both_roots(a, b, c):
  """Both roots of a t^2 + 2 b t + c = 0 (nan where none; one inf when a == 0)."""
  disc = b * b - a * c
  s = np.where(disc >= 0.0, np.sqrt(np.maximum(disc, 0.0)), np.nan)
  q = -(b + np.copysign(s, b))
  return q / a, c / q


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Shape:
  """A solid in its local frame. Subclasses implement `local_hit` and `local_normal`.

  Attributes:
    center: world position of the local origin, [3].
    rotation: [3, 3] rotation whose columns are the local axes in world coordinates.
    material: how the surface looks (see textures.Material).
  """
  center: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3))
  rotation: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))
  material: Material = dataclasses.field(default_factory=Material)

  def __post_init__(self):
    object.__setattr__(self, 'center', np.asarray(self.center, np.float64).reshape(3))
    rotation = np.asarray(self.rotation, np.float64).reshape(3, 3)
    if not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-6):
      raise ValueError('rotation must be orthonormal')
    object.__setattr__(self, 'rotation', rotation)
    # Python floats, not numpy scalars: a numpy float64 scalar would promote the float32 ray arrays.
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if field.name not in ('center', 'rotation', 'material'):
        value = tuple(float(v) for v in value) if np.ndim(value) else float(value)
        object.__setattr__(self, field.name, value)

  @property
  def bound(self) -> float:
    """Radius of a sphere about `center` that encloses the shape (inf: the room)."""
    raise NotImplementedError

  def local_hit(self, o: tuple, d: tuple) -> np.ndarray:
    """t of the first hit with t > EPS (inf: none) of rays o + t d given in local (x, y, z) components."""
    raise NotImplementedError

  def local_normal(self, p: tuple) -> tuple:
    """Outward (Room: inward) normal, not necessarily unit, at local surface points p (x, y, z)."""
    raise NotImplementedError

  def intersect(self, origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First hits of world rays `origins + t * directions`.

    Args:
      origins: [3] (one origin for every ray) or [N, 3].
      directions: [N, 3], unit or not.

    Returns:
      (t [N], normal [N, 3]): t in units of the direction (inf where the ray misses), the unit world normal
      at the hit (zeros where it misses).
    """
    origins = np.asarray(origins, np.float64)
    directions = np.asarray(directions, np.float64)
    o_local = (origins - self.center) @ self.rotation  # [3] or [N, 3]
    d_local = directions @ self.rotation  # [N, 3]
    o = tuple(o_local[..., k] for k in range(3))
    d = tuple(d_local[..., k] for k in range(3))
    with errstate():
      t = self.local_hit(o, d)
      hit = np.isfinite(t)
      tt = np.where(hit, t, 0.0)
      n = np.stack(self.local_normal(tuple(o[k] + tt * d[k] for k in range(3))), -1) @ self.rotation.T
      n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    return t, np.where(hit[:, None], n, 0.0)


def _box_hit(half, o, d):
  """(near, far) ray parameters of the slabs |p_k| <= half_k; no hit where near > far."""
  near, far = -np.inf, np.inf
  for k in range(3):
    inv = 1.0 / d[k]
    t0, t1 = (-half[k] - o[k]) * inv, (half[k] - o[k]) * inv
    near = np.fmax(near, np.fmin(t0, t1))  # fmin/fmax skip the nan of 0 * inf
    far = np.fmin(far, np.fmax(t0, t1))
  return near, far


def _box_normal(half, p):
  ratio = [np.abs(p[k]) / half[k] for k in range(3)]
  x_max = (ratio[0] >= ratio[1]) & (ratio[0] >= ratio[2])
  y_max = ~x_max & (ratio[1] >= ratio[2])
  z_max = ~x_max & ~y_max
  return tuple(np.where(m, np.sign(p[k]), 0.0) for k, m in enumerate((x_max, y_max, z_max)))


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Ellipsoid(Shape):
  """Ellipsoid with semi-axes `axes` along the local x, y, z."""
  axes: tuple[float, float, float] = (1.0, 1.0, 1.0)

  @property
  def bound(self) -> float:
    return float(max(self.axes))

  def local_hit(self, o, d):
    # In coordinates scaled by 1/axes the ellipsoid is the unit sphere, and t is unchanged.
    o = [o[k] / self.axes[k] for k in range(3)]
    d = [d[k] / self.axes[k] for k in range(3)]
    a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    b = o[0] * d[0] + o[1] * d[1] + o[2] * d[2]
    c = o[0] * o[0] + o[1] * o[1] + o[2] * o[2] - 1.0
    return _nearest_root(a, b, c)

  def local_normal(self, p):
    return tuple(p[k] / self.axes[k] ** 2 for k in range(3))


def Sphere(radius: float, **kwargs) -> Ellipsoid:  # noqa: N802 - a constructor by name
  """A sphere: an Ellipsoid with equal axes (the rotation still turns its texture)."""
  return Ellipsoid(axes=(radius, radius, radius), **kwargs)


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Box(Shape):
  """Box |x| <= half[0], |y| <= half[1], |z| <= half[2] in local coordinates."""
  half: tuple[float, float, float] = (1.0, 1.0, 1.0)

  @property
  def bound(self) -> float:
    return float(np.linalg.norm(self.half))

  def local_hit(self, o, d):
    near, far = _box_hit(self.half, o, d)
    t = np.where(near > EPS, near, far)  # from inside, the exit
    return np.where((far >= near) & (t > EPS), t, np.inf)

  def local_normal(self, p):
    return _box_normal(self.half, p)


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Room(Box):
  """The inside of a box: the walls, floor and ceiling around the camera. Normals point inwards."""

  @property
  def bound(self) -> float:
    return np.inf

  def local_hit(self, o, d):
    _, far = _box_hit(self.half, o, d)
    return np.where(far > EPS, far, np.inf)

  def local_normal(self, p):
    return tuple(-n for n in _box_normal(self.half, p))


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Frustum(Shape):
  """Capped (truncated) cone along local z: radius `radius0` at z = -half_height, `radius1` at +half_height.

  radius0 == radius1 is a cylinder, radius1 == 0 a cone.
  """
  half_height: float = 1.0
  radius0: float = 1.0
  radius1: float = 1.0

  @property
  def bound(self) -> float:
    return float(np.hypot(self.half_height, max(self.radius0, self.radius1)))

  def _radius_line(self):
    # r(z) = alpha + beta z
    beta = (self.radius1 - self.radius0) / (2.0 * self.half_height)
    return 0.5 * (self.radius0 + self.radius1), beta

  def local_hit(self, o, d):
    h = self.half_height
    alpha, beta = self._radius_line()
    r_o = alpha + beta * o[2]
    # The side is the quadric x^2 + y^2 = r(z)^2, restricted to |z| <= h.
    a = d[0] * d[0] + d[1] * d[1] - (beta * d[2]) ** 2
    b = o[0] * d[0] + o[1] * d[1] - beta * d[2] * r_o
    c = o[0] * o[0] + o[1] * o[1] - r_o * r_o
    best = np.inf
    for t in _both_roots(a, b, c):
      z = o[2] + t * d[2]
      best = np.fmin(best, np.where((t > EPS) & (np.abs(z) <= h), t, np.inf))
    for z_cap, r_cap in ((-h, self.radius0), (h, self.radius1)):
      t = (z_cap - o[2]) / d[2]
      x, y = o[0] + t * d[0], o[1] + t * d[1]
      best = np.fmin(best, np.where((t > EPS) & (x * x + y * y <= r_cap * r_cap), t, np.inf))
    return best

  def local_normal(self, p):
    alpha, beta = self._radius_line()
    r_z = alpha + beta * p[2]
    rho = np.sqrt(p[0] * p[0] + p[1] * p[1])
    # A point is on a cap when it is nearer the cap plane than the side surface.
    cap = np.abs(np.abs(p[2]) - self.half_height) < np.abs(rho - r_z)
    return (np.where(cap, 0.0, p[0]), np.where(cap, 0.0, p[1]),
            np.where(cap, np.sign(p[2]), -beta * r_z))


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Torus(Shape):
  """Torus around the local z axis: tube of radius `minor` around a circle of radius `major`."""
  major: float = 1.0
  minor: float = 0.3

  @property
  def bound(self) -> float:
    return float(self.major + self.minor)

  def _sdf(self, x, y, z):
    return np.hypot(np.hypot(x, y) - self.major, z) - self.minor

  def local_hit(self, o, d):
    # Sphere tracing along unit directions (the quartic is ill-conditioned in float32): the signed distance of
    # a torus is exact, so a step of `dist` never crosses the surface. Steps of at least a minimum (a fraction
    # of the tube radius) bound the crawl of grazing rays; a step that lands inside brackets the surface,
    # which bisection then pins down.
    shape = np.broadcast_shapes(*(np.shape(v) for v in (*o, *d)))
    o = [np.broadcast_to(v, shape).ravel() for v in o]
    d = [np.broadcast_to(v, shape).ravel() for v in d]
    length = np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
    u = [v / length for v in d]
    b = o[0] * u[0] + o[1] * u[1] + o[2] * u[2]
    disc = b * b - (o[0] * o[0] + o[1] * o[1] + o[2] * o[2] - self.bound ** 2)
    root = np.sqrt(np.maximum(disc, 0.0))
    t_exit = -b + root
    active = np.flatnonzero((disc > 0.0) & (t_exit > EPS))
    t, t_exit = np.maximum(-b - root, 0.0)[active], t_exit[active]
    o_a, u_a = [v[active] for v in o], [v[active] for v in u]
    dist = self._sdf(*(o_a[k] + t * u_a[k] for k in range(3)))
    min_step = 0.05 * self.minor
    found, lo, hi = [active[:0]], [t[:0]], [t[:0]]
    for _ in range(_TORUS_STEPS):
      if not active.size:
        break
      t_next = t + np.maximum(dist, min_step)
      dist_next = self._sdf(*(o_a[k] + t_next * u_a[k] for k in range(3)))
      inside = dist_next <= 0.0
      found.append(active[inside])
      lo.append(t[inside])
      hi.append(t_next[inside])
      keep = ~inside & (t_next <= t_exit)
      active, t, t_exit, dist = active[keep], t_next[keep], t_exit[keep], dist_next[keep]
      o_a, u_a = [v[keep] for v in o_a], [v[keep] for v in u_a]
    found, lo, hi = np.concatenate(found), np.concatenate(lo), np.concatenate(hi)
    o_f, u_f = [v[found] for v in o], [v[found] for v in u]
    for _ in range(_BISECTIONS):  # the surface is between lo (outside) and hi (inside)
      mid = 0.5 * (lo + hi)
      outside = self._sdf(*(o_f[k] + mid * u_f[k] for k in range(3))) > 0.0
      lo, hi = np.where(outside, mid, lo), np.where(outside, hi, mid)
    result = np.full(length.shape, np.inf, length.dtype)
    result[found] = 0.5 * (lo + hi)
    result = np.where(result > EPS, result, np.inf) / length  # back to units of d
    return result.reshape(shape)

  def local_normal(self, p):
    rho = np.maximum(np.hypot(p[0], p[1]), 1e-12)
    k = 1.0 - self.major / rho
    return p[0] * k, p[1] * k, p[2]
