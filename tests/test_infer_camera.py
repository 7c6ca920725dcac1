"""infer.py's camera flags on a small rendered flight with any network: mistakes in attitude logs and calibrations
are one `error:` line before any work, an identity attitude and a distortion-free calibration change nothing, and
the per-pixel fusion of shifts (`predictor.fuse_shifts`) keeps the smallest shift below the saturation ceiling."""

import cv2
import imageio.v3 as iio
import numpy as np
import pytest

import infer
from depthnet_jax.common import lens, rotations
from depthnet_jax.infer import predictor as inference
from tfds_stillbox.render import scenes

FRAMES = 5


@pytest.fixture(scope='module')
def flight(tmp_path_factory):
  folder = tmp_path_factory.mktemp('camera_flight')
  frames = folder / 'frames'
  frames.mkdir()
  scene = scenes.render_scene((5, 0), 32, num_frames=FRAMES, supersample=1)
  for i, frame in enumerate(scene.frames):
    iio.imwrite(frames / f'img_{i:04d}.png', frame)
  q = 'frame,qw,qx,qy,qz\n' + ''.join(f'{i},1,0,0,0\n' for i in range(FRAMES))
  (folder / 'identity.csv').write_text(q)
  lens.write_calibration(str(folder / 'pinhole.yaml'),
                         lens.Lens('radtan', rotations.intrinsics(32, 32, 90), np.zeros(5), (32, 32)))
  return folder, frames


def _run(capsys, *args):
  code = infer.main([str(a) for a in args] + ['--no_resize'])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def _write(path, text):
  path.write_text(text)
  return path


def _bad_cases(folder):
  rows = ''.join(f'{i},1,0,0,0\n' for i in range(FRAMES))
  storage = cv2.FileStorage(str(folder / 'two_by_three.yaml'), cv2.FILE_STORAGE_WRITE)
  storage.write('image_width', 32)
  storage.write('image_height', 32)
  storage.write('camera_matrix', np.eye(3)[:2])
  storage.write('distortion_coefficients', np.zeros((1, 5)))
  storage.release()
  lens.write_calibration(str(folder / 'wide.yaml'),
                         lens.Lens('radtan', rotations.intrinsics(64, 48, 90), np.zeros(5), (64, 48)))
  return [
      (['--attitude', _write(folder / 'zero.csv', 'frame,qw,qx,qy,qz\n0,1,0,0,0\n1,0,0,0,0\n' +
                             rows.split('\n', 2)[2])],
       ('zero.csv', 'line 3')),
      (['--attitude', _write(folder / 'nocol.csv', 'frame,qw,qx,qy\n0,1,0,0\n')], ('nocol.csv', 'qz')),
      (['--attitude', _write(folder / 'short.csv', 'frame,qw,qx,qy,qz\n0,1,0,0,0\n1,1,0,0,0\n')],
       ('short.csv', 'frame 2')),
      (['--attitude', _write(folder / 'timed.csv', 'time,qw,qx,qy,qz\n0,1,0,0,0\n1,1,0,0,0\n')],
       ('timed.csv', '--frame_times')),
      (['--frame_times', folder / 'x.csv'], ('--frame_times', '--attitude')),
      (['--undistort_balance', '0.5'], ('--undistort_balance', '--calibration')),
      (['--calibration', folder / 'two_by_three.yaml'], ('two_by_three.yaml', 'camera_matrix')),
      (['--calibration', folder / 'wide.yaml'], ('wide.yaml', '64x48')),
      (['--attitude', folder / 'identity.csv', '--camera_rotation', '0,-90,0'], ('--camera_rotation',)),
      (['--camera_rotation', '1,2'], ('--camera_rotation',)),
  ]


def test_bad_logs_and_calibrations_are_one_line_before_any_work(random_checkpoint, flight, tmp_path, capsys):
  folder, frames = flight
  for n, (flags, named) in enumerate(_bad_cases(folder)):
    out = tmp_path / f'out{n}'
    code, _, err = _run(capsys, '--checkpoint', random_checkpoint, '--input', frames, '--output', out, *flags)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith('error: '), (flags, err)
    for word in named:
      assert word in lines[0], (flags, lines[0])
    assert not out.exists(), flags


@pytest.mark.slow   # two compiles and runs of the network: make test's budget is spent
def test_identity_attitude_and_pinhole_calibration_change_nothing(random_checkpoint, flight, tmp_path, capsys):
  folder, frames = flight
  runs = {'plain': [], 'camera': ['--attitude', folder / 'identity.csv', '--calibration', folder / 'pinhole.yaml']}
  depths = {}
  for name, flags in runs.items():
    code, out, err = _run(capsys, '--checkpoint', random_checkpoint, '--input', frames, '--output', tmp_path / name,
                          '--output_raw', *flags)
    assert code == 0, err
    depths[name] = np.load(tmp_path / name / 'img_0004_depth.npy')
  assert 'stabilized by' in out and 'undistorted by' in out and '0 invalid pixels' in out
  # the calibration's remap at integer positions is the identity (bilinear weights 0/1)
  np.testing.assert_allclose(depths['camera'], depths['plain'], rtol=1e-5)
  assert (tmp_path / 'camera' / 'shifts.csv').exists()


def test_fuse_shifts_keeps_the_smallest_shift_below_the_ceiling_and_skips_invalid_pixels():
  raw = np.stack([np.full((2, 3), 99.0), np.full((2, 3), 60.0), np.full((2, 3), 30.0)])
  raw[0, 0, 0] = 40.0          # the smallest shift is below the ceiling there
  raw[:, 1, 0] = [99.0, 98.0, 97.5]   # every candidate saturated: the lowest raw output
  valid = [None, np.ones((2, 3), bool), np.ones((2, 3), bool)]
  valid[1][1, 2] = False
  depth, shares = inference.fuse_shifts(raw, [1.0, 2.0, 3.0], valid, ceiling=97.0)
  assert depth[0, 0] == pytest.approx(40.0)          # candidate 0 (40 m raw) x 1
  assert depth[0, 1] == pytest.approx(120.0)         # candidate 0 saturated: candidate 1 (60 m raw) x 2
  assert depth[1, 0] == pytest.approx(292.5)         # all saturated: candidate 2 (97.5 m raw) x 3
  assert depth[1, 2] == pytest.approx(90.0)          # candidate 1 invalid there: candidate 2 (30 m raw) x 3
  np.testing.assert_allclose(shares, [1 / 6, 3 / 6, 2 / 6])
  none_valid = [np.zeros((2, 3), bool)] * 3
  assert np.isnan(inference.fuse_shifts(raw, [1, 1, 1], none_valid)[0]).all()
