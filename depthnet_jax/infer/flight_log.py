"""PX4 flight logs (ULog `.ulg` files, read with pyulog) for infer.py: the topics it takes the flight from.

- `read_topic(path, topic, fields)`: a topic's fields as arrays (the first instance, multi_id 0), `timestamp` in
  microseconds since boot; every problem is one `cli.UserError` naming the file, the topic and the field: not a
  ULog, no such topic, no such field, no samples.
- The topics used (their PX4 message definitions, msg/*.msg): `vehicle_attitude` (timestamp, q[0]..q[3]: the body
  FRD -> NED rotation, w first), `vehicle_local_position` (timestamp, x, y, z: NED metres from the local origin),
  `camera_capture` (timestamp: the time of the trigger in microseconds since boot, the frames' clock; its
  `timestamp_utc` is GPS time and is not used; `seq` counts the images).
- `positions_at(path, frame_times)` (`--motion LOG.ulg`): `vehicle_local_position` x, y, z linearly interpolated at
  the frames' times.
- `FrameTimes`: the frames' times on the log's clock (seconds) and where they came from, for messages;
  `check_within` is the error of a frame time outside a log's times.

Times are seconds since boot (timestamp / 1e6), the log's clock. NumPy and pyulog (imported when a log is read).
"""

from __future__ import annotations

import dataclasses
import os
import struct

import numpy as np

from depthnet_jax.common import cli

ULOG_MAGIC = b'ULog\x01\x12\x35'   # the first 7 bytes of every ULog file (pyulog's `ULog.HEADER_BYTES`)
ATTITUDE_TOPIC = 'vehicle_attitude'
POSITION_TOPIC = 'vehicle_local_position'
CAPTURE_TOPIC = 'camera_capture'
QUATERNION_FIELDS = ('q[0]', 'q[1]', 'q[2]', 'q[3]')
POSITION_FIELDS = ('x', 'y', 'z')
TIME_TOLERANCE = 1e-6   # seconds (one ULog tick): a frame time this close outside a log's times counts as inside


@dataclasses.dataclass(frozen=True)
class FrameTimes:
  """The frames' times on the log's clock.

  Attributes:
    times: [N] seconds of frames 0..N-1 (the time offset included), increasing.
    source: where they came from, for messages (`--frame_times t.csv`, `camera_capture of f.ulg`, with the offset).
  """
  times: np.ndarray
  source: str


def as_times(frame_times) -> tuple[np.ndarray, str]:
  """(times [N] seconds, their source for messages) of a `FrameTimes` or an array of seconds."""
  if isinstance(frame_times, FrameTimes):
    return np.asarray(frame_times.times, np.float64), frame_times.source
  return np.asarray(frame_times, np.float64).reshape(-1), 'the frame times'


def is_ulog(path: str) -> bool:
  """Whether the file at `path` starts as a ULog does (False if it cannot be read: its reader says why)."""
  try:
    with open(path, 'rb') as f:
      return f.read(len(ULOG_MAGIC)) == ULOG_MAGIC
  except OSError:
    return False


def _check_file(path: str, flag: str) -> str:
  path = os.path.abspath(os.fspath(path))
  if os.path.isdir(path):
    raise cli.UserError(f'{flag} {path}: is a directory; expected a PX4 ULog file (.ulg)')
  if not os.path.exists(path):
    raise cli.UserError(f'{flag} {path}: no such file; expected a PX4 ULog file (.ulg)')
  return path


def _load(path: str, topic: str, flag: str):
  """pyulog's `ULog` of `path` with only `topic` loaded; a `cli.UserError` if it is not a ULog."""
  from pyulog import ULog
  from pyulog.exceptions import ULogException
  try:
    with open(path, 'rb') as f:
      magic = f.read(len(ULOG_MAGIC))
  except OSError as e:
    raise cli.UserError(f'{flag} {path}: cannot read it ({e.strerror or e}); expected a PX4 ULog file') from None
  if magic != ULOG_MAGIC:
    start = magic.decode('latin-1').encode('unicode_escape').decode('ascii')
    raise cli.UserError(f'{flag} {path}: not a ULog file (no ULog header: it starts with {start!r}); expected a PX4 '
                        'flight log (.ulg)')
  try:
    return ULog(path, [topic])
  except (ULogException, struct.error, ValueError, IndexError, KeyError, UnicodeDecodeError) as e:
    raise cli.UserError(f'{flag} {path}: cannot be read as a ULog ({cli.one_line(e)}); expected a PX4 flight log '
                        '(.ulg)') from None
  except OSError as e:
    raise cli.UserError(f'{flag} {path}: cannot read it ({e.strerror or e}); expected a PX4 ULog file') from None


