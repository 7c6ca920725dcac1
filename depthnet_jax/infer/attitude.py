"""The camera's orientation at every frame (`infer.py --attitude LOG`), for removing the rotation within a pair.

`read_attitude(path)` reads the log; `frame_times(...)` gives the frames' times on its clock; `orientations_at`
gives the camera-to-world rotation of every frame (the conventions are `depthnet_jax.common.rotations`'s: camera x
right, y down, z forward; an orientation maps camera to world coordinates; quaternions are Hamilton's, w first).

The log, one of:
- a CSV with a header: `frame` (the frame's index in the input's order from 0) or `time` (seconds), then either
  `qw,qx,qy,qz` or `roll,pitch,yaw` (degrees, Z-Y-X: R = Rz(yaw) Ry(pitch) Rx(roll)). These are the **camera's**
  orientation, taken as given (the renderer's `attitude_<pos>.csv`, `frame,time,qw,qx,qy,qz`, is one): a header
  with both `frame` and `time` is indexed by frame, the time ignored;
- a PX4 ULog (`.ulg`, or any file starting as one): `vehicle_attitude` timestamp and q[0]..q[3];
- the CSV PX4's `ulog2csv` writes of that topic (`log_vehicle_attitude_0.csv`: `timestamp` in microseconds,
  `q[0]`..`q[3]`, other columns ignored).
  The last two are the **body's** orientation (FRD -> NED): the camera's is R_body @ camera_to_body(roll, pitch,
  yaw) with `--camera_rotation ROLL,PITCH,YAW` (default 0,0,0: looking forward; 0,-90,0: looking down).
  `--camera_rotation` other than 0,0,0 with a camera CSV is a mistake (the CSV is the camera's orientation already).

Rows are checked where they are read: quaternions finite and of norm within `UNIT_TOLERANCE` of 1 (then
normalised), frames whole numbers >= 0 and times strictly increasing, at least 2 rows in a timed log. A
frame-indexed log gives frame k its own row (a frame with no row is an error); a timed one is interpolated at the
frames' times (scipy's `Slerp`: the shortest rotation between the two samples around), and a frame time outside the
log's first to last time is an error. The frames' times (`frame_times`): `--frame_times CSV` (`frame,time`: frames
0..N-1 in order, times in seconds on the log's clock, increasing), else the `.ulg`'s `camera_capture` topic
(frame k = the k-th capture, timestamp / 1e6); `--time_offset SECONDS` is added to every frame time: log time =
frame time + offset.

CSV names are matched without regard to case or surrounding spaces; fields are separated by commas (or semicolons
or tabs, as the header shows); blank lines and lines starting with `#` are skipped. Every problem is one
`cli.UserError` naming the flag, the file, the line (CSV) or topic and sample (ULog), the column, the value and
what was expected. NumPy, SciPy (the interpolation) and pyulog (a .ulg).
"""

from __future__ import annotations

import array
import csv
import dataclasses
import io
import math
import os

import numpy as np

from depthnet_jax.common import cli, rotations
from depthnet_jax.infer import flight_log
from depthnet_jax.infer.flight_log import FrameTimes

QUATERNION_COLUMNS = ('qw', 'qx', 'qy', 'qz')
EULER_COLUMNS = ('roll', 'pitch', 'yaw')
ULOG_CSV_COLUMNS = ('timestamp',) + flight_log.QUATERNION_FIELDS
TIMES_COLUMNS = ('frame', 'time')
_UNITS = {'frame': 'the frame index, 0 for the first', 'time': 'seconds', 'timestamp': 'microseconds',
          'roll': 'degrees', 'pitch': 'degrees', 'yaw': 'degrees'}


