"""depthnet_jax.common.lens: calibration files (OpenCV's three formats, ROS camera_info), other frame sizes,
undistortion against OpenCV's own functions, and the one-line errors of bad files."""

import cv2
import numpy as np
import pytest

from depthnet_jax.common import cli, lens, rotations

SIZE = (160, 120)
RADTAN = lens.Lens('radtan', np.array([[100.0, 0.0, 81.5], [0.0, 101.0, 58.25], [0.0, 0.0, 1.0]]),
                   np.array([-0.25, 0.08, 0.001, -0.0005, 0.01]), SIZE)
FISHEYE = lens.Lens('fisheye', np.array([[70.0, 0.0, 79.0], [0.0, 70.5, 60.5], [0.0, 0.0, 1.0]]),
                    np.array([0.05, -0.01, 0.002, -0.0005]), SIZE)


def _write_storage(path, fields: dict) -> str:
  """`fields` written as cv2.FileStorage writes them (the format from `path`'s extension)."""
  storage = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
  for name, value in fields.items():
    storage.write(name, value)
  storage.release()
  return str(path)


def _assert_lens(got: lens.Lens, want: lens.Lens):
  assert got.model == want.model and tuple(got.size) == tuple(want.size)
  np.testing.assert_allclose(got.camera_matrix, want.camera_matrix, rtol=1e-12)
  np.testing.assert_allclose(got.coefficients, want.coefficients, rtol=1e-12)


@pytest.mark.parametrize('ext', ['yaml', 'xml', 'json'])
@pytest.mark.parametrize('model', ['radtan', 'fisheye', 'fisheye_model', 'rational'])
def test_reads_what_cv2_filestorage_writes(tmp_path, ext, model):
  want = FISHEYE if model.startswith('fisheye') else RADTAN
  if model == 'rational':
    want = lens.Lens('radtan', RADTAN.camera_matrix, np.r_[RADTAN.coefficients, 0.001, -0.002, 0.0005], SIZE)
  fields = {'calibration_time': 'Mon Jan  1 00:00:00 2024', 'image_width': SIZE[0], 'image_height': SIZE[1],
            'board_width': 9, 'camera_matrix': want.camera_matrix,
            'distortion_coefficients': want.coefficients.reshape(-1, 1), 'avg_reprojection_error': 0.21}
  if model == 'fisheye':
    fields['distortion_model'] = 'fisheye'
  elif model == 'fisheye_model':
    fields['fisheye_model'] = 1   # as OpenCV's calibration tutorial writes a fisheye calibration
  elif model == 'rational':
    fields['distortion_model'] = 'rational_polynomial'
  path = _write_storage(tmp_path / f'calibration.{ext}', fields)
  _assert_lens(lens.read_calibration(path), want)


@pytest.mark.parametrize('ext', ['yml', 'xml', 'json'])
@pytest.mark.parametrize('want', [RADTAN, FISHEYE], ids=['radtan', 'fisheye'])
def test_write_calibration_round_trip(tmp_path, ext, want):
  path = str(tmp_path / f'out.{ext}')
  lens.write_calibration(path, want)
  _assert_lens(lens.read_calibration(path), want)


ROS_PLUMB_BOB = """image_width: 160
image_height: 120
camera_name: narrow_stereo
camera_matrix:
  rows: 3
  cols: 3
  data: [100, 0, 81.5, 0, 101, 58.25, 0, 0, 1]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [-0.25, 0.08, 0.001, -0.0005, 0.01]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1, 0, 0, 0, 1, 0, 0, 0, 1]
projection_matrix:
  rows: 3
  cols: 4
  data: [100, 0, 81.5, 0, 0, 101, 58.25, 0, 0, 0, 1, 0]
"""

# As the Python calibrator (camera_calibration's cameracalibrator.py) lays the numbers out.
ROS_EQUIDISTANT = """image_width: 160
image_height: 120
camera_name: fisheye_cam
camera_matrix:
  rows: 3
  cols: 3
  data: [  70.     ,    0.     ,   79.     ,
            0.     ,   70.5    ,   60.5    ,
            0.     ,    0.     ,    1.     ]
distortion_model: equidistant
distortion_coefficients:
  rows: 1
  cols: 4
  data: [ 0.05   , -0.01   ,  0.002  , -0.0005 ]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1., 0., 0.,
         0., 1., 0.,
         0., 0., 1.]
projection_matrix:
  rows: 3
  cols: 4
  data: [70., 0., 79., 0.,
         0., 70.5, 60.5, 0.,
         0., 0., 1., 0.]
"""