def read_topic(path: str, topic: str, fields: tuple[str, ...], flag: str = '--attitude') -> dict[str, np.ndarray]:
  """`fields` of `topic`'s first instance in the ULog at `path`, by name ('timestamp', 'q[0]', 'x'), in the log's
  order; `timestamp` is always included (uint64 microseconds). Every problem is a `cli.UserError` naming `flag`,
  the file, the topic and the field."""
  path = _check_file(path, flag)
  ulog = _load(path, topic, flag)
  where = f'{flag} {path}, topic {topic!r}'
  data = [d for d in ulog.data_list if d.name == topic]
  if not data:
    if topic in ulog.message_formats:
      raise cli.UserError(f'{where}: no samples (its format is defined but nothing was logged); expected a log '
                          f'with {topic} samples')
    raise cli.UserError(f'{where}: not in the log; expected a PX4 log with the {topic} topic (is it in the '
                        'logger\'s topics, e.g. SDLOG_PROFILE?)')
  chosen = min(data, key=lambda d: d.multi_id)
  wanted = ('timestamp',) + tuple(f for f in fields if f != 'timestamp')
  missing = [f for f in wanted if f not in chosen.data]
  if missing:
    raise cli.UserError(f'{where}, field {missing[0]!r}: missing (the topic has {cli.shown_names(chosen.data, 8)}); '
                        f'expected the fields {", ".join(wanted)}')
  if not len(chosen.data['timestamp']):
    raise cli.UserError(f'{where}: no samples; expected a log with {topic} samples')
  return {f: np.asarray(chosen.data[f]) for f in wanted}


def check_increasing(times: np.ndarray, where: str) -> None:
  """A `cli.UserError` at the first sample of a topic whose time (seconds) is not after the one before (`where`
  names the file and the topic)."""
  bad = np.flatnonzero(np.diff(times) <= 0)
  if len(bad):
    i = int(bad[0]) + 1
    raise cli.UserError(f'{where}, sample {i}, field \'timestamp\': {times[i] * 1e6:.0f} us is not after sample '
                        f'{i - 1}\'s {times[i - 1] * 1e6:.0f} us; expected strictly increasing times')


def check_within(times: np.ndarray, log_times: np.ndarray, where: str, source: str) -> np.ndarray:
  """`times` clipped into the log's [first, last] time, or a `cli.UserError` naming the first frame outside it
  (by more than TIME_TOLERANCE), its time and the log's range (`where`: the log; `source`: the frame times')."""
  first, last = float(log_times[0]), float(log_times[-1])
  outside = np.flatnonzero((times < first - TIME_TOLERANCE) | (times > last + TIME_TOLERANCE))
  if len(outside):
    k = int(outside[0])
    raise cli.UserError(f'{where}: frame {k} at {times[k]:.6f} s ({source}) is outside the log\'s times '
                        f'{first:.6f} to {last:.6f} s; expected every frame time within the log (is --time_offset '
                        'right?)')
  return np.clip(times, first, last)


def positions_at(path: str, frame_times, flag: str = '--motion') -> np.ndarray:
  """[N, 3] `vehicle_local_position` x, y, z (NED metres) of the ULog at `path`, linearly interpolated at the N
  frame times (`FrameTimes` or seconds on the log's clock). A NaN sample (an invalid estimate) makes the positions
  between it and its neighbours NaN (unknown: those pairs are skipped); a frame outside the log's times, an
  infinite value, times not increasing or fewer than 2 samples are a `cli.UserError`."""
  times, source = as_times(frame_times)
  columns = read_topic(path, POSITION_TOPIC, POSITION_FIELDS, flag)
  where = f'{flag} {os.path.abspath(path)}, topic {POSITION_TOPIC!r}'
  log_times = seconds(columns['timestamp'])
  if len(log_times) < 2:
    raise cli.UserError(f'{where}: {len(log_times)} sample; expected at least 2 to interpolate between')
  check_increasing(log_times, where)
  xyz = np.stack([columns[f].astype(np.float64) for f in POSITION_FIELDS], axis=1)
  bad = np.argwhere(np.isinf(xyz))
  if len(bad):
    i, j = map(int, bad[0])
    raise cli.UserError(f'{where}, sample {i}, field {POSITION_FIELDS[j]!r}: {xyz[i, j]}; expected a finite '
                        'position in metres (or NaN where unknown)')
  times = check_within(times, log_times, where, source)
  right = np.clip(np.searchsorted(log_times, times, side='right'), 1, len(log_times) - 1)
  left = right - 1
  weight = ((times - log_times[left]) / (log_times[right] - log_times[left]))[:, None]
  at_left = weight[:, 0] == 0.0   # exactly on a sample: that sample alone (a NaN neighbour does not matter)
  mixed = xyz[left] * (1.0 - weight) + xyz[right] * weight
  return np.where(at_left[:, None], xyz[left], np.where((weight == 1.0), xyz[right], mixed))


def seconds(timestamps: np.ndarray) -> np.ndarray:
  """ULog timestamps (microseconds since boot) -> seconds."""
  return np.asarray(timestamps).astype(np.float64) / 1e6

