"""Lenses: OpenCV's two distortion models, their calibration files, and undistortion to a pinhole.

A `Lens` is a camera matrix K (OpenCV's pixel convention: pixel centres at integer coordinates), distortion
coefficients and the image size they were calibrated at, in one of OpenCV's models:
- 'radtan': the pinhole with radial-tangential distortion, coefficients (k1, k2, p1, p2[, k3[, k4, k5, k6[, ...]]])
  (`cv2.undistort`, `cv2.initUndistortRectifyMap`); ROS calls it `plumb_bob` (`rational_polynomial` with 8).
- 'fisheye': OpenCV's fisheye (equidistant, Kannala-Brandt) model, coefficients (k1, k2, k3, k4)
  (`cv2.fisheye.*`); ROS calls it `equidistant`.

Calibration files are written as `cv2.FileStorage` writes them (`write_calibration`: `camera_matrix`,
`distortion_coefficients` as `!!opencv-matrix`, `image_width`, `image_height`, `distortion_model`). They are read
(`read_calibration`) in `cv2.FileStorage`'s three formats (YAML, XML, JSON; the fields as OpenCV's calibration
samples write them, `fisheye_model: 1` included) and as ROS `camera_info` YAML (camera_calibration_parsers'
`camera_matrix: {rows, cols, data}`, `distortion_model: plumb_bob | rational_polynomial | equidistant`; the
message's own `K`, `D`, `width`, `height` too; its rectification and projection matrices are not used: frames are
undistorted, not rectified). The coefficients are in normalised coordinates, so a lens is carried to frames of
another size by scaling K alone (`scale_lens`, the same aspect ratio only).

`Undistorter` remaps frames to the pinhole: by default the calibration's own camera matrix at the same size, or
with `balance` OpenCV's choice of another (`cv2.getOptimalNewCameraMatrix`'s alpha,
`cv2.fisheye.estimateNewCameraMatrixForUndistortRectify`'s balance: 0 keeps only valid pixels, 1 every source
pixel); its maps are those `cv2.undistort` and `cv2.fisheye.undistortImage` build (CV_16SC2, bilinear, black
outside), computed once. NumPy, OpenCV, PyYAML (ROS files; flax, orbax and ml_collections depend on it) and the
standard library only.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from depthnet_jax.common import atomic, cli, rotations

MODELS = ('radtan', 'fisheye')
MODEL_NAMES = {'radtan': 'plumb_bob', 'fisheye': 'fisheye'}   # what write_calibration writes as distortion_model
# distortion_model values read_calibration takes (lower case): OpenCV's, ROS's and Kalibr's names.
MODEL_ALIASES = {'radtan': 'radtan', 'plumb_bob': 'radtan', 'rational_polynomial': 'radtan', 'pinhole': 'radtan',
                 'radial-tangential': 'radtan', 'radial_tangential': 'radtan', 'opencv': 'radtan',
                 'fisheye': 'fisheye', 'equidistant': 'fisheye', 'equi': 'fisheye', 'kannala_brandt': 'fisheye',
                 'kannala-brandt': 'fisheye', 'opencv_fisheye': 'fisheye'}
RADTAN_COUNTS = (4, 5, 8, 12, 14)   # the coefficient counts OpenCV's radial-tangential model takes
FISHEYE_COUNT = 4


@dataclasses.dataclass(frozen=True)
class Lens:
  """A calibrated camera: `model` ('radtan' or 'fisheye'), `camera_matrix` [3, 3] float64, `coefficients` [N]
  float64 (N in RADTAN_COUNTS or FISHEYE_COUNT), `size` (width, height) in pixels of the calibrated images."""
  model: str
  camera_matrix: np.ndarray
  coefficients: np.ndarray
  size: tuple[int, int]

  @property
  def fov(self) -> float:
    """The horizontal field of view of the pinhole with this camera matrix at this size, degrees."""
    return math.degrees(2.0 * math.atan(self.size[0] / 2.0 / float(self.camera_matrix[0, 0])))

  def scaled(self, size: tuple[int, int], flag: str = '--calibration') -> Lens:
    """This lens for frames of (w, h) `size` (`scale_lens`)."""
    return scale_lens(self, size, flag)


def parse_distortion(text: str, flag: str = '--distortion') -> tuple[str, np.ndarray]:
  """'k1,k2,p1,p2,k3' (radial-tangential; 4, 5, 8, 12 or 14 numbers) or 'fisheye:k1,k2,k3,k4' -> (model,
  coefficients); a `cli.UserError` naming `flag` and the value otherwise."""
  value = str(text).strip()
  model, _, numbers = value.rpartition(':')
  model = model.strip().lower() or 'radtan'
  aliases = {'radtan': 'radtan', 'plumb_bob': 'radtan', 'radial-tangential': 'radtan', 'fisheye': 'fisheye',
             'equidistant': 'fisheye'}
  expected = ("expected k1,k2,p1,p2,k3 (OpenCV's radial-tangential model) or fisheye:k1,k2,k3,k4 (OpenCV's "
              'fisheye model)')
  if model not in aliases:
    raise cli.UserError(f'{flag}={text!r}: unknown model {model!r}; {expected}')
  model = aliases[model]
  try:
    coefficients = np.array([float(v) for v in numbers.split(',')], np.float64)
  except ValueError:
    raise cli.UserError(f'{flag}={text!r}: not a list of numbers; {expected}') from None
  counts = (FISHEYE_COUNT,) if model == 'fisheye' else RADTAN_COUNTS
  if len(coefficients) not in counts or not np.all(np.isfinite(coefficients)):
    raise cli.UserError(f'{flag}={text!r}: {len(coefficients)} coefficient(s); {expected} (finite numbers)')
  return model, coefficients


def write_calibration(path: str, lens: Lens, *, overwrite: bool = False) -> None:
  """Writes `lens` as `cv2.FileStorage` writes a calibration (YAML, XML or JSON by `path`'s extension), under a
  temporary name renamed when complete."""
  import cv2
  def write(tmp: str) -> None:
    storage = cv2.FileStorage(tmp, cv2.FILE_STORAGE_WRITE)
    try:
      storage.write('image_width', int(lens.size[0]))
      storage.write('image_height', int(lens.size[1]))
      storage.write('camera_matrix', np.asarray(lens.camera_matrix, np.float64))
      storage.write('distortion_coefficients', np.asarray(lens.coefficients, np.float64).reshape(1, -1))
      storage.write('distortion_model', MODEL_NAMES[lens.model])
    finally:
      storage.release()

  atomic.write_file(path, write, overwrite=overwrite)


# --- Reading calibrations -----------------------------------------------------------------------------------

# The names each field goes by, the first as write_calibration and OpenCV's samples write it.
CAMERA_MATRIX_FIELDS = ('camera_matrix', 'cameraMatrix', 'K', 'k')
COEFFICIENT_FIELDS = ('distortion_coefficients', 'dist_coeffs', 'distCoeffs', 'D', 'd', 'distortion_coeffs')
WIDTH_FIELDS = ('image_width', 'width')
HEIGHT_FIELDS = ('image_height', 'height')
SIZE_FIELDS = ('image_size', 'resolution')   # [width, height]
MODEL_FIELDS = ('distortion_model',)
FISHEYE_FIELDS = ('fisheye_model', 'fisheye', 'use_fisheye')   # a true number or boolean: the fisheye model
FORMATS = ("OpenCV's YAML, XML or JSON (cv2.FileStorage) or ROS camera_info YAML with camera_matrix, "
           'distortion_coefficients, image_width and image_height')


def read_calibration(path: str, flag: str = '--calibration') -> Lens:
  """The lens of the calibration file `path` (see the module docstring for the formats and fields); a
  `cli.UserError` naming `flag`, the file and the field for a missing file, one that is no calibration, a missing
  field, a camera matrix that is not 3x3 (or not finite, or of a focal length <= 0), a coefficient count the model
  does not take, or an image size that is not two positive integers."""
  path = os.fspath(path)
  where = f'{flag} {path}'
  fields = _load(path, where)
  name, value = _field(fields, CAMERA_MATRIX_FIELDS, where)
  camera_matrix = _camera_matrix(value, f'{where}: {name}')
  name, value = _field(fields, COEFFICIENT_FIELDS, where)
  coefficients = _array(value, f'{where}: {name}').ravel()
  model = _model(fields, where)
  counts = (FISHEYE_COUNT,) if model == 'fisheye' else RADTAN_COUNTS
  if coefficients.size not in counts or not np.all(np.isfinite(coefficients)):
    expected = ('4 (k1, k2, k3, k4)' if model == 'fisheye' else
                '4, 5, 8, 12 or 14 (k1, k2, p1, p2[, k3[, k4, k5, k6[, ...]]])')
    raise cli.UserError(f'{where}: {name} has {coefficients.size} coefficient(s) {_shown(coefficients)} for the '
                        f'{model} model; expected {expected} finite numbers')
  return Lens(model, camera_matrix, coefficients, _size(fields, where))


def _load(path: str, where: str) -> dict:
  """The file's top-level fields as Python values (matrices as arrays or {rows, cols, data} mappings)."""
  try:
    with open(path, 'rb') as f:
      raw = f.read()
  except FileNotFoundError:
    raise cli.UserError(f'{where}: no such file; expected a calibration file ({FORMATS})') from None
  except IsADirectoryError:
    raise cli.UserError(f'{where}: a folder; expected a calibration file ({FORMATS})') from None
  except OSError as e:
    raise cli.UserError(f'{where}: cannot be read ({e.strerror or e}); expected a readable calibration file') from None
  try:
    text = raw.decode('utf-8-sig')
  except UnicodeDecodeError:
    raise cli.UserError(f'{where}: not a text file; expected a calibration file ({FORMATS})') from None
  head = text.lstrip()
  opencv = head.startswith(('%YAML', '<')) or '!!opencv-matrix' in text
  problems = []
  for reader in ((_read_opencv, _read_yaml) if opencv else (_read_yaml, _read_opencv)):
    try:
      fields = reader(text)
    except ValueError as e:   # yaml.YAMLError and cv2.error are turned into ValueError by the readers
      problems.append(str(e))
      continue
    if isinstance(fields, dict) and fields:
      return fields
    problems.append(f'a {type(fields).__name__}, not a mapping of fields' if fields is not None else 'empty')
  problem = cli.one_line(problems[0])
  problem = problem if len(problem) <= 120 else problem[:117] + '...'
  raise cli.UserError(f'{where}: not a calibration file ({problem}); expected {FORMATS}')


def _read_yaml(text: str):
  import yaml
  try:
    return yaml.safe_load(text)
  except yaml.YAMLError as e:
    raise ValueError(f'YAML: {e}') from None


def _read_opencv(text: str):
  import cv2
  try:
    storage = cv2.FileStorage(text, cv2.FILE_STORAGE_READ | cv2.FILE_STORAGE_MEMORY)
  except (cv2.error, SystemError) as e:   # the Python binding wraps a parse error in a SystemError
    cause = e.__cause__ if isinstance(e, SystemError) and e.__cause__ is not None else e
    message = cli.one_line(cause)
    message = message.split(' error: ', 1)[-1]   # without "OpenCV(version) source-file:line:"
    raise ValueError(f'cv2.FileStorage: {message}') from None
  try:
    if not storage.isOpened():
      raise ValueError('cv2.FileStorage cannot read it')
    root = storage.root()
    return {key: _node_value(root.getNode(key)) for key in root.keys()} if root.isMap() else None
  finally:
    storage.release()


def _node_value(node):
  """A cv2.FileNode as Python: an `opencv-matrix` as an array, maps as dicts, sequences as lists."""
  import cv2
  if node.isMap():
    keys = node.keys()
    if 'dt' in keys and 'data' in keys and 'rows' in keys:
      try:
        return node.mat()
      except cv2.error:   # rows and cols that do not fit the data: said by _array, as for a ROS matrix
        pass
    return {key: _node_value(node.getNode(key)) for key in keys}
  if node.isSeq():
    return [_node_value(node.at(i)) for i in range(node.size())]
  if node.isInt():
    return int(node.real())
  if node.isReal():
    return float(node.real())
  if node.isString():
    return node.string()
  return None


def _field(fields: dict, names: tuple[str, ...], where: str, required: bool = True):
  """(name, value) of the first of `names` in `fields`; (None, None) or a `cli.UserError` if none is there."""
  for name in names:
    if name in fields and fields[name] is not None:
      return name, fields[name]
  if not required:
    return None, None
  also = f' (nor {", ".join(names[1:])})' if len(names) > 1 else ''
  found = cli.shown_names(repr(str(name)[:40]) for name in fields)
  raise cli.UserError(f'{where}: no {names[0]} field{also} among its fields {found}; expected {FORMATS}')


def _shown(values: np.ndarray) -> str:
  text = np.array2string(np.asarray(values).ravel(), precision=6, separator=', ', max_line_width=10 ** 6,
                         threshold=16)
  return text if len(text) <= 100 else text[:97] + '...'


def _array(value, where: str) -> np.ndarray:
  """A matrix field (an array, {rows, cols, data}, nested or flat numbers) as a 2-D float64 array."""
  data = value.get('data') if isinstance(value, dict) else value
  if isinstance(value, dict) and data is None:
    raise cli.UserError(f'{where}: a mapping without data ({", ".join(map(str, value))}); expected a matrix '
                        '(rows, cols, data)')
  try:
    array = np.asarray(data, np.float64)
  except (TypeError, ValueError):
    raise cli.UserError(f'{where}={str(data)[:60]!r}: not numbers; expected a matrix of numbers') from None
  if isinstance(value, dict) and ('rows' in value or 'cols' in value):
    rows, cols = value.get('rows'), value.get('cols')
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (rows, cols)) or \
        rows * cols != array.size:
      raise cli.UserError(f'{where}: rows={rows!r}, cols={cols!r} with {array.size} number(s) of data; expected '
                          'positive rows and cols whose product is the count of data')
    return array.reshape(rows, cols)
  if array.ndim > 2:
    raise cli.UserError(f'{where}: {array.ndim} dimensions {array.shape}; expected a matrix')
  return array.reshape(1, -1) if array.ndim < 2 else array