@dataclasses.dataclass(frozen=True)
class Attitude:
  """An orientation log read and checked (see the module docstring).

  Attributes:
    source: how it was given, for messages (`--attitude log.ulg`).
    path: the file (absolute).
    is_body: the orientations are the body's (FRD -> NED: .ulg, ulog2csv), else the camera's (camera-to-world).
    matrices: [R, 3, 3] the rotations of its rows.
    frames: [R] int, the rows' frames (a frame-indexed log), increasing; None for a timed one.
    times: [R] seconds of the rows (a timed log), increasing; None for a frame-indexed one.
    where: where the orientations are in the file, for messages (`topic 'vehicle_attitude'`, `columns qw..qz`).
    flag: the flag that gave it, for messages.
  """
  source: str
  path: str
  is_body: bool
  matrices: np.ndarray
  frames: np.ndarray | None = None
  times: np.ndarray | None = None
  where: str = ''
  flag: str = '--attitude'

  @property
  def timed(self) -> bool:
    return self.times is not None

  @property
  def prefix(self) -> str:
    """The flag and the file's whole path: how messages start."""
    return f'{self.flag} {self.path}'


# --- CSV tables -----------------------------------------------------------------------------------------------

def _cell(prefix: str, line: int, column: str, text: str) -> float:
  """A cell as a finite float, else the error naming it."""
  text = text.strip()
  unit = _UNITS.get(column, 'a quaternion component' if column.startswith('q') else '')
  try:
    value = float(text)
  except ValueError:
    shown = 'empty' if not text else f'{text[:40]!r} is not a number'
    raise cli.UserError(f'{prefix}, line {line}, column {column!r}: {shown}; expected a number ({unit})') from None
  if not math.isfinite(value):
    raise cli.UserError(f'{prefix}, line {line}, column {column!r}: {text[:40]!r}; expected a finite number ({unit})')
  return value


def _read_table(path: str, flag: str, choose) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
  """A CSV's header, then its rows streamed: `choose(names, line)` -> the columns to keep (or the header's error);
  returns (those columns, line numbers [R], values [R, C] float64)."""
  prefix = f'{flag} {path}'
  try:
    f = open(path, 'rb')
  except OSError as e:
    raise cli.UserError(f'{prefix}: cannot read it ({e.strerror or e}); expected a CSV text file') from None
  with f:
    text, number = io.TextIOWrapper(f, encoding='utf-8-sig', newline=''), 0
    try:
      for first in iter(text.readline, ''):
        number += 1
        if first.strip() and not first.lstrip().startswith('#'):
          break
      else:
        raise cli.UserError(f'{prefix}: empty; expected a header line and one row per sample')
      delimiter = max((',', ';', '\t'), key=first.count)
      names = [c.strip().lower() for c in next(csv.reader([first], delimiter=delimiter))]
      columns = choose(names, number)
      index = [names.index(c) for c in columns]
      lines, values = array.array('q'), array.array('d')
      reader = csv.reader(text, delimiter=delimiter)
      for row in reader:
        line = number + reader.line_num
        if not row or not any(c.strip() for c in row) or row[0].lstrip().startswith('#'):
          continue
        if len(row) <= max(index):
          missing = next(c for c, i in zip(columns, index) if i >= len(row))
          raise cli.UserError(f'{prefix}, line {line}, column {missing!r}: missing ({len(row)} field(s) for the '
                              f'header\'s {len(names)}); expected a value in every column of the header')
        values.extend(_cell(prefix, line, c, row[i]) for c, i in zip(columns, index))
        lines.append(line)
    except UnicodeDecodeError as e:
      raise cli.UserError(f'{prefix}: not UTF-8 text ({e.reason}); expected a CSV text file') from None
    except OSError as e:
      raise cli.UserError(f'{prefix}: cannot read it ({e.strerror or e}); expected a CSV text file') from None
  if not lines:
    raise cli.UserError(f'{prefix}: a header and no rows; expected one row per sample')
  return columns, np.frombuffer(lines, np.int64), np.frombuffer(values, np.float64).reshape(len(lines), -1)


def _missing(prefix: str, line: int, names: list[str], wanted: tuple[str, ...], what: str) -> cli.UserError:
  missing = [c for c in wanted if c not in names]
  return cli.UserError(f'{prefix}, line {line}: missing column(s) {", ".join(map(repr, missing))}; expected {what} '
                       f'(found {",".join(names)[:200] or "nothing"})')


