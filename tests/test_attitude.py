"""Orientation logs for infer.py --attitude (depthnet_jax.infer.attitude) and PX4 flight logs
(depthnet_jax.infer.flight_log): a ULog written by pyulog's own writer, the CSV pyulog's ulog2csv makes of it and a
camera CSV give the same orientations at the frames' times; Slerp between samples; the camera's mount; the
renderer's frame-indexed CSV; Euler angles; positions at frame times; every bad input one error line naming the
file, the line or topic, and the field."""

import os

import numpy as np
import pytest
from pyulog.ulog2csv import convert_ulog2csv
from scipy.spatial.transform import Rotation

from depthnet_jax.common import cli, rotations
from depthnet_jax.infer import attitude, flight_log
from depthnet_jax.testing import ulog_writer

LOG_TIMES = np.round(np.arange(1.0, 3.0001, 0.1), 6)        # 21 attitude samples, 10 Hz, seconds since boot
CAPTURES = np.array([1.05, 1.33, 1.6, 2.01, 2.5, 2.95])      # camera_capture times (between the samples)


def _body_quats(times) -> np.ndarray:
  """A turning, rolling flight's body FRD -> NED quaternions (w first), rounded to float32 as PX4 logs them."""
  t = np.asarray(times) - 1.0
  rot = Rotation.from_euler('ZYX', np.stack([40 * t, 5 * np.sin(3 * t), 10 * t - 8], 1), degrees=True)
  return rot.as_quat(scalar_first=True).astype(np.float32).astype(np.float64)


def _write_csv(path, header, rows):
  with open(path, 'w') as f:
    f.write(header + '\n')
    for row in rows:
      f.write(','.join(repr(float(v)) if not isinstance(v, str) else v for v in row) + '\n')
  return str(path)


def _error(call, *needles) -> str:
  """The message of the `cli.UserError` of `call()`, checked to be one line holding every needle."""
  with pytest.raises(cli.UserError) as caught:
    call()
  message = str(caught.value)
  assert '\n' not in message, message
  for needle in needles:
    assert str(needle) in message, (needle, message)
  return message


@pytest.fixture(scope='module')
def flight(tmp_path_factory):
  """One flight logged as a .ulg, its ulog2csv CSV, and a camera CSV of the same orientations."""
  folder = tmp_path_factory.mktemp('flight')
  quats = _body_quats(LOG_TIMES)
  positions = np.stack([3 * (LOG_TIMES - 1), np.sin(LOG_TIMES), -10 - LOG_TIMES], 1)
  ulg = ulog_writer.write_px4_log(str(folder / 'log.ulg'), LOG_TIMES, quats, positions=positions,
                                  capture_times=CAPTURES)
  convert_ulog2csv(ulg, 'vehicle_attitude', str(folder), ',', None, None)
  camera = rotations.matrix_to_quaternion(rotations.quaternion_to_matrix(quats) @ rotations.camera_to_body())
  camera_csv = _write_csv(folder / 'camera.csv', 'time,qw,qx,qy,qz', np.column_stack([LOG_TIMES, camera]))
  times_csv = _write_csv(folder / 'times.csv', 'frame,time',
                         [(str(k), t) for k, t in enumerate(CAPTURES)])
  return {'folder': folder, 'ulg': ulg, 'ulog2csv': str(folder / 'log_vehicle_attitude_0.csv'), 'camera': camera_csv,
          'times': times_csv, 'quats': quats, 'positions': positions}