def _camera_matrix(value, where: str) -> np.ndarray:
  k = _array(value, where)
  if k.shape in ((1, 9), (9, 1)):   # a flat list of 9, as ROS's CameraInfo message has its K
    k = k.reshape(3, 3)
  if k.shape != (3, 3):
    raise cli.UserError(f'{where}: a {k.shape[0]}x{k.shape[1]} matrix {_shown(k)}; expected the 3x3 camera matrix '
                        '[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]')
  if not np.all(np.isfinite(k)) or not (k[0, 0] > 0 and k[1, 1] > 0) or \
      not np.allclose(k[2], (0.0, 0.0, 1.0), atol=1e-6) or abs(k[1, 0]) > 1e-6:
    raise cli.UserError(f'{where}={_shown(k)}: expected a camera matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]] of '
                        'finite numbers, fx > 0 and fy > 0')
  return k


def _model(fields: dict, where: str) -> str:
  """'radtan' or 'fisheye' from distortion_model, else from a fisheye flag (OpenCV's `fisheye_model: 1`)."""
  name, value = _field(fields, MODEL_FIELDS, where, required=False)
  if name is not None:
    if not isinstance(value, str) or value.strip().lower() not in MODEL_ALIASES:
      raise cli.UserError(f'{where}: {name}={value!r}; expected one of plumb_bob, rational_polynomial, radtan '
                          '(radial-tangential) or equidistant, fisheye (OpenCV\'s fisheye)')
    return MODEL_ALIASES[value.strip().lower()]
  name, value = _field(fields, FISHEYE_FIELDS, where, required=False)
  if name is None:
    return 'radtan'
  if isinstance(value, str) and value.strip().lower() in ('true', 'false', 'yes', 'no', '1', '0'):
    value = value.strip().lower() in ('true', 'yes', '1')
  if not isinstance(value, (bool, int, float)):
    raise cli.UserError(f'{where}: {name}={value!r}; expected 1 or true (the fisheye model) or 0 or false')
  return 'fisheye' if value else 'radtan'


