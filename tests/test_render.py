"""The procedural Still Box renderer: geometry, determinism, scene statistics, the exported tree and the CLI."""

import csv
import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from depthnet_jax.common import colormaps, geometry
from tfds_stillbox import codec, tree
from tfds_stillbox.render import checks, export, raycast
from tfds_stillbox.render import scenes as render_scenes
from tfds_stillbox.render.shapes import Box, Ellipsoid, Frustum, Room, Sphere, Torus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rotation(rng):
  q, r = np.linalg.qr(rng.normal(size=(3, 3)))
  q = q * np.sign(np.diag(r))
  return q if np.linalg.det(q) > 0 else -q


def _analytic_sphere_depth(center, radius, origin, resolution, fov):
  """z-depth of the first hit of every pixel ray with a sphere, in float64 (nan where it misses)."""
  x, y, _ = raycast.pixel_slopes(resolution, fov)
  d = np.stack(np.broadcast_arrays(x[None, :].astype(np.float64), y[:, None].astype(np.float64), 1.0), -1)
  oc = np.asarray(origin, np.float64) - center
  a, b, c = np.sum(d * d, -1), np.sum(d * oc, -1), oc @ oc - radius ** 2
  disc = b * b - a * c
  with np.errstate(invalid='ignore'):
    return np.where(disc >= 0, (-b - np.sqrt(disc)) / a, np.nan)


# --- Geometry -------------------------------------------------------------------------------------------


@pytest.mark.parametrize('distance', [0.7, 3.0, 42.5])
@pytest.mark.parametrize('fov', [90.0, 60.0, 140.0])
def test_fronto_parallel_plane_reads_its_distance(distance, fov):
  wall = Box(center=(0.0, 0.0, distance + 5.0), half=(1e4, 1e4, 5.0))
  _, depth = raycast.render_frame([wall], (0.0, 0.0, 0.0), (40, 30), fov)
  np.testing.assert_allclose(depth, distance, rtol=1e-6)


def test_sphere_on_the_optical_axis():
  z, r = 7.0, 1.5
  # Odd size: the centre pixel's ray is the optical axis.
  _, depth = raycast.render_frame([Sphere(r, center=(0.0, 0.0, z))], (0.0, 0.0, 0.0), 33)
  assert depth[16, 16] == pytest.approx(z - r, rel=1e-6)
  # Even size: the four central pixels are half a pixel off the axis, a little farther than z - r.
  _, depth = raycast.render_frame([Sphere(r, center=(0.0, 0.0, z))], (0.0, 0.0, 0.0), 32)
  assert depth.min() == depth[15, 15] == depth[16, 16]
  assert z - r < depth.min() < z - r + 0.05
  # Every pixel, also off-centre and from a moved camera, against the analytic intersection.
  for resolution, fov, origin in ((32, 90.0, (0.0, 0.0, 0.0)), ((48, 30), 70.0, (0.4, -0.3, 1.0))):
    _, depth = raycast.render_frame([Sphere(r, center=(0.0, 0.0, z))], origin, resolution, fov)
    expected = _analytic_sphere_depth(np.array([0.0, 0.0, z]), r, origin, resolution, fov)
    np.testing.assert_array_equal(np.isfinite(depth), np.isfinite(expected))
    np.testing.assert_allclose(depth[np.isfinite(depth)], expected[np.isfinite(expected)], rtol=1e-5)


def _silhouette_centre(center, radius, f, w, h):
  """Image centre (pixels) of the ellipse a sphere projects to: the centre of its tangent cone's conic."""
  c = np.asarray(center, np.float64)
  conic = np.outer(c, c) - (c @ c - radius ** 2) * np.eye(3)  # x^T conic x = 0 on the cone, x = (sx, sy, 1)
  sx, sy = np.linalg.solve(conic[:2, :2], -conic[:2, 2])
  return f * sx + w / 2, f * sy + h / 2


