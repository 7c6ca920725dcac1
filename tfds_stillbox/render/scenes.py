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
Three more go beyond Still Box (sample_world, render_scene; their defaults change nothing either): `rotation`
(degrees per frame: the camera turns about a random axis of the scene), `trajectory` (poses.Trajectory: the camera
follows given poses) and, in render_scene, `distortion_model` (the frames as a lens sees them: distortion.py).

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

from depthnet_jax.common import rotations
from depthnet_jax.common.conventions import STEP
from tfds_stillbox.render import checks, distortion, poses, shapes, textures
from tfds_stillbox.render.raycast import SUPERSAMPLE, as_resolution, cast_depth, check_fov, render_frames

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
    orientations: None (the camera never turns: camera axes = world axes) or [T, 3, 3] camera-to-world rotation
      of each frame (depthnet_jax.common.rotations' convention).
  """
  objects: tuple
  positions: np.ndarray
  speed: np.ndarray
  time_step: float
  light: np.ndarray
  ambient: float
  orientations: np.ndarray | None = None


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


def _path_distance(point, path) -> float:
  """The distance from `point` to the polyline `path` [N >= 2, 3]."""
  return min(_segment_distance(point, path[i], path[i + 1]) for i in range(len(path) - 1))


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
                 depth_range=WALL_RANGE, rotation: float = 0.0, trajectory: poses.Trajectory | None = None) -> World:
  """The random scene of `seed`: camera path, room, objects, materials and light.

  The camera moves `step` metres per frame (default STEP = 0.1, as Still Box; the time step is TIME_STEP) in a
  direction uniform on the sphere (forward, backward, sideways alike). The room's walls are at log-uniform
  distances in `depth_range` (near, far) metres from the first camera position (default WALL_RANGE), at least
  near / 8 beyond every camera position. Objects are placed by direction (uniform in the image plane, a little
  beyond its edges, seen from the middle of the path), z-depth (log-uniform between near / 8, NEAREST_CENTER by
  default, and the wall behind) and apparent size (log-uniform ANGULAR_RADIUS, independent of the depth: near
  small and far big objects alike); a candidate nearer than CLEARANCE * near / 8 to the camera path is drawn
  again. The same seed and aspect ratio give the same scene at every resolution.

  Posed cameras (World.orientations; the defaults, rotation 0 and no trajectory, give the scenes above byte for
  byte): `rotation` degrees per frame turn the camera about a random axis (poses.rotation_path, its own random
  stream: the other draws stay), the world being frame 0's camera axes. A `trajectory` (poses.Trajectory,
  `num_frames` poses) replaces the straight path and `step`: the world is the trajectory's axes moved to its first
  position, the room drawn around that, and the scene's speed is its mean velocity. With poses, object k is
  placed as seen from the pose of frame (2k + 1) T / (2 n) (n objects) instead of the middle one, so that every
  part of a turning path sees some.
  """
  w, h = as_resolution(resolution)
  fov = check_fov(fov)  # before tan(fov / 2): 180 overflows the sampling of directions
  if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
    raise ValueError(f'num_frames={num_frames!r}: expected an integer >= 1')
  step, depth_range = _check_motion(step, depth_range)
  rotation = checks.check_rotation('rotation', rotation, maximum=None)
  if rotation and trajectory is not None:
    raise ValueError(f'rotation={rotation!r} with a trajectory: expected one of them (a trajectory has its poses)')
  if trajectory is not None and len(trajectory.times) != num_frames:
    raise ValueError(f'num_frames={num_frames!r}: the trajectory {trajectory.source} has {len(trajectory.times)}')
  scale = depth_range[0] / WALL_RANGE[0]  # 1.0 exactly at the default: the arithmetic of Still Box's scenes
  sequence = seed_sequence(seed)
  rng = np.random.default_rng(sequence)
  direction = rng.normal(size=3)
  speed = (direction / np.linalg.norm(direction) * (step / TIME_STEP)).astype(np.float32)
  positions, orientations, time_step = camera_positions(num_frames, speed, TIME_STEP), None, TIME_STEP  # [T, 3]
  if rotation:
    orientations = poses.rotation_path(sequence, num_frames, rotation)
  if trajectory is not None:
    positions = trajectory.positions - trajectory.positions[0]
    orientations = rotations.quaternion_to_matrix(trajectory.quaternions)
    duration = float(trajectory.times[-1] - trajectory.times[0])
    time_step = duration / (num_frames - 1)
    speed = (positions[-1] / duration).astype(np.float32)  # the mean velocity
  light = rng.normal(size=3) * 0.6 + np.array([0.0, -0.6, -0.8])
  ambient = rng.uniform(0.3, 0.55)
  room = _sample_room(rng, depth_range, positions)
  path = positions if trajectory is not None else positions[[0, -1]]  # the clearance is kept from this polyline
  objects = _sample_objects(rng, room, positions, orientations, path, (w, h), fov,
                            (NEAREST_CENTER * scale, CLEARANCE * scale))
  return World(objects=(room, *objects), positions=positions, speed=speed, time_step=time_step,
               light=light / np.linalg.norm(light), ambient=float(ambient), orientations=orientations)


def _sample_objects(rng, room, positions, orientations, path, resolution, fov, distances) -> list:
  """The objects of a world (see sample_world): each seen from the middle of the path (no `orientations`) or
  from the pose of its share of the frames; `distances` (nearest centre, clearance) in metres."""
  (w, h), (nearest, clearance) = resolution, distances
  middle = positions[len(positions) // 2]
  half_x = np.tan(np.radians(fov) / 2.0) * 1.15
  half_y = half_x * h / w
  objects = []
  count = int(rng.integers(NUM_OBJECTS[0], NUM_OBJECTS[1] + 1))
  for k in range(count):
    view = None if orientations is None else (2 * k + 1) * len(positions) // (2 * count)
    origin = middle if view is None else positions[view]
    for _ in range(20):  # rejection of candidates too near the path
      ray = np.array([rng.uniform(-half_x, half_x), rng.uniform(-half_y, half_y), 1.0])
      if view is not None:
        ray = orientations[view] @ ray  # z-depth along the camera's axis, as seen from its pose
      wall, _ = room.intersect(origin, ray[None])
      z = textures.log_uniform(rng, nearest, max(0.9 * float(wall[0]), nearest * 1.01))
      center = origin + z * ray
      radius = textures.log_uniform(rng, *ANGULAR_RADIUS) * z * float(np.linalg.norm(ray))
      if _path_distance(center, path) - radius >= clearance:
        break
    else:
      continue
    kind = KINDS[rng.choice(len(KINDS), p=_KIND_P)]
    material = textures.random_material(rng, 2.0 * radius)
    objects.append(_sample_shape(rng, kind, radius, center, _random_rotation(rng), material))
  return objects


class Scene(NamedTuple):
  """A rendered scene; frame i is seen from `i * time_step * speed` (or from `positions`, where given)."""
  frames: np.ndarray  # uint8 [T, H, W, 3]
  depth: np.ndarray  # float32 [T, H, W], planar z-depth in metres
  speed: np.ndarray  # float32 [3], m/s in camera axes (x right, y down, z forward; posed: the world's axes)
  time_step: float  # seconds
  times: np.ndarray | None = None  # [T] s of a trajectory's frames (None: i * time_step)
  positions: np.ndarray | None = None  # [T, 3] m of a trajectory's frames, its axes (None: i * time_step * speed)
  quaternions: np.ndarray | None = None  # [T, 4] camera-to-world [w, x, y, z] of a posed camera (None: unturned)


def render_scene(seed, resolution, fov: float = 90.0, num_frames: int = 10, *,
                 supersample: int = SUPERSAMPLE, step: float = STEP, depth_range=WALL_RANGE, rotation: float = 0.0,
                 trajectory: poses.Trajectory | None = None, distortion_model=None) -> Scene:
  """Samples (sample_world) and renders the scene of `seed` (an int or a tuple of ints).

  Args:
    seed: int or tuple of non-negative ints, e.g. (dataset_seed, scene_index).
    resolution: int (square) or (width, height).
    fov: horizontal field of view, degrees.
    num_frames: frames in the scene.
    supersample: colour rays per pixel and axis (anti-aliased edges); depth is always the pixel-centre ray's.
    step: metres the camera moves per frame (> 0; default STEP = 0.1, as Still Box).
    depth_range: (near, far) metres of the walls' distances (0 < near < far; default WALL_RANGE = (8, 150)).
    rotation: degrees the camera turns per frame about the scene's random axis (>= 0; default 0: never).
    trajectory: poses.Trajectory of num_frames poses the camera follows instead (default None).
    distortion_model: None (a pinhole) or (model, coefficients), depthnet_jax.common.lens.parse_distortion's: the
      frames as that lens sees them (distortion.lens_view; `supersample` is then its own), the depth maps the
      pinhole's.
  """
  world = sample_world(seed, resolution, fov, num_frames, step=step, depth_range=depth_range, rotation=rotation,
                       trajectory=trajectory)
  view = None if distortion_model is None else distortion.lens_view(*distortion_model, as_resolution(resolution),
                                                                    fov, flag='distortion_model')
  if world.orientations is None and view is None:
    frames, depth = render_frames(world.objects, world.positions, resolution, fov, light=world.light,
                                  ambient=world.ambient, supersample=supersample)
  else:
    frames, depth = _render_posed(world, resolution, fov, supersample, view)
  posed = dict(quaternions=None if world.orientations is None else _quaternions(world, trajectory))
  if trajectory is not None:
    posed.update(times=trajectory.times, positions=trajectory.positions)
  return Scene(frames=frames, depth=depth, speed=world.speed, time_step=world.time_step, **posed)


def _quaternions(world: World, trajectory) -> np.ndarray:
  """[T, 4] of the world's orientations: the trajectory's own (normalised), else of the matrices (w >= 0)."""
  return trajectory.quaternions if trajectory is not None else rotations.matrix_to_quaternion(world.orientations)


def _render_posed(world: World, resolution, fov: float, supersample: int, view) -> tuple[np.ndarray, np.ndarray]:
  """(frames, depth) of a world seen by a turned camera, or through a lens (a LensView), frame by frame: the world
  moved into each frame's camera axes (poses.in_camera), the depth that camera's z-depth."""
  frames, depths = [], []
  for i, position in enumerate(world.positions):
    if world.orientations is None:
      objects, light, origin = world.objects, world.light, position
    else:
      (objects, light), origin = poses.in_camera(world.objects, world.light, position, world.orientations[i]), 0.0
    origin = np.broadcast_to(np.asarray(origin, np.float64), 3)
    shading = dict(light=light, ambient=world.ambient)
    if view is None:
      rgb, depth = render_frames(objects, origin, resolution, fov, supersample=supersample, **shading)
    else:
      depth = cast_depth(objects, origin, resolution, fov)
      canvas, _ = render_frames(objects, origin, view.canvas_size, view.canvas_fov, supersample=1,
                                pixel=distortion.CANVAS_SCALE, **shading)
      rgb = view.distort(canvas[0])[None]
    frames.append(rgb)
    depths.append(depth)
  return np.concatenate(frames), np.concatenate(depths)