def _attitude_columns(prefix: str):
  """The header's format: ulog2csv's (timestamp, q[0]..q[3]) or frame/time then qw..qz or roll,pitch,yaw."""
  def choose(names: list[str], line: int) -> tuple[str, ...]:
    if 'timestamp' in names or any(c in names for c in flight_log.QUATERNION_FIELDS):
      if not all(c in names for c in ULOG_CSV_COLUMNS):
        raise _missing(prefix, line, names, ULOG_CSV_COLUMNS, 'the columns ulog2csv writes of vehicle_attitude '
                       '(timestamp in microseconds, q[0]..q[3])')
      return ULOG_CSV_COLUMNS
    index = [c for c in TIMES_COLUMNS if c in names][:1]   # frame preferred (the renderer's CSV has both)
    for orientation in (QUATERNION_COLUMNS, EULER_COLUMNS):
      if index and all(c in names for c in orientation):
        return tuple(index) + orientation
    partial = [o for o in (QUATERNION_COLUMNS, EULER_COLUMNS) if any(c in names for c in o)]
    wanted = tuple(index or ['frame']) + (partial[0] if partial else QUATERNION_COLUMNS)
    raise _missing(prefix, line, names, wanted, 'a header with frame or time, then qw,qx,qy,qz or roll,pitch,yaw '
                   '(degrees), or the CSV ulog2csv writes of vehicle_attitude (timestamp, q[0]..q[3])')
  return choose


# --- Checks ---------------------------------------------------------------------------------------------------

def _unit_quaternions(q: np.ndarray, at, fields: str) -> np.ndarray:
  """[R, 4] quaternions checked (finite, norm within UNIT_TOLERANCE of 1) -> rotation matrices [R, 3, 3]; `at(i)`
  names row i in messages ('--attitude f.csv, line 5'), `fields` the columns ('qw,qx,qy,qz')."""
  finite = np.isfinite(q).all(axis=1)
  norm = np.linalg.norm(np.where(finite[:, None], q, 0.0), axis=1)
  bad = np.flatnonzero(~finite | (np.abs(norm - 1.0) > rotations.UNIT_TOLERANCE))
  if len(bad):
    i = int(bad[0])
    shown = ', '.join(f'{v:.6g}' for v in q[i])
    what = 'is not finite' if not finite[i] else f'has norm {norm[i]:.6g}'
    raise cli.UserError(f'{at(i)}, fields {fields}: the quaternion ({shown}) {what}; expected a unit quaternion '
                        f'(norm within {rotations.UNIT_TOLERANCE:g} of 1)')
  return rotations.quaternion_to_matrix(q)


def _increasing(values: np.ndarray, at, column: str, unit: str) -> None:
  """A `cli.UserError` at the first value that is not after the previous one."""
  bad = np.flatnonzero(np.diff(values) <= 0)
  if len(bad):
    i = int(bad[0]) + 1
    raise cli.UserError(f'{at(i)}, column {column!r}: {values[i]:.9g} is not after the previous row\'s '
                        f'{values[i - 1]:.9g}; expected strictly increasing {unit}')


def _at_least_two(count: int, prefix: str) -> None:
  if count < 2:
    raise cli.UserError(f'{prefix}: {count} row(s) of timed orientations; expected at least 2 to interpolate '
                        'between')


# --- Reading --------------------------------------------------------------------------------------------------