def test_translation_moves_the_projection_as_a_pinhole():
  w, h, fov = 128, 96, 90.0
  f = geometry.focal_length(w, fov)
  assert f == pytest.approx(64.0)
  # Near the axis, where a sphere's outline is centred on the projection of its centre (0.03 px off here).
  point, radius = np.array([0.4, -0.3, 8.0]), 0.8
  positions = np.array([[0.0, 0.0, 0.0], [0.3, 0.2, -0.5], [-0.3, 0.1, 0.6]])
  rgb, depth = raycast.render_frames([Sphere(radius, center=point)], positions, (w, h), fov)
  centroids, projections = [], []
  for t, position in enumerate(positions):
    rows, cols = np.nonzero(np.isfinite(depth[t]))
    assert rows.size > 100 and np.all(rgb[t][~np.isfinite(depth[t])] == 0)
    # Pixel (u, v) is sampled at its centre (u + 0.5, v + 0.5).
    centroid = np.array([cols.mean() + 0.5, rows.mean() + 0.5])
    rel = point - position
    projection = np.array([f * rel[0] / rel[2] + w / 2, f * rel[1] / rel[2] + h / 2])
    # A half-pixel slip of the pixel-centre convention would be 0.5 off.
    np.testing.assert_allclose(centroid, _silhouette_centre(rel, radius, f, w, h), atol=0.15)
    np.testing.assert_allclose(centroid, projection, atol=0.15)
    centroids.append(centroid)
    projections.append(projection)
  # Between frames, the image moves as the pinhole model says.
  np.testing.assert_allclose(np.diff(centroids, axis=0), np.diff(projections, axis=0), atol=0.2)


def test_tilted_plane_depth_matches_the_ray_plane_intersection():
  rng = np.random.default_rng(0)
  rotation = _rotation(rng)
  normal = rotation[:, 2] * np.sign(rotation[2, 2])  # the plane's normal, facing away from the camera
  rotation[:, 2] = normal
  rotation[:, 0] *= np.linalg.det(rotation)  # keep it a rotation
  p0, half_z = np.array([0.3, -0.2, 8.0]), 2.0
  # The face at local z = -half_z is the plane through p0 with that normal.
  wall = Box(center=p0 + normal * half_z, rotation=rotation, half=(1e4, 1e4, half_z))
  origin = np.array([0.2, 0.1, -0.3])
  _, depth = raycast.render_frame([wall], origin, (36, 28), 80.0)
  x, y, _ = raycast.pixel_slopes((36, 28), 80.0)
  d = np.stack(np.broadcast_arrays(x[None, :].astype(np.float64), y[:, None].astype(np.float64), 1.0), -1)
  with np.errstate(divide='ignore'):
    expected = (normal @ (p0 - origin)) / (d @ normal)
  expected = np.where(expected > 0, expected, np.inf)  # rays that go away from the plane see nothing
  assert np.isfinite(expected).mean() > 0.5
  np.testing.assert_allclose(depth, expected, rtol=1e-5)


def _implicit(shape, p):
  """A function of local points that is < 0 inside the shape, > 0 outside and ~0 on its surface."""
  x, y, z = p[..., 0], p[..., 1], p[..., 2]
  if isinstance(shape, Ellipsoid):
    return np.linalg.norm(p / np.asarray(shape.axes), axis=-1) - 1.0
  if isinstance(shape, Box):
    return np.max(np.abs(p) / np.asarray(shape.half), axis=-1) - 1.0
  if isinstance(shape, Frustum):
    radius = shape.radius0 + (shape.radius1 - shape.radius0) * (z + shape.half_height) / (2 * shape.half_height)
    return np.maximum(np.hypot(x, y) - radius, np.abs(z) - shape.half_height)
  return np.hypot(np.hypot(x, y) - shape.major, z) - shape.minor  # torus


@pytest.mark.parametrize('shape', [
    Sphere(1.0), Ellipsoid(axes=(1.2, 0.4, 0.7)), Box(half=(1.0, 0.3, 0.6)),
    Frustum(half_height=0.8, radius0=0.6, radius1=0.6), Frustum(half_height=0.5, radius0=0.9, radius1=0.0),
    Frustum(half_height=1.0, radius0=0.3, radius1=0.7), Torus(major=0.9, minor=0.25)],
    ids=['sphere', 'ellipsoid', 'box', 'cylinder', 'cone', 'truncated_cone', 'torus'])
