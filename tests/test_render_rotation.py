"""The renderer's camera beyond Still Box's: --rotation (a turning camera), --trajectory (given poses) and
--distortion (a lens), and the default tree, byte for byte as before them. Tiny renders (16 to 48 pixels, 2 or 3
frames): the whole file runs in seconds."""

import csv
import hashlib
import json
import math
import os

import cv2
import numpy as np
import pytest

from depthnet_jax.common import rotations
from tfds_stillbox import codec
from tfds_stillbox.render import cli as render_cli
from tfds_stillbox.render import export, poses
from tfds_stillbox.render import scenes as render_scenes

TINY = ['--resolution', '16', '--scenes', '2', '--frames', '3', '--seed', '0']
# sha256 of every file of `python -m tfds_stillbox.render --out DIR` + TINY, rendered before --rotation,
# --trajectory and --distortion existed.
BEFORE_POSES = {
    '16/0/D_0000_00.npy': 'cab9cf0ba75abbe0b37edfcfed64e91a14518478b32001dd7e319d61c89a1c8b',
    '16/0/D_0000_01.npy': '6da3b6971847864305d56a7c89351592ce067685541fd10cf05e5b7f311fb5ad',
    '16/0/D_0000_02.npy': '87730c65326d32da339cd4d5e3f3d879eedb010a09910a28d5a39d2bb0d2a5e9',
    '16/0/D_0001_00.npy': 'f6f0b9b18d169fb323a1ad4e43b27127778272a6aa3329523ff61b2c95bdb504',
    '16/0/D_0001_01.npy': '0737c8a1655af6ed93caf3d0b3c749d1dc9aa7898f40a1a11024e5f1e156894c',
    '16/0/D_0001_02.npy': '18c34316d77ae0bd5ae8615194d94daea12183c0a85049cd0f346f0171728509',
    '16/0/RGB_0000_00.jpg': 'b5e8352d07cba24de6e2262f5e2653ee1b0187bf2ccaa4286dc3d420db4d0e05',
    '16/0/RGB_0000_01.jpg': '872923b77785ff05767d6df9d1ab3cd8e9895efa22b3238821186e1ac3af9eb1',
    '16/0/RGB_0000_02.jpg': 'f6e7aa201cd157226e2b976f5dcc015d6f24ced3fc5d0c3e5d8b7e8f6dfe8093',
    '16/0/RGB_0001_00.jpg': '2a24689e1aa2277a099cf7a5e9340b182a1c6c2e562afabcc89985636d91efdc',
    '16/0/RGB_0001_01.jpg': '55a8378f86f99614a9fbff876b3951a35cd7f17ef52ee8e8037738a93f9192f9',
    '16/0/RGB_0001_02.jpg': 'b85a5b64a79df897a9020b9e746f4330b0e7f41ba575b1c02520dd54b9e81377',
    '16/0/metadata.json': '51805565fa0d409002b878b20dfa7f5e5675ca2d3f1ae2334073d64940867258',
    '16/0/motion_0000.csv': '48948d6309b3706a6e0e6a2b43319fa0ae7334867add75d5837af4dbea65492f',
    '16/0/motion_0001.csv': 'a590ceaea84012b9cfdde9ffcb2d5b2c7f8e5cb9ddf61c1507a91c5f4f24b730',
}
BARREL, FISHEYE = '-0.28,0.07,0,0,0', 'fisheye:0.1,0.01,-0.01,0.002'


def _hashes(out):
  found = {}
  for folder, _, names in os.walk(out):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, 'rb') as f:
        found[os.path.relpath(path, out)] = hashlib.sha256(f.read()).hexdigest()
  return found


def _render(capsys, out, *argv):
  code = render_cli.main(['--out', str(out), *map(str, argv)])
  _, err = capsys.readouterr()
  assert code == 0, err
  folder = out / os.listdir(out)[0] / '0'
  return folder, json.loads((folder / 'metadata.json').read_text())


