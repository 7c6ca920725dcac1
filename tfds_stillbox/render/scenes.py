"""Still-Box-like scenes: a random static world (sample_world) and its rendering (render_scene).

A scene is a static world (a randomly rotated box room, walls 8 to 150 m away, and 12 to 40 spheres, ellipsoids,
boxes, cylinders, cones and tori of random size, position, orientation and solid texture; one random directional
light plus ambient, Lambert) and a camera in pure translation at constant velocity: frame i is at
`i * time_step * speed`, and every scene moves the camera by exactly STEP = 0.1 m per frame (0.3 m over the
nominal frame shift of 3) in a direction uniform on the sphere, so that depth from two frames is metric, as in
Still Box. Apparent size is drawn independently of depth (see sample_world).

Two keywords change this for scenes that are not Still Box's (flights at other speeds, nearer or farther rooms);
their defaults give Still Box's scenes, byte for byte:
  step: metres per frame (default STEP = 0.1); the time step stays TIME_STEP, so |speed| = step / TIME_STEP.
  depth_range: (near, far) metres (default WALL_RANGE = (8, 150)): the walls' distances. The rest of the room's
    contents scales with near: object centres from near / 8 (NEAREST_CENTER at the default), the clearance
    around the camera path CLEARANCE * near / 8.

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

from depthnet_jax.common.conventions import STEP
from tfds_stillbox.render import checks, shapes, textures
from tfds_stillbox.render.raycast import SUPERSAMPLE, as_resolution, check_fov, render_frames

TIME_STEP = 0.1  # seconds per frame; |speed| = step / TIME_STEP (STEP / TIME_STEP = 1 m/s by default)
CLEARANCE = 0.5  # no object surface nearer than this (metres) to any camera position of its scene
WALL_RANGE = (8.0, 150.0)  # each of the room's six walls is at a log-uniform distance in this range (metres)
NUM_OBJECTS = (12, 40)  # objects per scene, uniform in this range, inclusive
ANGULAR_RADIUS = (0.02, 0.3)  # radians, log-uniform: the apparent size, drawn independently of the depth
NEAREST_CENTER = 1.0  # metres: object centres are at a log-uniform z-depth from this to the wall behind them
# With another depth_range (near, far), NEAREST_CENTER and CLEARANCE are scaled by near / WALL_RANGE[0], and no wall
# is nearer than near / 8 to any camera position (see _sample_room): only a long path (steps x frames) moves one.
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


def camera_positions(num_frames: int, speed, time_step: float) -> np.ndarray:
  """[T, 3] float64 camera position of each frame, `i * time_step * speed` (the first at the origin)."""
  return np.arange(num_frames)[:, None] * (time_step * np.asarray(speed).astype(np.float64))


def _check_motion(step, depth_range) -> tuple[float, tuple[float, float]]:
  """step > 0 and 0 < near < far, finite (a ValueError naming the value otherwise); as floats."""
  return (checks.check_step('step', step, maximum=None),
          checks.check_depth_range('depth_range', depth_range, maximum=None))


def _sample_room(rng, depth_range=WALL_RANGE, positions=None) -> shapes.Room:
  """A randomly rotated box around the origin, each wall at its own distance in depth_range (log-uniform).

  A wall that would come nearer than depth_range[0] / 8 to one of the camera `positions` (a long path: frames x
  step beyond near - near / 8, more than 70 frames at Still Box's step and room) is moved back to that distance
  beyond the path; the camera never leaves the room.
  """
  rotation = _random_rotation(rng)
  near = np.array([textures.log_uniform(rng, *depth_range) for _ in range(3)])  # walls on the - side of each axis
  far = np.array([textures.log_uniform(rng, *depth_range) for _ in range(3)])  # and on the + side
  if positions is not None:
    local = positions @ rotation  # the path in the room's axes, from the origin
    margin = depth_range[0] / 8.0
    near = np.maximum(near, margin - local.min(axis=0))
    far = np.maximum(far, local.max(axis=0) + margin)
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


def sample_world(seed, resolution, fov: float = 90.0, num_frames: int = 10, *, step: float = STEP,
                 depth_range=WALL_RANGE) -> World:
  """The random scene of `seed`: camera path, room, objects, materials and light.

  The camera moves `step` metres per frame (default STEP = 0.1, as Still Box; the time step is TIME_STEP) in a
  direction uniform on the sphere (forward, backward, sideways alike). The room's walls are at log-uniform
  distances in `depth_range` (near, far) metres from the first camera position (default WALL_RANGE), at least
  near / 8 beyond every camera position. Objects are placed by direction (uniform in the image plane, a little
  beyond its edges, seen from the middle of the path), z-depth (log-uniform between near / 8, NEAREST_CENTER by
  default, and the wall behind) and apparent size (log-uniform ANGULAR_RADIUS, independent of the depth: near
  small and far big objects alike); a candidate nearer than CLEARANCE * near / 8 to the camera path is drawn
  again. The same seed and aspect ratio give the same scene at every resolution.
  """
  w, h = as_resolution(resolution)
  fov = check_fov(fov)  # before tan(fov / 2): 180 overflows the sampling of directions
  if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
    raise ValueError(f'num_frames={num_frames!r}: expected an integer >= 1')
  step, depth_range = _check_motion(step, depth_range)
  scale = depth_range[0] / WALL_RANGE[0]  # 1.0 exactly at the default: the arithmetic of Still Box's scenes
  nearest, clearance = NEAREST_CENTER * scale, CLEARANCE * scale
  rng = np.random.default_rng(seed_sequence(seed))
  direction = rng.normal(size=3)
  speed = (direction / np.linalg.norm(direction) * (step / TIME_STEP)).astype(np.float32)
  positions = camera_positions(num_frames, speed, TIME_STEP)  # [T, 3]
  light = rng.normal(size=3) * 0.6 + np.array([0.0, -0.6, -0.8])
  ambient = rng.uniform(0.3, 0.55)
  room = _sample_room(rng, depth_range, positions)
  objects = [room]
  middle = positions[len(positions) // 2]
  half_x = np.tan(np.radians(fov) / 2.0) * 1.15
  half_y = half_x * h / w
  for _ in range(int(rng.integers(NUM_OBJECTS[0], NUM_OBJECTS[1] + 1))):
    for _ in range(20):  # rejection of candidates too near the path
      ray = np.array([rng.uniform(-half_x, half_x), rng.uniform(-half_y, half_y), 1.0])
      wall, _ = room.intersect(middle, ray[None])
      z = textures.log_uniform(rng, nearest, max(0.9 * float(wall[0]), nearest * 1.01))
      center = middle + z * ray
      radius = textures.log_uniform(rng, *ANGULAR_RADIUS) * z * float(np.linalg.norm(ray))
      if _segment_distance(center, positions[0], positions[-1]) - radius >= clearance:
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
  speed: np.ndarray  # float32 [3], m/s in camera axes (x right, y down, z forward); |time_step * speed| = step
  time_step: float  # seconds


def render_scene(seed, resolution, fov: float = 90.0, num_frames: int = 10, *,
                 supersample: int = SUPERSAMPLE, step: float = STEP, depth_range=WALL_RANGE) -> Scene:
  """Samples (sample_world) and renders the scene of `seed` (an int or a tuple of ints).

  Args:
    seed: int or tuple of non-negative ints, e.g. (dataset_seed, scene_index).
    resolution: int (square) or (width, height).
    fov: horizontal field of view, degrees.
    num_frames: frames in the scene.
    supersample: colour rays per pixel and axis (anti-aliased edges); depth is always the pixel-centre ray's.
    step: metres the camera moves per frame (> 0; default STEP = 0.1, as Still Box).
    depth_range: (near, far) metres of the walls' distances (0 < near < far; default WALL_RANGE = (8, 150)).
  """
  world = sample_world(seed, resolution, fov, num_frames, step=step, depth_range=depth_range)
  frames, depth = render_frames(world.objects, world.positions, resolution, fov, light=world.light,
                                ambient=world.ambient, supersample=supersample)
  return Scene(frames=frames, depth=depth, speed=world.speed, time_step=world.time_step)