def test_ulg_ulog2csv_and_camera_csv_agree_at_the_frame_times(flight):
  captured = attitude.frame_times(ulog=flight['ulg'])
  listed = attitude.frame_times(flight['times'])
  np.testing.assert_allclose(captured.times, CAPTURES, atol=1e-9)
  np.testing.assert_allclose(listed.times, CAPTURES, atol=1e-12)
  assert 'camera_capture' in captured.source and 'times.csv' in listed.source
  logs = {form: attitude.read_attitude(flight[form]) for form in ('ulg', 'ulog2csv', 'camera')}
  assert logs['ulg'].is_body and logs['ulog2csv'].is_body and not logs['camera'].is_body
  got = {form: attitude.orientations_at(log, len(CAPTURES), captured) for form, log in logs.items()}
  for form in ('ulog2csv', 'camera'):
    np.testing.assert_allclose(got[form], got['ulg'], atol=1e-6, err_msg=form)
  expected = Rotation.from_quat(flight['quats'], scalar_first=True)
  from scipy.spatial.transform import Slerp
  body = Slerp(LOG_TIMES, expected)(CAPTURES).as_matrix()
  np.testing.assert_allclose(got['ulg'], body @ rotations.camera_to_body(), atol=1e-6)
  np.testing.assert_allclose(attitude.orientations_at(logs['ulg'], None, listed), got['ulg'], atol=1e-12)
  assert np.allclose(got['ulg'] @ np.swapaxes(got['ulg'], 1, 2), np.eye(3), atol=1e-9)   # rotations


def test_slerp_midpoint_and_the_time_offset(tmp_path):
  yaw90 = Rotation.from_euler('z', 90, degrees=True).as_quat(scalar_first=True)
  ulg = ulog_writer.write_px4_log(str(tmp_path / 'turn.ulg'), [10.0, 12.0], [[1, 0, 0, 0], yaw90])
  log = attitude.read_attitude(ulg)
  got = attitude.orientations_at(log, 3, [10.0, 11.0, 12.0])
  for k, degrees in enumerate((0, 45, 90)):
    np.testing.assert_allclose(got[k], rotations.euler_to_matrix(0, 0, degrees) @ rotations.camera_to_body(),
                               atol=1e-6)
  times = _write_csv(tmp_path / 'times.csv', 'frame,time', [('0', 0.5), ('1', 1.5)])
  shifted = attitude.frame_times(times, time_offset=10.0)   # log time = frame time + offset
  np.testing.assert_allclose(shifted.times, [10.5, 11.5])
  assert '--time_offset 10' in shifted.source
  np.testing.assert_allclose(attitude.orientations_at(log, 2, shifted)[1],
                             rotations.euler_to_matrix(0, 0, 67.5) @ rotations.camera_to_body(), atol=1e-6)


def test_camera_rotation_pitch_minus_90_looks_down(tmp_path):
  level = ulog_writer.write_px4_log(str(tmp_path / 'level.ulg'), [0.0, 1.0], [[1, 0, 0, 0]] * 2)
  down = attitude.orientations_at(attitude.read_attitude(level), 1, [0.5], camera_rotation=(0, -90, 0))[0]
  np.testing.assert_allclose(down @ [0, 0, 1], [0, 0, 1], atol=1e-12)    # camera z = NED down
  np.testing.assert_allclose(down @ [1, 0, 0], [0, 1, 0], atol=1e-12)    # image right = the body's right (east)
  np.testing.assert_allclose(down @ [0, 1, 0], [-1, 0, 0], atol=1e-12)   # image down = backwards (south)
  forward = attitude.orientations_at(attitude.read_attitude(level), 1, [0.5])[0]
  np.testing.assert_allclose(forward @ [0, 0, 1], [1, 0, 0], atol=1e-12)   # camera z = north