def read_attitude(path: str, flag: str = '--attitude') -> Attitude:
  """Reads and checks an orientation log (see the module docstring); every problem is a `cli.UserError`."""
  path = os.path.abspath(os.fspath(path))
  prefix = f'{flag} {path}'
  if os.path.isdir(path):
    raise cli.UserError(f'{prefix}: is a directory; expected a CSV or a PX4 .ulg orientation log')
  if not os.path.exists(path):
    raise cli.UserError(f'{prefix}: no such file; expected a CSV or a PX4 .ulg orientation log')
  if flight_log.is_ulog(path) or path.lower().endswith('.ulg'):
    return _from_ulog(path, flag)
  columns, lines, values = _read_table(path, flag, _attitude_columns(prefix))
  at = lambda i: f'{prefix}, line {lines[i]}'
  source = f'{flag} {os.path.basename(path)}'
  if columns == ULOG_CSV_COLUMNS:
    _at_least_two(len(lines), prefix)
    times = values[:, 0] / 1e6
    _increasing(values[:, 0], at, 'timestamp', 'timestamps (microseconds)')
    matrices = _unit_quaternions(values[:, 1:], at, ','.join(flight_log.QUATERNION_FIELDS))
    return Attitude(source, path, True, matrices, times=times, where='the ulog2csv columns q[0]..q[3]',
                    flag=flag)
  if columns[1:] == QUATERNION_COLUMNS:
    matrices = _unit_quaternions(values[:, 1:], at, ','.join(QUATERNION_COLUMNS))
  else:
    matrices = rotations.euler_to_matrix(values[:, 1], values[:, 2], values[:, 3])
  where = f'columns {",".join(columns)}'
  if columns[0] == 'time':
    _at_least_two(len(lines), prefix)
    _increasing(values[:, 0], at, 'time', 'times (seconds)')
    return Attitude(source, path, False, matrices, times=values[:, 0].copy(), where=where, flag=flag)
  frames = values[:, 0]
  bad = np.flatnonzero((frames < 0) | (frames != np.floor(frames)))
  if len(bad):
    raise cli.UserError(f'{at(int(bad[0]))}, column \'frame\': {frames[bad[0]]:g}; expected an integer >= 0 (the '
                        'frame\'s index in the input\'s order, 0 for the first)')
  _increasing(frames, at, 'frame', 'frame numbers (one row per frame, in order)')
  return Attitude(source, path, False, matrices, frames=frames.astype(np.int64), where=where, flag=flag)


def _from_ulog(path: str, flag: str) -> Attitude:
  """`vehicle_attitude` of a ULog: timed body orientations."""
  topic = flight_log.ATTITUDE_TOPIC
  columns = flight_log.read_topic(path, topic, flight_log.QUATERNION_FIELDS, flag)
  where = f'{flag} {path}, topic {topic!r}'
  times = flight_log.seconds(columns['timestamp'])
  if len(times) < 2:
    raise cli.UserError(f'{where}: {len(times)} sample; expected at least 2 to interpolate between')
  flight_log.check_increasing(times, where)
  q = np.stack([columns[f].astype(np.float64) for f in flight_log.QUATERNION_FIELDS], axis=1)
  matrices = _unit_quaternions(q, lambda i: f'{where}, sample {i}', ','.join(flight_log.QUATERNION_FIELDS))
  return Attitude(f'{flag} {os.path.basename(path)}', path, True, matrices, times=times, where=f'topic {topic!r}',
                  flag=flag)


def frame_times(times_csv: str | None = None, ulog: str | None = None, time_offset: float = 0.0, *,
                ulog_flag: str = '--attitude', flag: str = '--frame_times') -> FrameTimes:
  """The frames' times on the log's clock: `times_csv` (`--frame_times`: frame,time rows for frames 0..N-1 in
  order, seconds, increasing), else the `camera_capture` topic of the ULog `ulog` (given by `ulog_flag`; frame k =
  the k-th capture), plus `time_offset` seconds (log time = frame time + offset). A `cli.UserError` for every
  problem, and if neither is given."""
  if times_csv is not None:
    path = os.path.abspath(os.fspath(times_csv))
    prefix = f'{flag} {path}'
    if os.path.isdir(path) or not os.path.exists(path):
      raise cli.UserError(f'{prefix}: {"is a directory" if os.path.isdir(path) else "no such file"}; expected a '
                          'CSV of frame,time (seconds on the log\'s clock) per frame')

    def choose(names: list[str], line: int) -> tuple[str, ...]:
      if not all(c in names for c in TIMES_COLUMNS):
        raise _missing(prefix, line, names, TIMES_COLUMNS, 'frame,time (seconds on the log\'s clock) per frame')
      return TIMES_COLUMNS
    _, lines, values = _read_table(path, flag, choose)
    at = lambda i: f'{prefix}, line {lines[i]}'
    wrong = np.flatnonzero(values[:, 0] != np.arange(len(values)))
    if len(wrong):
      i = int(wrong[0])
      raise cli.UserError(f'{at(i)}, column \'frame\': {values[i, 0]:g}; expected {i} (one row per frame, frames '
                          'numbered from 0 in the input\'s order, without gaps)')
    _increasing(values[:, 1], at, 'time', 'times (seconds)')
    times, source = values[:, 1].copy(), f'{flag} {os.path.basename(path)}'
  elif ulog is not None:
    topic = flight_log.CAPTURE_TOPIC
    columns = flight_log.read_topic(ulog, topic, ('timestamp',), ulog_flag)
    times = flight_log.seconds(columns['timestamp'])
    flight_log.check_increasing(times, f'{ulog_flag} {os.path.abspath(ulog)}, topic {topic!r}')
    source = f'{topic} of {ulog_flag} {os.path.basename(ulog)}'
  else:
    raise cli.UserError(f'{flag}: not given, and no .ulg to take the camera_capture times from; expected --frame_times '
                        'CSV (frame,time: seconds on the log\'s clock) for a timed log')
  offset = cli.check_float('--time_offset', time_offset)
  if offset:
    source += f' + --time_offset {offset:g}'
  return FrameTimes(times + offset, source)