def test_primitives_find_the_first_surface_point(shape):
  rng = np.random.default_rng(1)
  rotation, center = _rotation(rng), rng.normal(size=3)
  shape = dataclasses.replace(shape, rotation=rotation, center=center)
  origin = center + 4.0 * rng.normal(size=3)
  targets = center + rng.uniform(-1.0, 1.0, (300, 3)) * shape.bound
  directions = (targets - origin) * rng.uniform(0.2, 3.0, (300, 1))  # not unit: t is in their units
  t, normal = shape.intersect(origin, directions)
  hit = np.isfinite(t)
  assert 0.2 < hit.mean() < 1.0
  # Brute force: the first of many samples along each ray that is inside the shape.
  unit = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
  distances = np.linspace(0.0, 16.0, 6001)
  inside = _implicit(shape, (origin + distances[:, None, None] * unit - center) @ rotation) < 0  # [S, N]
  first = np.where(inside.any(0), np.argmax(inside, 0), -1)
  np.testing.assert_array_equal(first >= 0, hit)
  length = np.linalg.norm(directions[hit], axis=-1)
  np.testing.assert_allclose(t[hit] * length, distances[first[hit]], atol=distances[1] + 1e-6)
  # The hit is on the surface, the normal is unit and faces the ray.
  p = (origin + t[hit, None] * directions[hit] - center) @ rotation
  assert np.abs(_implicit(shape, p)).max() < 1e-4
  np.testing.assert_allclose(np.linalg.norm(normal[hit], axis=-1), 1.0, atol=1e-6)
  assert np.all(np.sum(normal[hit] * directions[hit], -1) < 0)
  assert np.all(normal[~hit] == 0)


@pytest.mark.parametrize('fov', [90.0, 150.0])
def test_screen_space_culling_drops_no_hit(monkeypatch, fov):
  worlds = [render_scenes.sample_world((21, s), (40, 24), fov, 3) for s in range(6)]
  culled = [raycast.render_frames(w.objects, w.positions, (40, 24), fov) for w in worlds]
  monkeypatch.setattr(raycast, '_screen_window', lambda shape, positions, f, w, h: (0, h, 0, w))
  for world, (rgb, depth) in zip(worlds, culled):
    full_rgb, full_depth = raycast.render_frames(world.objects, world.positions, (40, 24), fov)
    np.testing.assert_array_equal(depth, full_depth)
    np.testing.assert_array_equal(rgb, full_rgb)


def test_room_is_seen_from_inside():
  room = Room(half=(10.0, 20.0, 30.0), center=(0.0, 0.0, 5.0))
  _, depth = raycast.render_frame([room], (0.0, 0.0, 0.0), 9)
  assert depth[4, 4] == pytest.approx(35.0)
  t, normal = room.intersect(np.zeros(3), np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
  np.testing.assert_allclose(t, [35.0, 10.0])
  np.testing.assert_allclose(normal, [[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])  # walls face inwards


# --- Determinism and statistics -------------------------------------------------------------------------


def test_same_seed_same_bytes_and_different_seeds_differ():
  a = render_scenes.render_scene((3, 1), (40, 24), num_frames=3)
  b = render_scenes.render_scene((3, 1), (40, 24), num_frames=3)
  assert a.frames.dtype == np.uint8 and a.frames.shape == (3, 24, 40, 3)
  assert a.depth.dtype == np.float32 and a.depth.shape == (3, 24, 40)
  assert a.speed.dtype == np.float32 and a.speed.shape == (3,)
  assert a.frames.tobytes() == b.frames.tobytes() and a.depth.tobytes() == b.depth.tobytes()
  assert a.speed.tobytes() == b.speed.tobytes() and a.time_step == b.time_step
  c = render_scenes.render_scene((3, 2), (40, 24), num_frames=3)
  assert a.frames.tobytes() != c.frames.tobytes() and a.depth.tobytes() != c.depth.tobytes()
  assert render_scenes.render_scene(5, 16, num_frames=2).frames.tobytes() != \
      render_scenes.render_scene(6, 16, num_frames=2).frames.tobytes()


def test_supersampling_smooths_colour_and_keeps_the_pixel_centre_depth():
  plain = render_scenes.render_scene((3, 4), (40, 24), num_frames=2)
  smooth = render_scenes.render_scene((3, 4), (40, 24), num_frames=2, supersample=2)
  np.testing.assert_array_equal(plain.depth, smooth.depth)
  assert 0 < np.abs(plain.frames.astype(int) - smooth.frames).mean() < 20


def test_scene_statistics():
  inside, directions = [], []
  for s in range(24):
    scene = render_scenes.render_scene((11, s), 32, num_frames=3)
    step = np.float64(scene.time_step) * scene.speed.astype(np.float64)
    assert np.linalg.norm(step) == pytest.approx(0.1, abs=1e-7)
    directions.append(step / 0.1)
    assert np.all(np.isfinite(scene.depth)) and np.all(scene.depth > 0)
    inside.append(np.mean((scene.depth > 0.5) & (scene.depth <= 100.0)))
    assert np.all(scene.frames.reshape(3, -1).std(axis=1) > 10)  # textured, not flat
    assert len(np.unique(scene.depth[0])) > 100  # many surfaces and slants, not a few planes
  assert np.mean(inside) > 0.95 and np.min(inside) > 0.7
  # The direction is uniform on the sphere: forward, backward and sideways all occur.
  directions = np.array(directions)
  assert directions[:, 2].min() < -0.3 and directions[:, 2].max() > 0.3
  assert np.linalg.norm(directions.mean(axis=0)) < 0.5


def test_depth_spreads_over_the_range():
  depth = np.concatenate([render_scenes.render_scene((12, s), 24, num_frames=1).depth.ravel()
                          for s in range(30)])
  assert np.mean(depth < 3.0) > 0.03 and np.mean(depth > 30.0) > 0.1
  assert 8.0 < np.median(depth) < 40.0
  assert np.mean(depth > 100.0) < 0.05


def test_objects_keep_clear_of_the_camera_path():
  for s in range(40):
    world = render_scenes.sample_world((13, s), (32, 24), 90.0, 10)
    room, objects = world.objects[0], world.objects[1:]
    assert isinstance(room, Room) and len(objects) >= 10
    for shape in objects:
      clearance = np.linalg.norm(world.positions - shape.center, axis=-1) - shape.bound
      assert clearance.min() >= render_scenes.CLEARANCE
    local = (world.positions - room.center) @ room.rotation
    assert np.all(np.abs(local) < np.asarray(room.half) - 1.0)  # the path is well inside the room


# --- Export ---------------------------------------------------------------------------------------------


def _read_tree(root):
  """An independent Still Box reader: numbered sub-folders, metadata.json lists, PIL and np.load only."""
  scenes = []
  folders = sorted((n for n in os.listdir(root) if n.isdigit()), key=int)
  for name in folders:
    folder = os.path.join(root, name)
    with open(os.path.join(folder, 'metadata.json')) as f:
      metadata = json.load(f)
    for entry in metadata['scenes']:
      frames = np.stack([np.asarray(Image.open(os.path.join(folder, i)).convert('RGB')) for i in entry['imgs']])
      depth = np.stack([np.load(os.path.join(folder, d), allow_pickle=False) for d in entry['depth']])
      scenes.append(dict(entry, frames=frames, depth_maps=depth, args=metadata['args'], folder=name))
  return folders, scenes


def _tree_bytes(root):
  out = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, root)] = f.read()
  return out