def test_renderer_csv_is_indexed_by_frame_and_is_the_camera_s(tmp_path):
  quats = Rotation.random(5, random_state=3).as_quat(scalar_first=True)
  rows = [(str(k), 0.1 * k, *q) for k, q in enumerate(quats)]
  path = _write_csv(tmp_path / 'attitude_00.csv', 'frame,time,qw,qx,qy,qz', rows)
  log = attitude.read_attitude(path)
  assert not log.timed and not log.is_body
  expected = rotations.quaternion_to_matrix(quats)
  np.testing.assert_allclose(attitude.orientations_at(log), expected, atol=1e-12)
  np.testing.assert_allclose(attitude.orientations_at(log, 3), expected[:3], atol=1e-12)
  _error(lambda: attitude.orientations_at(log, 6), path, 'frame 5')
  _error(lambda: attitude.orientations_at(log, 5, camera_rotation=(0, -90, 0)), '--camera_rotation', path)
  gap = _write_csv(tmp_path / 'gap.csv', 'frame,qw,qx,qy,qz', [(str(k), *quats[k]) for k in (0, 1, 3)])
  _error(lambda: attitude.orientations_at(attitude.read_attitude(gap)), gap, 'frame 2')


def test_roll_pitch_yaw_csv_matches_euler_to_matrix(tmp_path):
  angles = np.array([[5.0, -10.0, 30.0], [-20.0, 15.0, 170.0], [0.0, -90.0, -45.0]])
  path = _write_csv(tmp_path / 'euler.csv', ' Frame ; Roll ; Pitch ; Yaw '.replace(';', ','),
                    [(str(k), *a) for k, a in enumerate(angles)])
  got = attitude.orientations_at(attitude.read_attitude(path), 3)
  np.testing.assert_allclose(got, rotations.euler_to_matrix(*angles.T), atol=1e-12)
  timed = tmp_path / 'timed.csv'
  timed.write_text('# a comment\ntime;roll;pitch;yaw\n0;0;0;0\n\n2;0;0;90\n')
  got = attitude.orientations_at(attitude.read_attitude(str(timed)), 1, [1.0])
  np.testing.assert_allclose(got[0], rotations.euler_to_matrix(0, 0, 45), atol=1e-12)


def test_positions_at_the_frame_times(flight):
  times = attitude.frame_times(ulog=flight['ulg'], ulog_flag='--motion')
  got = flight_log.positions_at(flight['ulg'], times)
  expected = np.stack([np.interp(CAPTURES, LOG_TIMES, flight['positions'][:, i].astype(np.float32))
                       for i in range(3)], 1)
  np.testing.assert_allclose(got, expected, atol=1e-5)
  np.testing.assert_allclose(flight_log.positions_at(flight['ulg'], LOG_TIMES[:2]),
                             flight['positions'][:2].astype(np.float32), atol=1e-6)
  _error(lambda: flight_log.positions_at(flight['ulg'], [0.5]), flight['ulg'], 'vehicle_local_position', 'frame 0',
         '0.500000 s')


def test_nan_positions_are_unknown_only_around_them(tmp_path):
  xyz = [[0, 0, 0], [1, 0, 0], [np.nan, np.nan, np.nan], [3, 0, 0]]
  ulg = ulog_writer.write_px4_log(str(tmp_path / 'nan.ulg'), [0, 1, 2, 3], [[1, 0, 0, 0]] * 4, positions=xyz)
  got = flight_log.positions_at(ulg, [0.5, 1.0, 1.5, 3.0])
  np.testing.assert_allclose(got[:2, 0], [0.5, 1.0])
  assert np.isnan(got[2]).all() and got[3, 0] == 3.0