@pytest.mark.parametrize('text, want', [(ROS_PLUMB_BOB, RADTAN), (ROS_EQUIDISTANT, FISHEYE)],
                         ids=['plumb_bob', 'equidistant'])
def test_reads_ros_camera_info(tmp_path, text, want):
  path = tmp_path / 'camera_info.yaml'
  path.write_text(text)
  _assert_lens(lens.read_calibration(str(path)), want)


# As OpenCV 3 and 4 write YAML (OpenCV 5 writes `%YAML 1.2`), with the tutorial's `fisheye_model` flag.
OPENCV4_FISHEYE = """%YAML:1.0
---
calibration_time: "Mon 01 Jan 2024 00:00:00 CET"
nr_of_frames: 25
image_width: 160
image_height: 120
board_width: 9
board_height: 6
square_size: 25.
fix_aspect_ratio: 1.
flags: 14
fisheye_model: 1
camera_matrix: !!opencv-matrix
   rows: 3
   cols: 3
   dt: d
   data: [ 7.0000000000000000e+01, 0., 79., 0., 70.5, 6.0500000000000000e+01, 0., 0., 1. ]
distortion_coefficients: !!opencv-matrix
   rows: 4
   cols: 1
   dt: d
   data: [ 5.0000000000000003e-02, -1.0000000000000000e-02, 2.0000000000000000e-03, -5.0000000000000001e-04 ]
avg_reprojection_error: 2.1578384161815386e-01
"""


def test_reads_opencv4_yaml(tmp_path):
  path = tmp_path / 'out_camera_data.yml'
  path.write_text(OPENCV4_FISHEYE)
  _assert_lens(lens.read_calibration(str(path)), FISHEYE)
  path.write_text(OPENCV4_FISHEYE.replace('fisheye_model: 1', 'fisheye_model: 0').replace('rows: 4', 'rows: 8')
                  .replace('-5.0000000000000001e-04 ]', '-5.0000000000000001e-04, 0., 0., 0., 0. ]'))
  assert lens.read_calibration(str(path)).model == 'radtan'


def test_reads_the_aliases(tmp_path):
  path = _write_storage(tmp_path / 'aliases.xml', {'cameraMatrix': RADTAN.camera_matrix, 'width': SIZE[0],
                                                   'height': SIZE[1], 'distCoeffs': RADTAN.coefficients})
  _assert_lens(lens.read_calibration(path), RADTAN)
  message = tmp_path / 'camera_info_message.yaml'   # ROS's CameraInfo message as `rostopic echo` prints it
  message.write_text('height: 120\nwidth: 160\ndistortion_model: "equidistant"\nD: [0.05, -0.01, 0.002, -0.0005]\n'
                     'K: [70.0, 0.0, 79.0, 0.0, 70.5, 60.5, 0.0, 0.0, 1.0]\nR: [1, 0, 0, 0, 1, 0, 0, 0, 1]\n')
  _assert_lens(lens.read_calibration(str(message)), FISHEYE)


def test_scaled_lens_at_twice_the_size():
  scaled = lens.scale_lens(RADTAN, (320, 240))
  k = RADTAN.camera_matrix
  manual = np.array([[2 * k[0, 0], 0.0, 2 * k[0, 2] + 0.5], [0.0, 2 * k[1, 1], 2 * k[1, 2] + 0.5], [0, 0, 1]])
  np.testing.assert_allclose(scaled.camera_matrix, manual, rtol=1e-12)
  np.testing.assert_array_equal(scaled.coefficients, RADTAN.coefficients)
  assert scaled.size == (320, 240) and scaled.model == 'radtan'
  assert RADTAN.scaled((320, 240)).size == (320, 240)
  assert scaled.fov == pytest.approx(RADTAN.fov)
  assert lens.scale_lens(RADTAN, SIZE) is RADTAN
  # 1920x1080 footage resized to 854x480 is a resize with rounding, not another aspect ratio
  hd = lens.Lens('radtan', rotations.intrinsics(1920, 1080, 90.0), np.zeros(5), (1920, 1080))
  np.testing.assert_allclose(lens.scale_lens(hd, (854, 480)).camera_matrix,
                             rotations.scaled_intrinsics(hd.camera_matrix, (1920, 1080), (854, 480)))