def _size(fields: dict, where: str) -> tuple[int, int]:
  """(width, height) from image_width and image_height (or width and height, or image_size: [w, h])."""
  size_name, size = _field(fields, SIZE_FIELDS, where, required=False)
  width_name, width = _field(fields, WIDTH_FIELDS, where, required=size_name is None)
  height_name, height = _field(fields, HEIGHT_FIELDS, where, required=size_name is None)
  if width_name is None or height_name is None:
    values = np.asarray(size).ravel() if isinstance(size, (list, tuple, np.ndarray)) else np.array([size])
    if len(values) != 2:
      raise cli.UserError(f'{where}: {size_name}={size!r}; expected [width, height] in pixels')
    (width_name, width), (height_name, height) = (f'{size_name}[0]', values[0]), (f'{size_name}[1]', values[1])
  size = []
  for name, value in ((width_name, width), (height_name, height)):
    number = value.item() if isinstance(value, np.generic) else value
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number) or \
        number != int(number) or number < 1:
      raise cli.UserError(f'{where}: {name}={value!r}; expected the calibrated images\' size in pixels, a positive '
                          'integer')
    size.append(int(number))
  return size[0], size[1]


# --- Other frame sizes and undistortion ---------------------------------------------------------------------

ASPECT_TOLERANCE = 0.01   # the frames' aspect ratio may differ from the calibration's by 1 % (or 1 px rounding)