def test_export_reads_back_as_render_scene(tmp_path):
  path = export.export(str(tmp_path), (24, 16), num_scenes=5, seed=9, num_frames=3, scenes_per_folder=2)
  assert path == str(tmp_path / '24x16') and sorted(os.listdir(tmp_path)) == ['24x16']
  folders, scenes = _read_tree(path)
  assert folders == ['0', '1', '2'] and len(scenes) == 5
  assert [s['folder'] for s in scenes] == ['0', '0', '1', '1', '2']
  for s, entry in enumerate(scenes):
    assert entry['args'] == {'fov': 90.0, 'resolution': [24, 16], 'seed': 9, 'num_frames': 3, 'step': 0.1,
                             'time_step': 0.1, 'depth_range': [8.0, 150.0],
                             'generator': 'depthnet-jax tfds_stillbox.render'}
    expected = render_scenes.render_scene((9, s), (24, 16), num_frames=3)
    assert entry['length'] == 3 and entry['orientation'] == []
    assert entry['frames'].shape == (3, 16, 24, 3) and entry['frames'].dtype == np.uint8
    # JPEG loss only: the files are the frames' JPEG encoding (deterministic), so they decode alike.
    jpegs = np.stack([np.asarray(Image.open(io.BytesIO(codec.encode_jpeg(f))).convert('RGB'))
                      for f in expected.frames])
    np.testing.assert_array_equal(entry['frames'], jpegs)
    assert np.abs(entry['frames'].astype(int) - expected.frames).mean() < 20
    assert entry['depth_maps'].dtype == np.float32 and entry['depth_maps'].shape == (3, 16, 24)
    np.testing.assert_array_equal(entry['depth_maps'], expected.depth)
    assert entry['speed'] == [float(v) for v in expected.speed] and entry['time_step'] == expected.time_step
  # Square resolutions are named by one number.
  assert export.export(str(tmp_path), 16, num_scenes=1, seed=9, num_frames=2) == str(tmp_path / '16')


