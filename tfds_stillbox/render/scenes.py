"""Still-Box-like scenes: a random static world (sample_world) and its rendering (render_scene).

A scene is a static world (a randomly rotated box room, walls 8 to 150 m away, and 12 to 40 spheres, ellipsoids,
boxes, cylinders, cones and tori of random size, position, orientation and solid texture; one random directional
light plus ambient, Lambert) and a camera in pure translation at constant velocity: frame i is at
`i * time_step * speed`, and every scene moves the camera by exactly STEP = 0.1 m per frame (0.3 m over the
nominal frame shift of 3) in a direction uniform on the sphere, so that depth from two frames is metric, as in
Still Box. Apparent size is drawn independently of depth (see sample_world).

Depth is planar z-depth in metres: the distance along the optical axis, not the length of the ray (a
fronto-parallel wall at distance d reads d at every pixel). It is not clipped; over many scenes the median
pixel is ~18 m away, 1 % of pixels are nearer than 1 m and ~2 % beyond 100 m. Camera axes: x image-right,
y image-down, z forward; see raycast for the pinhole model.

Everything is a pure function of the seed: the same seed gives the same bytes.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from depthnet_jax.conventions import STEP
from tfds_stillbox.render import shapes, textures
from tfds_stillbox.render.raycast import SUPERSAMPLE, as_resolution, check_fov, render_frames

TIME_STEP = 0.1  # seconds per frame; |speed| = STEP / TIME_STEP = 1 m/s
CLEARANCE = 0.5  # no object surface nearer than this (metres) to any camera position of its scene
WALL_RANGE = (8.0, 150.0)  # each of the room's six walls is at a log-uniform distance in this range (metres)
NUM_OBJECTS = (12, 40)  # objects per scene, uniform in this range, inclusive
ANGULAR_RADIUS = (0.02, 0.3)  # radians, log-uniform: the apparent size, drawn independently of the depth
NEAREST_CENTER = 1.0  # metres: object centres are at a log-uniform z-depth from this to the wall behind them
KINDS = ('sphere', 'ellipsoid', 'box', 'cylinder', 'cone', 'torus')
_KIND_P = (0.15, 0.12, 0.25, 0.16, 0.16, 0.16)


@dataclasses.dataclass(frozen=True, eq=False)
class World:
  """A sampled scene before rendering.

  Attributes:
    objects: the shapes, the Room first.
    positions: [T, 3] camera position of each frame, `i * time_step * speed` (float64).
    speed: [3] float32 camera velocity, camera axes, m/s.
    time_step: seconds per frame.
    light: [3] unit vector towards the light (world = camera axes).
    ambient: share of the ambient term in the shading, in [0, 1].
  """
  objects: tuple
  positions: np.ndarray
  speed: np.ndarray
  time_step: float
  light: np.ndarray
  ambient: float


def seed_sequence(seed) -> np.random.SeedSequence:
  """An int or a tuple of non-negative ints (e.g. (dataset_seed, scene_index)) -> SeedSequence."""
  entropy = [s.item() if isinstance(s, np.generic) else s for s in np.atleast_1d(np.asarray(seed, dtype=object))]
  if not entropy or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in entropy):
    raise ValueError(f'seed={seed!r}: expected a non-negative integer or a tuple of them')
  return np.random.SeedSequence(entropy)


def _random_rotation(rng) -> np.ndarray:
  """Uniform on SO(3): a normalised Gaussian quaternion."""
  w, x, y, z = (q := rng.normal(size=4)) / np.linalg.norm(q)
  return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                   [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                   [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _segment_distance(point, a, b) -> float:
  ab = b - a
  s = np.clip(np.dot(point - a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0)
  return float(np.linalg.norm(point - (a + s * ab)))


def _sample_room(rng) -> shapes.Room:
  """A randomly rotated box around the origin, each wall at its own distance in WALL_RANGE."""
  rotation = _random_rotation(rng)
  near = np.array([textures.log_uniform(rng, *WALL_RANGE) for _ in range(3)])  # walls on the - side of each axis
  far = np.array([textures.log_uniform(rng, *WALL_RANGE) for _ in range(3)])  # and on the + side
  center_local = (far - near) / 2.0  # the origin sits at -center_local in the room's frame
  size = float(np.exp(np.mean(np.log(near + far))))
  return shapes.Room(half=tuple((near + far) / 2.0), center=rotation @ center_local, rotation=rotation,
                     material=textures.random_material(rng, size, room=True))


def _sample_shape(rng, kind: str, radius: float, center, rotation, material) -> shapes.Shape:
  """A shape of the given kind whose bounding sphere has the given radius."""
  common = dict(center=center, rotation=rotation, material=material)
  if kind == 'sphere':
    return shapes.Sphere(radius, **common)
  if kind == 'ellipsoid':
    return shapes.Ellipsoid(axes=(radius, radius * rng.uniform(0.3, 1.0), radius * rng.uniform(0.3, 1.0)), **common)
  if kind == 'box':
    half = rng.uniform(0.15, 1.0, 3)
    return shapes.Box(half=tuple(radius * half / np.linalg.norm(half)), **common)
  if kind in ('cylinder', 'cone'):
    phi = rng.uniform(0.25, 1.3)  # elongation: from a long rod to a flat disc
    r0 = radius * np.sin(phi)
    r1 = r0 if kind == 'cylinder' else r0 * rng.choice([0.0, rng.uniform(0.2, 0.8)])
    return shapes.Frustum(half_height=radius * np.cos(phi), radius0=r0, radius1=r1, **common)
  ratio = rng.uniform(0.15, 0.5)  # minor / major
  major = radius / (1.0 + ratio)
  return shapes.Torus(major=major, minor=ratio * major, **common)


def sample_world(seed, resolution, fov: float = 90.0, num_frames: int = 10) -> World:
  """The random scene of `seed`: camera path, room, objects, materials and light.

  The camera moves STEP = 0.1 m per frame in a direction uniform on the sphere (forward, backward, sideways
  alike). Objects are placed by direction (uniform in the image plane, a little beyond its edges, seen from the
  middle of the path), z-depth (log-uniform between NEAREST_CENTER and the wall behind) and apparent size
  (log-uniform ANGULAR_RADIUS, independent of the depth: near small and far big objects alike); a candidate
  nearer than CLEARANCE to the camera path is drawn again. The same seed and aspect ratio give the same scene at
  every resolution.
  """
  w, h = as_resolution(resolution)
  fov = check_fov(fov)  # before tan(fov / 2): 180 overflows the sampling of directions
  if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
    raise ValueError(f'num_frames={num_frames!r}: expected an integer >= 1')
  rng = np.random.default_rng(seed_sequence(seed))
  direction = rng.normal(size=3)
  speed = (direction / np.linalg.norm(direction) * (STEP / TIME_STEP)).astype(np.float32)
  positions = np.arange(num_frames)[:, None] * (TIME_STEP * speed.astype(np.float64))  # [T, 3]
  light = rng.normal(size=3) * 0.6 + np.array([0.0, -0.6, -0.8])
  ambient = rng.uniform(0.3, 0.55)
  room = _sample_room(rng)
  objects = [room]
  middle = positions[len(positions) // 2]
  half_x = np.tan(np.radians(fov) / 2.0) * 1.15
  half_y = half_x * h / w
  for _ in range(int(rng.integers(NUM_OBJECTS[0], NUM_OBJECTS[1] + 1))):
    for _ in range(20):  # rejection of candidates too near the path
      ray = np.array([rng.uniform(-half_x, half_x), rng.uniform(-half_y, half_y), 1.0])
      wall, _ = room.intersect(middle, ray[None])
      z = textures.log_uniform(rng, NEAREST_CENTER, max(0.9 * float(wall[0]), NEAREST_CENTER * 1.01))
      center = middle + z * ray
      radius = textures.log_uniform(rng, *ANGULAR_RADIUS) * z * float(np.linalg.norm(ray))
      if _segment_distance(center, positions[0], positions[-1]) - radius >= CLEARANCE:
        break
    else:
      continue
    kind = KINDS[rng.choice(len(KINDS), p=_KIND_P)]
    material = textures.random_material(rng, 2.0 * radius)
    objects.append(_sample_shape(rng, kind, radius, center, _random_rotation(rng), material))
  return World(objects=tuple(objects), positions=positions, speed=speed, time_step=TIME_STEP,
               light=light / np.linalg.norm(light), ambient=float(ambient))


class Scene(NamedTuple):
  """A rendered scene; frame i is seen from `i * time_step * speed`."""
  frames: np.ndarray  # uint8 [T, H, W, 3]
  depth: np.ndarray  # float32 [T, H, W], planar z-depth in metres
  speed: np.ndarray  # float32 [3], m/s in camera axes (x right, y down, z forward); |time_step * speed| = 0.1
  time_step: float  # seconds


def render_scene(seed, resolution, fov: float = 90.0, num_frames: int = 10, *,
                 supersample: int = SUPERSAMPLE) -> Scene:
  """Samples (sample_world) and renders the scene of `seed` (an int or a tuple of ints).

  Args:
    seed: int or tuple of non-negative ints, e.g. (dataset_seed, scene_index).
    resolution: int (square) or (width, height).
    fov: horizontal field of view, degrees.
    num_frames: frames in the scene.
    supersample: colour rays per pixel and axis (anti-aliased edges); depth is always the pixel-centre ray's.
  """
  world = sample_world(seed, resolution, fov, num_frames)
  frames, depth = render_frames(world.objects, world.positions, resolution, fov, light=world.light,
                                ambient=world.ambient, supersample=supersample)
  return Scene(frames=frames, depth=depth, speed=world.speed, time_step=world.time_step)