def test_scaled_lens_of_another_aspect_ratio_is_a_user_error():
  with pytest.raises(cli.UserError) as e:
    lens.scale_lens(RADTAN, (160, 90), '--calibration')
  message = str(e.value)
  assert '\n' not in message and '--calibration' in message and '160x120' in message and '160x90' in message
  with pytest.raises(cli.UserError, match='160x120'):
    lens.Undistorter(RADTAN, (320, 180))


def _picture(size) -> np.ndarray:
  """A smooth synthetic colour frame (distorted as a lens would see the scene: any smooth picture will do)."""
  x, y = np.meshgrid(np.arange(size[0], dtype=np.float64), np.arange(size[1], dtype=np.float64))
  channels = [128 + 100 * np.sin(x / 7.0) * np.cos(y / 9.0), 128 + 90 * np.cos((x + y) / 11.0), 40 + x + y / 2]
  return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


def _interior(undistorter: lens.Undistorter, margin: int = 3) -> np.ndarray:
  valid = cv2.erode(undistorter.valid.astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8)) > 0
  valid[:margin], valid[-margin:], valid[:, :margin], valid[:, -margin:] = False, False, False, False
  assert valid.mean() > 0.5
  return valid


@pytest.mark.parametrize('model', ['radtan', 'fisheye'])
def test_undistort_matches_opencv(model):
  calibration = RADTAN if model == 'radtan' else FISHEYE
  image = _picture(SIZE)
  k, d = calibration.camera_matrix, calibration.coefficients
  if model == 'radtan':
    want = cv2.undistort(image, k, d)
  else:
    want = cv2.fisheye.undistortImage(image, k, d, Knew=k)
  undistorter = lens.Undistorter(calibration)
  got = undistorter.undistort(image)
  assert got.shape == image.shape and got.dtype == np.uint8
  interior = _interior(undistorter)
  assert np.abs(got.astype(int) - want.astype(int))[interior].max() <= 1
  assert np.abs(got.astype(int) - image.astype(int))[interior].max() > 10   # it did undistort
  np.testing.assert_array_equal(undistorter.camera_matrix, k)
  assert undistorter.fov == pytest.approx(calibration.fov)
  grey = undistorter(image[..., 0])
  assert grey.shape == SIZE[::-1]


def test_undistort_at_another_frame_size():
  big = (320, 240)
  image = _picture(big)
  scaled = lens.scale_lens(RADTAN, big)
  want = cv2.undistort(image, scaled.camera_matrix, scaled.coefficients)
  undistorter = lens.Undistorter(RADTAN, big)
  got = undistorter.undistort(image)
  assert np.abs(got.astype(int) - want.astype(int))[_interior(undistorter)].max() <= 1
  np.testing.assert_allclose(undistorter.camera_matrix, scaled.camera_matrix)


@pytest.mark.parametrize('model', ['radtan', 'fisheye'])
@pytest.mark.parametrize('balance', [0.0, 1.0])
def test_balance_takes_opencvs_camera_matrix(model, balance):
  calibration = RADTAN if model == 'radtan' else FISHEYE
  k, d = calibration.camera_matrix, calibration.coefficients
  if model == 'radtan':
    want, _ = cv2.getOptimalNewCameraMatrix(k, d, SIZE, balance, SIZE)
  else:
    want = cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(k, d, SIZE, np.eye(3), balance=balance)
  undistorter = lens.Undistorter(calibration, balance=balance)
  np.testing.assert_allclose(undistorter.camera_matrix, want, rtol=1e-9)
  assert undistorter.fov == pytest.approx(np.degrees(2 * np.arctan(SIZE[0] / 2 / want[0, 0])))
  assert undistorter.pinhole.fov == pytest.approx(undistorter.fov)
  if balance == 0.0:   # only valid pixels kept
    assert undistorter.valid[2:-2, 2:-2].all()