def _bad_ulogs(folder):
  """(name, path, needles) of ULogs each with one mistake (pyulog writes samples in time order: a repeated time
  is what a log out of order is there)."""
  q = [[1, 0, 0, 0]] * 3
  no_q = ulog_writer.write_topics(str(folder / 'no_q.ulg'), {'vehicle_attitude': (
      (('uint64_t', 'timestamp'), ('float[3]', 'rpy')), {'timestamp': ulog_writer.micros([0, 1])})})
  empty = ulog_writer.write_topics(str(folder / 'empty.ulg'), {'vehicle_attitude': (
      ulog_writer.ATTITUDE_FIELDS, {'timestamp': np.zeros(0, np.uint64)})})
  text = folder / 'text.ulg'
  text.write_text('timestamp,q[0]\n')
  return [
      ('missing topic', ulog_writer.write_px4_log(str(folder / 'captures.ulg'), capture_times=[1.0]),
       ('vehicle_attitude', 'not in the log')),
      ('missing field', no_q, ("topic 'vehicle_attitude'", "field 'q[0]'", 'missing')),
      ('no samples', empty, ("topic 'vehicle_attitude'", 'no samples')),
      ('not a ULog', str(text), ('not a ULog file',)),
      ('non-unit', ulog_writer.write_px4_log(str(folder / 'norm.ulg'), [0, 1, 2], [q[0], [0.9, 0, 0, 0], q[0]]),
       ("topic 'vehicle_attitude', sample 1", 'q[0],q[1],q[2],q[3]', 'norm 0.9')),
      ('zero', ulog_writer.write_px4_log(str(folder / 'zero.ulg'), [0, 1, 2], [q[0], q[0], [0, 0, 0, 0]]),
       ('sample 2', 'norm 0')),
      ('not increasing', ulog_writer.write_px4_log(str(folder / 'back.ulg'), [0, 1, 1], q),
       ("topic 'vehicle_attitude', sample 2", "field 'timestamp'", '1000000 us is not after')),
      ('one sample', ulog_writer.write_px4_log(str(folder / 'one.ulg'), [0], q[:1]), ('1 sample', 'at least 2')),
  ]


def test_bad_ulogs_are_one_line_naming_file_topic_and_field(tmp_path):
  for name, path, needles in _bad_ulogs(tmp_path):
    message = _error(lambda p=path: attitude.read_attitude(p), '--attitude', path, *needles)
    assert message, name
  no_captures = ulog_writer.write_px4_log(str(tmp_path / 'no_captures.ulg'), [0, 1], [[1, 0, 0, 0]] * 2)
  _error(lambda: attitude.frame_times(ulog=no_captures, ulog_flag='--motion'), '--motion', no_captures,
         'camera_capture')
  _error(lambda: flight_log.positions_at(no_captures, [0.5]), no_captures, 'vehicle_local_position')
  _error(lambda: attitude.read_attitude(str(tmp_path / 'absent.ulg')), 'no such file')


@pytest.mark.parametrize('header, rows, needles', [
    ('frame,qw,qx,qy', [('0', 1, 0, 0)], ('line 1', "'qz'", 'missing column')),
    ('time,qw,qx,qy,qz', [(0.0, 1, 0, 0, 0), (1.0, 0, 0, 0, 0)], ('line 3', 'qw,qx,qy,qz', 'norm 0')),
    ('time,qw,qx,qy,qz', [(0.0, 1, 0, 0, 0), (1.0, 1.2, 0, 0, 0)], ('line 3', 'norm 1.2')),
    ('time,qw,qx,qy,qz', [(0.0, 1, 0, 0, 0), (1.0, 1, 0, 0, 0), (1.0, 1, 0, 0, 0)],
     ('line 4', "column 'time'", 'not after')),
    ('frame,qw,qx,qy,qz', [('0', 1, 0, 0, 0), ('0', 1, 0, 0, 0)], ('line 3', "column 'frame'", 'not after')),
    ('frame,qw,qx,qy,qz', [('1.5', 1, 0, 0, 0)], ('line 2', "column 'frame'", 'integer >= 0')),
    ('frame,qw,qx,qy,qz', [('0', 'abc', 0, 0, 0)], ('line 2', "column 'qw'", "'abc' is not a number")),
    ('frame,qw,qx,qy,qz', [('0', 1, 0)], ('line 2', "column 'qy'", 'missing')),
    ('time,qw,qx,qy,qz', [(0.0, 1, 0, 0, 0)], ('1 row(s)', 'at least 2')),
    ('frame,pitch,yaw', [('0', 1, 0)], ('line 1', "'roll'", 'missing column')),
    ('timestamp,q[0],q[1],q[2]', [('0', 1, 0, 0)], ('line 1', "'q[3]'", 'ulog2csv')),
    ('timestamp,q[0],q[1],q[2],q[3]', [('5', 1, 0, 0, 0), ('5', 1, 0, 0, 0)], ('line 3', "column 'timestamp'")),
    ('x,y,z', [(1, 2, 3)], ('line 1', 'missing column', 'frame or time')),
])
def test_bad_csvs_are_one_line_naming_file_line_and_column(tmp_path, header, rows, needles):
  path = _write_csv(tmp_path / 'attitude.csv', header, rows)
  _error(lambda: attitude.read_attitude(path), '--attitude', path, *needles)