def _rows(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def test_defaults_write_the_same_bytes_as_before_the_camera_flags(tmp_path, capsys):
  _render(capsys, tmp_path / 'default', *TINY)
  assert _hashes(tmp_path / 'default') == BEFORE_POSES
  _render(capsys, tmp_path / 'zero', *TINY, '--rotation', '0', '--step', '0.1')
  assert _hashes(tmp_path / 'zero') == BEFORE_POSES


def _angle(a, b):
  """Degrees between two rotations given as quaternions."""
  return math.degrees(2.0 * math.acos(min(1.0, abs(float(np.dot(a, b))))))


def test_rotation_turns_the_camera_about_one_axis_and_logs_its_attitude(tmp_path, capsys):
  folder, metadata = _render(capsys, tmp_path, '--resolution', '24x16', '--scenes', '2', '--frames', '3',
                             '--rotation', '7.5')
  assert metadata['args']['rotation'] == 7.5
  axes = []
  for k, entry in enumerate(metadata['scenes']):
    q = np.array(entry['orientation'])
    assert q.shape == (3, 4) and entry['attitude'] == f'attitude_{k:04d}.csv'
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(q[0], [1.0, 0.0, 0.0, 0.0])
    for i in range(3):
      assert _angle(q[0], q[i]) == pytest.approx(7.5 * i, abs=1e-9)
    axes.append(q[1, 1:] / np.linalg.norm(q[1, 1:]))
    np.testing.assert_allclose(q[2, 1:] / np.linalg.norm(q[2, 1:]), axes[-1], atol=1e-12)  # one axis
    text = (folder / entry['attitude']).read_text()
    assert text.split('\n')[0] == 'frame,time,qw,qx,qy,qz' and text.endswith('\n')
    rows = _rows(folder / entry['attitude'])
    assert [int(r['frame']) for r in rows] == [0, 1, 2]
    assert [float(r['time']) for r in rows] == [i * 0.1 for i in range(3)]
    np.testing.assert_array_equal([[float(r[c]) for c in ('qw', 'qx', 'qy', 'qz')] for r in rows], q)
  assert abs(float(np.dot(axes[0], axes[1]))) < 0.999  # each scene has its own axis


def _range(depth, k):
  """The ray length of each pixel from a z-depth map (invariant under a rotation of the camera)."""
  h, w = depth.shape
  u, v = np.meshgrid(np.arange(w), np.arange(h))
  rays = np.linalg.inv(k) @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
  return (depth * np.linalg.norm(rays, axis=0).reshape(h, w)).astype(np.float32)


def test_a_turned_frame_is_the_first_one_seen_through_the_rotation_homography():
  """Without translation (a step of 1 um), frame 1 warped by K R1^T R0 K^-1 is frame 0: colour, and the ray
  lengths of the z-depth maps; the transposed rotation is not."""
  size, fov = 32, 90.0
  k = rotations.intrinsics(size, size, fov)
  scene = render_scenes.render_scene((3, 1), size, fov, 2, step=1e-6, rotation=12.0)
  r0, r1 = rotations.quaternion_to_matrix(scene.quaternions)
  assert _angle(*scene.quaternions) == pytest.approx(12.0)
  errors = []
  for source, target in ((r1, r0), (r1.T, r0)):  # the right homography, then a wrong one
    h = rotations.homography(k, source, target)
    rgb, valid = rotations.warp(scene.frames[1], h)
    ranges, _ = rotations.warp(_range(scene.depth[1], k)[..., None], h, interpolation=cv2.INTER_LINEAR)
    expected = _range(scene.depth[0], k)
    relative = np.abs(ranges.reshape(expected.shape) - expected)[valid] / expected[valid]
    colour = np.abs(rgb.astype(np.float32) - scene.frames[0])[valid].mean()
    errors.append((colour, np.median(relative), np.mean(relative < 0.02), valid.mean()))
  (colour, median, close, valid), (wrong_colour, wrong_median, wrong_close, _) = errors
  assert valid > 0.5 and median < 0.005 and close > 0.6 and colour < 8, errors  # edges mix in the warp
  assert wrong_median > 0.05 and wrong_close < 0.2 and wrong_colour > 3 * colour, errors


def _write_trajectory(path, rows, header='frame,time,x,y,z,qw,qx,qy,qz'):
  path.write_text('\n'.join([header] + [','.join(map(str, r)) for r in rows]) + '\n')
  return path


def test_a_trajectory_sets_the_positions_times_and_orientations(tmp_path, capsys):
  q = rotations.matrix_to_quaternion(rotations.axis_angle([0, 1, 0], 5.0))
  poses_ = [(0, 1.0, 10.0, -2.0, 3.0, 1, 0, 0, 0), (1, 1.25, 10.0, -2.0, 3.2, 1, 0, 0, 0),
            (2, 1.5, 10.0, -2.0, 3.4, *(1.004 * q))]  # a little off the unit norm: normalised
  csv_path = _write_trajectory(tmp_path / 'poses.csv', poses_)
  folder, metadata = _render(capsys, tmp_path / 'out', '--resolution', '16', '--scenes', '2', '--trajectory',
                             csv_path)
  args = metadata['args']
  assert args['trajectory'] == str(csv_path) and args['num_frames'] == 3 and args['step'] is None
  assert args['time_step'] == pytest.approx(0.25)
  for entry in metadata['scenes']:
    assert entry['length'] == 3 and entry['time_step'] == pytest.approx(0.25)
    np.testing.assert_allclose(entry['speed'], [0.0, 0.0, 0.8], rtol=1e-6)  # the mean velocity, m/s
    rows = _rows(folder / entry['motion'])
    np.testing.assert_array_equal([[float(r[c]) for c in ('time', 'x', 'y', 'z')] for r in rows],
                                  [p[1:5] for p in poses_])
    attitude = _rows(folder / entry['attitude'])
    assert [float(r['time']) for r in attitude] == [1.0, 1.25, 1.5]
    np.testing.assert_allclose(entry['orientation'], [[1, 0, 0, 0], [1, 0, 0, 0], q], atol=1e-12)
    np.testing.assert_allclose([[float(r[c]) for c in ('qw', 'qx', 'qy', 'qz')] for r in attitude],
                               entry['orientation'], atol=0)
  # The world is drawn around the path: the same world as a straight flight of the same draws, moved.
  trajectory = poses.read_trajectory(str(csv_path))
  world = render_scenes.sample_world((0, 0), 16, 90.0, 3, trajectory=trajectory)
  np.testing.assert_allclose(world.positions, [[0, 0, 0], [0, 0, 0.2], [0, 0, 0.4]], atol=1e-12)
  room = world.objects[0]
  local = (world.positions - room.center) @ room.rotation
  assert np.all(np.abs(local) < np.asarray(room.half))  # the path is inside its room


def _error_line(err):
  lines = [line for line in err.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith('error: ') and 'Traceback' not in err, err
  return lines[0]


GOOD = [(0, 0.0, 0, 0, 0, 1, 0, 0, 0), (1, 0.1, 0, 0, 0.1, 1, 0, 0, 0), (2, 0.2, 0, 0, 0.2, 1, 0, 0, 0)]
BAD_TRAJECTORIES = [
    ('frame,time,x,y,z,qw,qx,qy', [r[:8] for r in GOOD], 'line 1: no column qz'),
    (None, [GOOD[0], (1, 0.1, 0, 'abc', 0.1, 1, 0, 0, 0)], "line 3, column y: 'abc' is not a finite number"),
    (None, [GOOD[0], (1, 0.1, 0, 0, 0.1, 1, 0, 0)], "line 3, column qz: '' is not a finite number"),
    (None, [GOOD[0], (1, 0.1, 0, 0, 0.1, 0, 0, 0, 0)], 'line 3, columns qw,qx,qy,qz: |q| = 0; expected a unit'),
    (None, [GOOD[0], (1, 0.1, 0, 0, 0.1, 1.5, 0, 0, 0)], 'line 3, columns qw,qx,qy,qz: |q| = 1.5; expected a '
                                                         'unit quaternion (|q| within 0.01 of 1)'),
    (None, [GOOD[0], GOOD[1], (2, 0.1, 0, 0, 0.2, 1, 0, 0, 0)], 'line 4, column time: 0.1 after 0.1; expected '
                                                                'increasing times'),
    (None, [GOOD[0], (2, 0.1, 0, 0, 0.1, 1, 0, 0, 0)], 'line 3, column frame: 2; expected 1'),
    (None, [GOOD[0]], '1 row(s) of poses; expected at least 2'),
]


@pytest.mark.parametrize('header, rows, message', BAD_TRAJECTORIES)
def test_a_bad_trajectory_is_one_error_line_naming_the_file_line_and_column(tmp_path, capsys, header, rows,
                                                                           message):
  path = _write_trajectory(tmp_path / 'poses.csv', rows, *([header] if header else []))
  code = render_cli.main(['--out', str(tmp_path / 'out'), '--resolution', '16', '--trajectory', str(path)])
  line = _error_line(capsys.readouterr()[1])
  assert code == 1 and line.startswith(f'error: --trajectory {path}: ') and message in line, line
  assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('extra, message', [
    (['--frames', '5'], '--frames=5: --trajectory {path} has 3 rows (frames); expected 3 or no --frames'),
    (['--step', '0.2'], '--step=0.2: not with --trajectory {path}'),
    (['--rotation', '3'], '--rotation=3: not with --trajectory {path}'),
])
def test_flags_that_contradict_a_trajectory_are_refused(tmp_path, capsys, extra, message):
  path = _write_trajectory(tmp_path / 'poses.csv', GOOD)
  code = render_cli.main(['--out', str(tmp_path / 'out'), '--trajectory', str(path), *extra])
  line = _error_line(capsys.readouterr()[1])
  assert code == 1 and line.startswith('error: ' + message.format(path=path)), line
  assert not (tmp_path / 'out').exists()
  # --frames equal to the rows is fine
  assert render_cli.main(['--out', str(tmp_path / 'ok'), '--resolution', '8', '--scenes', '1', '--trajectory',
                          str(path), '--frames', '3']) == 0


@pytest.mark.parametrize('value, message', [
    ('-0.6,0,0,0,0', 'the lens folds over'),
    ('fisheye:0,0,0,0', 'at 16x16 and --fov 95 the lens sees rays 85.7 degrees from the optical axis; expected at '
                        'most 80'),
    ('fisheye:-0.3,0,0,0', 'the lens folds over'),
    ('fisheye:1', '1 coefficient(s)'),
    ('abc:1,2,3,4', "unknown model 'abc'"),
])
def test_a_bad_distortion_is_one_error_line(tmp_path, capsys, value, message):
  code = render_cli.main(['--out', str(tmp_path / 'out'), '--resolution', '16', '--fov', '95',
                          f'--distortion={value}'])
  line = _error_line(capsys.readouterr()[1])
  assert code == 1 and line.startswith('error: --distortion=') and message in line, line
  assert not (tmp_path / 'out').exists()
  code = render_cli.main(['--out', str(tmp_path / 'out'), '--rotation', '45'])
  assert code == 1 and 'error: --rotation=45.0: expected a number in [0, 30]' in capsys.readouterr()[1]


def _undistort(frame, calibration):
  k, d = calibration['camera_matrix'], calibration['distortion_coefficients']
  if calibration['distortion_model'] == 'fisheye':
    return cv2.fisheye.undistortImage(frame, k, d, Knew=k)
  return cv2.undistort(frame, k, d)


def _read_calibration(path):
  storage = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
  try:
    return {'camera_matrix': storage.getNode('camera_matrix').mat(),
            'distortion_coefficients': storage.getNode('distortion_coefficients').mat().ravel(),
            'distortion_model': storage.getNode('distortion_model').string(),
            'size': (int(storage.getNode('image_width').real()), int(storage.getNode('image_height').real()))}
  finally:
    storage.release()


@pytest.mark.parametrize('value, model, coefficients', [
    (BARREL, 'plumb_bob', [-0.28, 0.07, 0, 0, 0]), (FISHEYE, 'fisheye', [0.1, 0.01, -0.01, 0.002])])
def test_a_distorted_tree_is_that_lens_over_the_pinhole_depth(tmp_path, capsys, value, model, coefficients):
  size, fov = (48, 40), 80.0
  folder, metadata = _render(capsys, tmp_path / 'lens', '--resolution', '48x40', '--fov', fov, '--scenes', '1',
                             '--frames', '2', '--seed', '5', f'--distortion={value}')
  assert metadata['args']['distortion']['coefficients'] == coefficients
  assert metadata['args']['calibration'] == 'calibration.yaml'
  calibration = _read_calibration(folder / 'calibration.yaml')
  np.testing.assert_allclose(calibration['camera_matrix'], rotations.intrinsics(*size, fov), rtol=1e-12)
  np.testing.assert_allclose(calibration['distortion_coefficients'], coefficients, rtol=1e-12)
  assert calibration['distortion_model'] == model and calibration['size'] == size
  pinhole = render_scenes.render_scene((5, 0), size, fov, 2)
  lens = render_scenes.render_scene((5, 0), size, fov, 2, distortion_model=export.camera._lens_model(value))
  for t, name in enumerate(metadata['scenes'][0]['depth']):
    np.testing.assert_array_equal(np.load(folder / name), pinhole.depth[t])  # the pinhole's depth, exactly
  np.testing.assert_array_equal(lens.depth, pinhole.depth)
  jpeg = codec.decode_jpeg((folder / metadata['scenes'][0]['imgs'][0]).read_bytes())
  assert np.abs(jpeg.astype(np.float32) - lens.frames[0]).mean() < 6  # the tree holds the lens's frames
  # cv2 undistorts the frames back to the pinhole's, on the centre (compared blurred: the resampling changes the
  # finest texture, not where things are).
  centre = (slice(8, 32), slice(10, 38))
  blur = lambda image: cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.5)  # noqa: E731
  for t in range(2):
    error = np.abs(blur(_undistort(lens.frames[t], calibration)) - blur(pinhole.frames[t]))[centre].mean()
    distorted = np.abs(blur(lens.frames[t]) - blur(pinhole.frames[t]))[centre].mean()
    assert error < 2 and error < 0.5 * distorted, (error, distorted)


def test_a_turning_camera_through_a_lens_and_its_contact_sheet(tmp_path, capsys):
  sheet = tmp_path / 'sheet.png'
  folder, metadata = _render(capsys, tmp_path / 'out', '--resolution', '24x16', '--scenes', '1', '--frames', '2',
                             '--rotation', '4', f'--distortion={BARREL}', '--contact_sheet', sheet)
  assert metadata['args']['rotation'] == 4.0 and metadata['args']['distortion']['model'] == 'radtan'
  assert sorted(os.listdir(folder)) == ['D_0000_00.npy', 'D_0000_01.npy', 'RGB_0000_00.jpg', 'RGB_0000_01.jpg',
                                        'attitude_0000.csv', 'calibration.yaml', 'metadata.json', 'motion_0000.csv']
  (entry,) = metadata['scenes']
  assert _angle(*entry['orientation']) == pytest.approx(4.0)
  scene = render_scenes.render_scene((0, 0), (24, 16), 90.0, 2, rotation=4.0,
                                     distortion_model=('radtan', [-0.28, 0.07, 0, 0, 0]))
  pinhole = render_scenes.render_scene((0, 0), (24, 16), 90.0, 2, rotation=4.0)
  np.testing.assert_array_equal(scene.depth, pinhole.depth)
  np.testing.assert_array_equal([np.load(folder / name) for name in entry['depth']], scene.depth)
  assert sheet.read_bytes().startswith(b'\x89PNG')