def test_export_is_byte_identical_across_runs_and_processes(tmp_path):
  kwargs = dict(resolution=(20, 12), num_scenes=5, seed=4, num_frames=2, scenes_per_folder=3)
  one = _tree_bytes(export.export(str(tmp_path / 'a'), jobs=1, **kwargs))
  assert len(one) == 2 + 5 * (2 * 2 + 1) and 'metadata.json' in {os.path.basename(k) for k in one}  # + motion logs
  assert one == _tree_bytes(export.export(str(tmp_path / 'b'), jobs=1, **kwargs))
  assert one == _tree_bytes(export.export(str(tmp_path / 'c'), jobs=2, **kwargs))


def test_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
  real = render_scenes.render_scene

  def failing(seed, *args, **kwargs):
    if seed[1] == 3:
      raise RuntimeError('scene 3 failed')
    return real(seed, *args, **kwargs)

  monkeypatch.setattr(render_scenes, 'render_scene', failing)
  with pytest.raises(RuntimeError, match='scene 3 failed'):
    export.export(str(tmp_path), 16, num_scenes=5, seed=1, num_frames=2, scenes_per_folder=2)
  assert os.listdir(tmp_path) == []


def test_existing_target_is_refused(tmp_path):
  os.makedirs(tmp_path / '16')
  (tmp_path / '16' / 'keep.txt').write_text('mine')
  with pytest.raises(FileExistsError, match='exists'):
    export.export(str(tmp_path), 16, num_scenes=2, seed=1, num_frames=2)
  assert sorted(os.listdir(tmp_path)) == ['16'] and os.listdir(tmp_path / '16') == ['keep.txt']