def orientations_at(attitude: Attitude, num_frames: int | None = None, frame_times=None,
                    camera_rotation=(0.0, 0.0, 0.0), flag: str = '--camera_rotation') -> np.ndarray:
  """[N, 3, 3] camera-to-world rotations of frames 0..N-1 (see the module docstring).

  N is `num_frames`, or where not known (a video not counted), every frame the log covers: a frame-indexed log's
  frames from 0 on, a timed one's frame times. `frame_times` (`FrameTimes` or seconds on the log's clock) are used
  only by a timed log. `camera_rotation` (roll, pitch, yaw degrees of the camera on the body) applies to a body log
  (.ulg, ulog2csv): R_body @ camera_to_body(...); with a camera CSV only 0,0,0 is accepted.
  """
  angles = tuple(float(a) for a in camera_rotation)
  if not attitude.is_body and any(angles):
    raise cli.UserError(f'{flag}={",".join(f"{a:g}" for a in angles)}: applies to body orientations (a .ulg or a '
                        f'ulog2csv CSV) only, and {attitude.prefix} gives the camera\'s own orientation '
                        f'({attitude.where}); expected no {flag} (or 0,0,0)')
  mount = rotations.camera_to_body(*angles) if attitude.is_body else np.eye(3)
  if not attitude.timed:
    return _by_frame(attitude, num_frames) @ mount
  if frame_times is None:
    raise cli.UserError(f'{attitude.prefix}: orientations by time ({attitude.where}) need the frames\' times; '
                        'expected --frame_times CSV (frame,time: seconds on the log\'s clock)')
  times, source = flight_log.as_times(frame_times)
  if num_frames is not None:
    if len(times) < num_frames:
      raise cli.UserError(f'{source}: times for {len(times)} frames but the input has {num_frames}; expected one '
                          'per frame')
    times = times[:num_frames]
  from scipy.spatial.transform import Rotation, Slerp
  times = flight_log.check_within(times, attitude.times, f'{attitude.prefix} ({attitude.where})', source)
  slerp = Slerp(attitude.times, Rotation.from_matrix(attitude.matrices))
  return slerp(times).as_matrix().reshape(-1, 3, 3) @ mount


def _by_frame(attitude: Attitude, num_frames: int | None) -> np.ndarray:
  """A frame-indexed log's rotations of frames 0..N-1 (N: `num_frames`, else its last frame + 1); a frame with no
  row is a `cli.UserError`."""
  frames = attitude.frames
  needed = int(frames[-1]) + 1 if num_frames is None else int(num_frames)
  wanted = np.arange(needed)
  index = np.minimum(np.searchsorted(frames, wanted), len(frames) - 1)
  absent = np.flatnonzero(frames[index] != wanted)
  if len(absent):
    k = int(absent[0])
    raise cli.UserError(f'{attitude.prefix}: no row for frame {k} (the log has {len(frames)} rows, frames '
                        f'{frames[0]} to {frames[-1]}); expected one row per frame of the input, frames numbered '
                        'from 0 in the input\'s order')
  return attitude.matrices[index]