def test_balance_out_of_range_and_the_cache():
  with pytest.raises(cli.UserError, match='--undistort_balance'):
    lens.Undistorter(RADTAN, balance=1.5)
  first = lens.undistorter(RADTAN, (320, 240), 0.5)
  assert lens.undistorter(RADTAN, (320, 240), 0.5) is first
  assert lens.undistorter(RADTAN, (320, 240)) is not first


GOOD = {'image_width': 160, 'image_height': 120, 'camera_matrix': RADTAN.camera_matrix,
        'distortion_coefficients': RADTAN.coefficients.reshape(1, -1), 'distortion_model': 'plumb_bob'}


def _with(**changes):
  fields = dict(GOOD)
  for name, value in changes.items():
    if value is None:
      del fields[name]
    else:
      fields[name] = value
  return fields


BAD_FILES = {
    'no camera matrix': (_with(camera_matrix=None), 'camera_matrix'),
    'no coefficients': (_with(distortion_coefficients=None), 'distortion_coefficients'),
    'no width': (_with(image_width=None), 'image_width'),
    '2x3 matrix': (_with(camera_matrix=np.array([[100.0, 0, 80], [0, 100, 60]])), 'camera_matrix'),
    'negative focal': (_with(camera_matrix=np.diag([-100.0, 100.0, 1.0])), 'camera_matrix'),
    'radtan, 6 coefficients': (_with(distortion_coefficients=np.zeros((1, 6))), 'distortion_coefficients'),
    'fisheye, 5 coefficients': (_with(distortion_model='equidistant'), 'distortion_coefficients'),
    'unknown model': (_with(distortion_model='omnidirectional'), 'distortion_model'),
    'zero height': (_with(image_height=0), 'image_height'),
    'text width': (_with(image_width='wide'), 'image_width'),
}


@pytest.mark.parametrize('ext', ['yaml', 'json'])
@pytest.mark.parametrize('case', list(BAD_FILES))
def test_bad_files_are_one_line_user_errors(tmp_path, ext, case):
  fields, field = BAD_FILES[case]
  path = _write_storage(tmp_path / f'bad.{ext}', fields)
  with pytest.raises(cli.UserError) as e:
    lens.read_calibration(path, '--calibration')
  message = str(e.value)
  assert '\n' not in message and path in message and field in message and '--calibration' in message, message


@pytest.mark.parametrize('case, text, field', [
    ('garbage', 'this is not a calibration {{ at all ::', 'calibration'),
    ('binary', b'\x89PNG\r\n\x1a\n\x00\xff\xfe', 'calibration'),
    ('a list', '- 1\n- 2\n', 'calibration'),
    ('empty', '', 'calibration'),
    ('a config', 'learning_rate: 0.001\nbatch_size: 4\n', 'camera_matrix'),
    ('ros 2x3', ROS_PLUMB_BOB.replace('  rows: 3\n  cols: 3\n  data: [100, 0, 81.5, 0, 101, 58.25, 0, 0, 1]',
                                      '  rows: 2\n  cols: 3\n  data: [100, 0, 81.5, 0, 101, 58.25]'),
     'camera_matrix'),
    ('ros rows and data disagree', ROS_PLUMB_BOB.replace('cols: 5', 'cols: 4'), 'distortion_coefficients'),
    ('ros words', ROS_PLUMB_BOB.replace('[-0.25,', '[minus,'), 'distortion_coefficients'),
    ('opencv rows and data disagree', OPENCV4_FISHEYE.replace('rows: 4', 'rows: 5'), 'distortion_coefficients'),
    ('ros fisheye, 5', ROS_PLUMB_BOB.replace('plumb_bob', 'equidistant'), 'distortion_coefficients'),
])
def test_bad_text_files_are_one_line_user_errors(tmp_path, case, text, field):
  path = tmp_path / 'bad.yaml'
  path.write_bytes(text if isinstance(text, bytes) else text.encode())
  with pytest.raises(cli.UserError) as e:
    lens.read_calibration(str(path))
  message = str(e.value)
  assert '\n' not in message and str(path) in message and field in message, message


def test_missing_file_and_folder(tmp_path):
  for path, said in ((tmp_path / 'nowhere.yaml', 'no such file'), (tmp_path, 'a folder')):
    with pytest.raises(cli.UserError) as e:
      lens.read_calibration(str(path), '--calibration')
    assert str(path) in str(e.value) and said in str(e.value) and '--calibration' in str(e.value)