def test_command_line(tmp_path):
  sheet = tmp_path / 'sheet.png'
  result = subprocess.run(
      [sys.executable, '-m', 'tfds_stillbox.render', '--out', str(tmp_path / 'tree'), '--resolution', '24x16',
       '--scenes', '3', '--seed', '4', '--frames', '4', '--scenes_per_folder', '2', '--contact_sheet', str(sheet)],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  root = tmp_path / 'tree' / '24x16'
  assert str(root) in result.stdout and str(sheet) in result.stdout
  assert '3/3 scenes' in result.stderr and '\r' not in result.stderr  # a pipe gets plain lines, not a redrawn bar
  folders, scenes = _read_tree(root)
  assert folders == ['0', '1'] and len(scenes) == 3 and scenes[0]['frames'].shape == (4, 16, 24, 3)
  image = np.asarray(Image.open(sheet))
  assert image.ndim == 3 and image.shape[0] > 3 * 16 and image.shape[1] > 8 * 24  # 3 rows, frames + depths
  # An existing tree is refused with a message, not a traceback.
  again = subprocess.run(
      [sys.executable, '-m', 'tfds_stillbox.render', '--out', str(tmp_path / 'tree'), '--resolution', '24x16',
       '--scenes', '1', '--seed', '4'], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert again.returncode != 0 and 'exists' in again.stderr and 'Traceback' not in again.stderr


def test_depth_colormap():
  rgb = colormaps.depth_to_rgb(np.array([[0.0, 50.0, 100.0, 250.0, np.inf]], np.float32))
  assert rgb.shape == (1, 5, 3) and rgb.dtype == np.uint8
  assert len({tuple(c) for c in rgb[0, :3]}) == 3 and np.all(rgb[0, 2] == rgb[0, 3]) and np.all(rgb[0, 3] == rgb[0, 4])


# --- Motion: step, depth_range and the motion log -------------------------------------------------------


def _sha(*parts):
  h = hashlib.sha256()
  for part in parts:
    h.update(part if isinstance(part, bytes) else np.ascontiguousarray(part).tobytes()
             if isinstance(part, np.ndarray) else repr(part).encode())
  return h.hexdigest()


def _scene_digest(scene):
  return _sha(scene.frames, scene.depth, scene.speed, float(scene.time_step))


def _world_digest(world):
  """A world's geometry to 10 decimals: NumPy's SIMD sin/cos (AVX-512 or AVX2, chosen by the CPU) differ in the
  last bit, which a digest of the exact floats would see (the rendered frames, quantised, do not)."""
  def rounded(x):
    return np.round(np.asarray(x, np.float64), 10)
  parts = [rounded(world.positions), rounded(world.speed), rounded(world.light), rounded(world.ambient),
           rounded(world.time_step)]
  for shape in world.objects:
    parts += [type(shape).__name__, rounded(shape.center), rounded(shape.rotation), rounded(shape.bound)]
  return _sha(*parts)


def _tree_digest(root):
  """A tree as the renderer wrote it before step, depth_range and the motion logs: every file but the motion
  logs, each metadata.json re-dumped (indent 1, as written) without the keys they added to it."""
  parts = []
  for folder, _, names in sorted(os.walk(root)):
    for name in sorted(names):
      if name.startswith('motion_'):
        continue
      with open(os.path.join(folder, name), 'rb') as f:
        data = f.read()
      if name == 'metadata.json':
        metadata = json.loads(data)
        for key in ('step', 'time_step', 'depth_range'):
          metadata['args'].pop(key, None)
        for entry in metadata['scenes']:
          entry.pop('motion', None)
        data = json.dumps(metadata, indent=1).encode()
      parts += [os.path.relpath(os.path.join(folder, name), root), data]
  return _sha(*parts)


# Digests of the renderer's output at commit 480c459, before `step` and `depth_range` existed (the helpers above
# run on that code; its metadata.json files re-dump to their own bytes). NumPy 2.4.6 in this project's venv on
# x86-64 (the worlds: computed with that commit's code on an AMD EPYC without AVX-512, and the same there with
# today's code, bit for bit); another NumPy could round a transcendental function differently.
BEFORE_STEP = {
    'scenes': ['afdfe7799f8a39dd5b7f09754d5008dba3c3b6757bb6c18fd2d5b539dbbb0299',
               '20507716d0e0b95f4b4a9e798cb81232cd3d128b681a971f0c221ee809bd069a',
               '0658d4e5efce4ea02ecbd55230f6541ddf4ce42611f31098e38f573bcc3ff93d',
               'fb0ed5dd8ede221b1a78282bffbfcfab944930a447c1316e838e3273cd37ef2b'],
    'worlds': ['413a501d614307a659ee54a5d91755c772fb90ffb49b54dae16acb2328bfbe0f',
               'a9079709f2130155451a59af1224dbbfa26ff0f1fe287f003bfc48b874c68163',
               'b761a6c8f7e0deec0344eca9978aeb39558e8763e2e36bd55126a603668c6971',
               '65d97434c21fc83b402a46e5e6b1e9b52e033ae5ed36972b0bc9210d1bd4c5ba'],
    'tree': 'b0a4b1b296cec41fea99f756aa0dbe6e49e7ea04f4081bbd111ad4b3279acead',
    'sheet': '8f3457919b188d447137776f901ab32dd9f61d46fe24009da9d651fa34f809f7',
}


def _default_renders(tmp_path, **motion):
  """(scene digests, world digests, tree digest, sheet digest, tree bytes) of small renders, `motion` the
  step / depth_range keywords (none: the defaults)."""
  rendered = [render_scenes.render_scene((7, s), (24, 16), num_frames=4, **motion) for s in range(3)]
  rendered.append(render_scenes.render_scene((3, 0), 16, fov=60.0, num_frames=3, **motion))
  worlds = [render_scenes.sample_world((13, s), (32, 24), 90.0, 10, **motion) for s in range(4)]
  out = tmp_path / ('explicit' if motion else 'default')
  root = export.export(str(out), (20, 12), num_scenes=3, seed=4, num_frames=3, scenes_per_folder=2, **motion)
  sheet = export.contact_sheet(str(out / 'sheet.png'), 16, 2, 1, 90.0, 3, shown=(0, 1, 2), **motion)
  return ([_scene_digest(s) for s in rendered], [_world_digest(w) for w in worlds], _tree_digest(root),
          _sha(sheet), _tree_bytes(root))


def test_defaults_render_the_same_bytes_as_before_step_and_depth_range(tmp_path):
  default = _default_renders(tmp_path)
  assert default[:4] == (BEFORE_STEP['scenes'], BEFORE_STEP['worlds'], BEFORE_STEP['tree'], BEFORE_STEP['sheet'])
  # The defaults spelled out (ints too) are the defaults, metadata included.
  assert _default_renders(tmp_path, step=0.1, depth_range=(8, 150)) == default


def _wall_distances(room):
  """The six walls' distances from the origin (the first camera position), along the room's axes."""
  local_center = room.rotation.T @ np.asarray(room.center)
  return np.concatenate([np.asarray(room.half) - local_center, np.asarray(room.half) + local_center])


def test_step_sets_the_distance_per_frame():
  directions = []
  for step in (0.02, 0.1, 0.7, 4.0):
    world = render_scenes.sample_world((17, 1), (24, 16), 90.0, 12, step=step)
    assert world.time_step == render_scenes.TIME_STEP == 0.1 and world.speed.dtype == np.float32
    per_frame = world.time_step * world.speed.astype(np.float64)
    np.testing.assert_array_equal(world.positions, np.arange(12)[:, None] * per_frame)
    np.testing.assert_array_equal(world.positions, render_scenes.camera_positions(12, world.speed, 0.1))
    assert np.linalg.norm(per_frame) == pytest.approx(step, rel=1e-6)
    np.testing.assert_allclose(np.linalg.norm(np.diff(world.positions, axis=0), axis=-1), step, rtol=1e-6)
    directions.append(per_frame / step)
  # Only the length changes: the direction is the same draw.
  np.testing.assert_allclose(directions, [directions[0]] * 4, atol=1e-6)
  scene = render_scenes.render_scene((17, 1), 16, num_frames=3, step=0.7)
  assert np.linalg.norm(scene.time_step * scene.speed.astype(np.float64)) == pytest.approx(0.7, rel=1e-6)
  assert np.all(np.isfinite(scene.depth)) and np.all(scene.depth > 0)


@pytest.mark.parametrize('step, depth_range', [(2.0, (2.0, 20.0)), (4.0, (8.0, 150.0)), (0.1, (40.0, 400.0))])
def test_long_and_scaled_paths_keep_clear_of_walls_and_objects(step, depth_range):
  """A path longer than the room allows pushes walls back (never nearer than near / 8 to the camera); objects keep
  CLEARANCE * near / 8 from the path."""
  near = depth_range[0]
  for s in range(6):
    world = render_scenes.sample_world((29, s), (24, 16), 90.0, 30, step=step, depth_range=depth_range)
    room, objects = world.objects[0], world.objects[1:]
    assert len(objects) >= 8
    local = (world.positions - room.center) @ room.rotation
    assert np.min(np.asarray(room.half) - np.abs(local)) >= near / 8 - 1e-9  # inside, with the margin
    assert np.all(_wall_distances(room) >= near - 1e-9)
    for shape in objects:
      clearance = np.linalg.norm(world.positions - shape.center, axis=-1) - shape.bound
      assert clearance.min() >= render_scenes.CLEARANCE * near / 8 - 1e-9


def test_depth_range_sets_the_walls_and_scales_the_scene():
  for s in range(6):  # a short path: every wall where it was drawn, in [near, far]
    world = render_scenes.sample_world((19, s), 16, 90.0, 3, depth_range=(2, 20))
    distances = _wall_distances(world.objects[0])
    assert np.all((distances >= 2 - 1e-9) & (distances <= 20 + 1e-9))
    middle = world.positions[1]  # objects are placed as seen from the middle of the path
    assert all((shape.center - middle)[2] >= 2 / 8 - 1e-9 for shape in world.objects[1:])  # z-depth >= near / 8
  # The same draws: a range and a step k times larger are the same scene, k times larger.
  for s in range(2):
    small = render_scenes.render_scene((5, s), 24, num_frames=3, depth_range=(2, 20), step=0.05)
    large = render_scenes.render_scene((5, s), 24, num_frames=3, depth_range=(20, 200), step=0.5)
    np.testing.assert_allclose(large.depth, 10 * small.depth, rtol=1e-4)
  # Near rooms read near, far rooms far, Still Box's in between.
  depths = {r: np.concatenate([render_scenes.render_scene((23, s), 16, num_frames=3, depth_range=r).depth.ravel()
                               for s in range(6)]) for r in ((2, 20), (8, 150), (40, 400))}
  near, default, far = (np.median(depths[r]) for r in ((2, 20), (8, 150), (40, 400)))
  assert near < 10 < default < 40 < far and far > 10 * near
  assert depths[(2, 20)].max() < 20 * np.sqrt(3) + 1  # no farther than a corner of the room
  assert np.mean(depths[(40, 400)] > 20) > 0.8


def _read_motion(path):
  with open(path, newline='') as f:
    text = f.read()
  rows = list(csv.DictReader(io.StringIO(text)))
  return text, rows


def test_export_writes_motion_logs_and_records_the_motion(tmp_path):
  root = export.export(str(tmp_path), (20, 12), num_scenes=3, seed=6, num_frames=5, scenes_per_folder=2,
                       step=0.25, depth_range=(3, 30))
  folders, scenes = _read_tree(root)
  assert folders == ['0', '1'] and len(scenes) == 3
  positions = {'0': 0, '1': 0}
  for s, entry in enumerate(scenes):
    position = positions[entry['folder']]
    positions[entry['folder']] += 1
    assert entry['args'] == {'fov': 90.0, 'resolution': [20, 12], 'seed': 6, 'num_frames': 5, 'step': 0.25,
                             'time_step': 0.1, 'depth_range': [3.0, 30.0],
                             'generator': 'depthnet-jax tfds_stillbox.render'}
    assert entry['motion'] == f'motion_{position:04d}.csv'
    assert entry['imgs'][0] == f'RGB_{position:04d}_00.jpg' and entry['time_step'] == 0.1
    text, rows = _read_motion(os.path.join(root, entry['folder'], entry['motion']))
    lines = text.split('\n')
    assert lines[0] == 'frame,time,x,y,z' and lines[1] == '0,0.0,0.0,0.0,0.0' and lines[-1] == ''
    assert len(rows) == len(entry['imgs']) == 5 and text.count('\n') == 6 and '\r' not in text
    speed = np.asarray(entry['speed'], np.float64)
    for i, row in enumerate(rows):
      assert row['frame'] == str(i) and float(row['time']) == i * 0.1
      xyz = np.array([float(row[c]) for c in 'xyz'])
      np.testing.assert_array_equal(xyz, i * (entry['time_step'] * speed))  # i * time_step * speed, exactly
      assert all(repr(float(row[c])) == row[c] for c in ('time', 'x', 'y', 'z'))  # repr: every digit
    np.testing.assert_allclose(np.linalg.norm(np.diff([[float(r[c]) for c in 'xyz'] for r in rows], axis=0),
                                              axis=-1), 0.25, rtol=1e-6)
    # ... the positions the frames were rendered from, with the depth of that scene.
    world = render_scenes.sample_world((6, s), (20, 12), 90.0, 5, step=0.25, depth_range=(3, 30))
    np.testing.assert_array_equal([[float(r[c]) for c in 'xyz'] for r in rows], world.positions)
    expected = render_scenes.render_scene((6, s), (20, 12), num_frames=5, step=0.25, depth_range=(3, 30))
    np.testing.assert_array_equal(entry['depth_maps'], expected.depth)
    assert entry['speed'] == [float(v) for v in expected.speed]
  assert sorted(os.listdir(os.path.join(root, '1'))) == sorted(
      ['metadata.json', 'motion_0000.csv'] + [f'{k}_0000_{t:02d}.{e}' for k, e in (('RGB', 'jpg'), ('D', 'npy'))
                                              for t in range(5)])
  # The tree reader (and so `tfds build --config 64 --manual_dir`) takes the tree, extra keys and files ignored.
  refs = tree.list_scenes(root)
  assert [r.id for r in refs] == ['0/0', '0/1', '1/0'] and refs[0].resolution == (20, 12)
  for ref, entry in zip(refs, scenes):
    example = tree.load_scene(ref, (12, 20))
    assert len(example['frames']) == len(example['depth']) == 5
    np.testing.assert_array_equal(example['speed'], np.asarray(entry['speed'], np.float32))
    assert example['time_step'] == np.float32(0.1)
    np.testing.assert_array_equal(codec.decode_depth(example['depth'][4]), entry['depth_maps'][4])


def test_a_flight_is_one_scene_of_many_frames(tmp_path, capsys):
  from tfds_stillbox.render import cli as render_cli
  assert checks.check_frames('--frames', 60, (64, 64)) == 60  # a minute-long flight at 1 frame/s fits
  code = render_cli.main(['--out', str(tmp_path), '--resolution', '16', '--scenes', '1', '--frames', '40',
                          '--step', '0.2'])
  out, _ = capsys.readouterr()
  assert code == 0 and out == f'wrote 1 scenes to {tmp_path / "16"}\n'
  folder = tmp_path / '16' / '0'
  assert sorted(os.listdir(folder)) == sorted(['metadata.json', 'motion_0000.csv'] +
                                              [f'RGB_0000_{t:02d}.jpg' for t in range(40)] +
                                              [f'D_0000_{t:02d}.npy' for t in range(40)])
  metadata = json.loads((folder / 'metadata.json').read_text())
  assert metadata['args']['step'] == 0.2 and metadata['args']['depth_range'] == [8.0, 150.0]
  (entry,) = metadata['scenes']
  _, rows = _read_motion(folder / entry['motion'])
  assert [int(r['frame']) for r in rows] == list(range(40)) and float(rows[-1]['time']) == pytest.approx(3.9)
  assert np.linalg.norm([float(rows[39][c]) for c in 'xyz']) == pytest.approx(39 * 0.2, rel=1e-6)