def scale_lens(lens: Lens, size: tuple[int, int], flag: str = '--calibration') -> Lens:
  """`lens` for frames of (w, h) `size`: K scaled (`rotations.scaled_intrinsics`; the coefficients, in normalised
  coordinates, stay); a `cli.UserError` naming `flag`, both sizes and both aspect ratios if the frames' aspect
  ratio is not the calibration's (a crop, not a resize)."""
  (w0, h0), (w1, h1) = (int(v) for v in lens.size), (int(v) for v in size)
  if (w0, h0) == (w1, h1):
    return lens
  sx, sy = w1 / w0, h1 / h0
  rounding = min(abs(h0 * sx - h1), abs(w0 * sy - w1)) <= 1.0
  if not rounding and abs(sx - sy) > ASPECT_TOLERANCE * max(sx, sy):
    raise cli.UserError(f'{flag}: calibrated at {w0}x{h0} (aspect {w0 / h0:.4f}) but the frames are {w1}x{h1} '
                        f'(aspect {w1 / h1:.4f}); expected frames of the calibration\'s aspect ratio (a resize of '
                        'its images, not a crop)')
  k = rotations.scaled_intrinsics(lens.camera_matrix, (w0, h0), (w1, h1))
  return Lens(lens.model, k, np.array(lens.coefficients, np.float64), (w1, h1))