def test_bad_frame_times(flight, tmp_path):
  log = attitude.read_attitude(flight['ulg'])
  late = attitude.frame_times(flight['times'], time_offset=0.1)
  _error(lambda: attitude.orientations_at(log, len(CAPTURES), late), flight['ulg'], 'frame 5', '3.050000 s',
         '1.000000 to 3.000000 s', '--time_offset')
  _error(lambda: attitude.orientations_at(log, len(CAPTURES) + 1, late), 'times.csv', f'{len(CAPTURES)} frames')
  camera = attitude.read_attitude(flight['camera'])
  _error(lambda: attitude.orientations_at(camera, 2), flight['camera'], '--frame_times')
  _error(lambda: attitude.frame_times(), '--frame_times', 'camera_capture')
  gap = _write_csv(tmp_path / 'gap.csv', 'frame,time', [('0', 1.0), ('2', 2.0)])
  _error(lambda: attitude.frame_times(gap), gap, 'line 3', "column 'frame'", 'expected 1')
  back = _write_csv(tmp_path / 'back.csv', 'frame,time', [('0', 2.0), ('1', 1.0)])
  _error(lambda: attitude.frame_times(back), back, 'line 3', "column 'time'", 'not after')
  columns = _write_csv(tmp_path / 'columns.csv', 'frame,t', [('0', 2.0)])
  _error(lambda: attitude.frame_times(columns), columns, 'line 1', "'time'")


def test_a_rendered_flight_as_a_ulog_gives_back_its_orientations_and_positions(tmp_path, capsys):
  """scripts/flight_ulog.py (the README's walkthrough): the renderer's turning flight written as PX4 logs it, a
  down-looking mount and a clock offset; read back by infer.py's readers, the camera's orientations and positions
  of every frame, timed by the log's camera_capture."""
  import json

  from depthnet_jax.testing import config_files
  from tfds_stillbox.render import export
  script = config_files.load_module(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                 'scripts', 'flight_ulog.py'), 'flight_ulog_test')
  folder = os.path.join(export.export(str(tmp_path / 'flight'), 16, 1, seed=2, num_frames=5, rotation=3.0), '0')
  ulg = str(tmp_path / 'flight.ulg')
  assert script.main(['--flight', folder, '--out', ulg, '--camera_rotation', '0,-90,0']) == 0
  assert 'wrote' in capsys.readouterr()[0]
  with open(os.path.join(folder, 'metadata.json')) as f:
    expected = rotations.quaternion_to_matrix(np.array(json.load(f)['scenes'][0]['orientation']))
  times = attitude.frame_times(ulog=ulg)
  got = attitude.orientations_at(attitude.read_attitude(ulg), 5, times, camera_rotation=(0, -90, 0))
  np.testing.assert_allclose(got, expected, atol=1e-6)
  positions = script.read_flight(folder, 0)[2]
  np.testing.assert_allclose(flight_log.positions_at(ulg, times), positions, atol=1e-5)
  assert script.main(['--flight', folder, '--out', ulg]) == 1   # never over the user's file
  assert capsys.readouterr()[1].startswith(f'error: --out {ulg}: exists already')