class Undistorter:
  """Frames of one lens remapped to a pinhole, the maps computed once (see the module docstring).

  `Undistorter(lens, size=None, balance=None)`: frames of (w, h) `size` (None: the lens's own; another size of the
  same aspect ratio scales the lens, `scale_lens`); `balance` None keeps the calibration's camera matrix, a number
  in [0, 1] takes OpenCV's new one. `camera_matrix` [3, 3] and `fov` (horizontal, degrees, from fx and the width)
  are the output pinhole's; `valid` [H, W] bool marks the output pixels whose source lies inside the frame.
  """

  def __init__(self, lens: Lens, size: tuple[int, int] | None = None, balance: float | None = None, *,
               flag: str = '--undistort_balance', calibration_flag: str = '--calibration'):
    import cv2
    size = tuple(int(v) for v in (size if size is not None else lens.size))
    lens = scale_lens(lens, size, calibration_flag)
    if balance is not None:
      balance = cli.check_float(flag, balance, 0.0, 1.0)
    self.lens, self.size, self.balance = lens, size, balance
    k, d = np.asarray(lens.camera_matrix, np.float64), np.asarray(lens.coefficients, np.float64)
    self.camera_matrix = _new_camera_matrix(lens, balance, flag)
    if lens.model == 'fisheye':
      self._maps = cv2.fisheye.initUndistortRectifyMap(k, d, np.eye(3), self.camera_matrix, size, cv2.CV_16SC2)
    else:
      self._maps = cv2.initUndistortRectifyMap(k, d, None, self.camera_matrix, size, cv2.CV_16SC2)
    ones = np.full((size[1], size[0]), 255, np.uint8)
    self.valid = self.undistort(ones) == 255

  @property
  def fov(self) -> float:
    """The output pinhole's horizontal field of view, degrees."""
    return math.degrees(2.0 * math.atan(self.size[0] / 2.0 / float(self.camera_matrix[0, 0])))

  @property
  def pinhole(self) -> Lens:
    """The output camera as a lens without distortion."""
    return Lens('radtan', self.camera_matrix.copy(), np.zeros(5), self.size)

  def undistort(self, image: np.ndarray) -> np.ndarray:
    """`image` [H, W] or [H, W, C] (the frames' size) remapped to the pinhole: bilinear, black outside the frame
    (as `cv2.undistort` and `cv2.fisheye.undistortImage`)."""
    import cv2
    if tuple(image.shape[1::-1]) != self.size:
      raise ValueError(f'a {image.shape[1]}x{image.shape[0]} frame for an undistorter of '
                       f'{self.size[0]}x{self.size[1]} frames')
    out = cv2.remap(image, self._maps[0], self._maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return out.reshape(image.shape)

  __call__ = undistort


def _new_camera_matrix(lens: Lens, balance: float | None, flag: str) -> np.ndarray:
  """The output camera matrix: the lens's own (balance None), else OpenCV's for that balance."""
  import cv2
  k, d = np.asarray(lens.camera_matrix, np.float64), np.asarray(lens.coefficients, np.float64)
  if balance is None:
    return k.copy()
  if lens.model == 'fisheye':
    new = cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(k, d, lens.size, np.eye(3), balance=balance)
  else:
    new, _ = cv2.getOptimalNewCameraMatrix(k, d, lens.size, balance, lens.size)
  new = np.asarray(new, np.float64)
  if new.shape != (3, 3) or not np.all(np.isfinite(new)) or not (new[0, 0] > 0 and new[1, 1] > 0):
    raise cli.UserError(f'{flag}={balance!r}: OpenCV found no undistorted camera for this lens at that balance '
                        f'({_shown(new)}); expected another balance, or none (the calibration\'s camera matrix)')
  return new


_CACHE: dict = {}
CACHE_SIZE = 8


def undistorter(lens: Lens, size: tuple[int, int] | None = None, balance: float | None = None) -> Undistorter:
  """The `Undistorter` of (lens, size, balance), built once and kept (the last CACHE_SIZE)."""
  size = tuple(int(v) for v in (size if size is not None else lens.size))
  key = (lens.model, np.asarray(lens.camera_matrix, np.float64).tobytes(),
         np.asarray(lens.coefficients, np.float64).tobytes(), tuple(lens.size), size, balance)
  if key not in _CACHE:
    while len(_CACHE) >= CACHE_SIZE:
      _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = Undistorter(lens, size, balance)
  return _CACHE[key]
