"""PX4 flight logs (ULog files) for the tests, written by pyulog's own writer (`pyulog.ULog.write_ulog`).

`write_topics(path, topics)` writes any topics; `write_px4_log(path, ...)` writes a flight as PX4 logs it:
`vehicle_attitude` (timestamp, timestamp_sample, q[4]: body FRD -> NED, delta_q_reset[4], quat_reset_counter),
`vehicle_local_position` (timestamp, timestamp_sample, x, y, z in NED metres, vx, vy, vz) and `camera_capture`
(timestamp, timestamp_utc, seq, lat, lon, alt, ground_distance, q[4], result), the fields of PX4's message
definitions (msg/*.msg) that the readers use, with their types. Times are given in seconds and logged in
microseconds since boot.

The log is built in memory from pyulog's own message classes (a `MessageFormat` parsed from its definition string,
an add-logged-message record, its samples as the packed bytes a logger writes), so that what is written is what
pyulog reads back, and then written with `ULog.write_ulog`.
"""

from __future__ import annotations

import struct

import numpy as np

ATTITUDE_FIELDS = (('uint64_t', 'timestamp'), ('uint64_t', 'timestamp_sample'), ('float[4]', 'q'),
                   ('float[4]', 'delta_q_reset'), ('uint8_t', 'quat_reset_counter'))
POSITION_FIELDS = (('uint64_t', 'timestamp'), ('uint64_t', 'timestamp_sample'), ('float', 'x'), ('float', 'y'),
                   ('float', 'z'), ('float', 'vx'), ('float', 'vy'), ('float', 'vz'))
CAPTURE_FIELDS = (('uint64_t', 'timestamp'), ('uint64_t', 'timestamp_utc'), ('uint32_t', 'seq'), ('double', 'lat'),
                  ('double', 'lon'), ('float', 'alt'), ('float', 'ground_distance'), ('float[4]', 'q'),
                  ('int8_t', 'result'))
BOOT_UTC_US = 1_700_000_000_000_000   # the UTC time (microseconds) of the logs' boot, for timestamp_utc


def micros(seconds) -> np.ndarray:
  """Seconds since boot -> ULog timestamps (uint64 microseconds, rounded)."""
  return np.round(np.asarray(seconds, np.float64) * 1e6).astype(np.uint64)


def write_topics(path: str, topics: dict[str, tuple[tuple[tuple[str, str], ...], dict[str, np.ndarray]]]) -> str:
  """Writes a ULog file at `path` holding `topics`: name -> (fields as (type, name) pairs, e.g. ('float[4]', 'q'),
  values by flattened field name: 'timestamp', 'q[0]'.. ('timestamp' is required; missing values are 0)).

  A topic of no samples is logged (subscribed) without data. Returns `path`.
  """
  from pyulog import ULog
  ulog = ULog(None)
  ulog._file_version = 1
  starts = [int(np.min(v['timestamp'])) for _, v in topics.values() if len(v['timestamp'])]
  ulog._start_timestamp = min(starts, default=0)
  for msg_id, (name, (fields, values)) in enumerate(topics.items()):
    definition = f'{name}:' + ''.join(f'{t} {n};' for t, n in fields)
    ulog._message_formats[name] = ULog.MessageFormat(definition.encode(), None)
    added = ULog._MessageAddLogged(struct.pack('<BH', 0, msg_id) + name.encode(), None, ulog._message_formats)
    samples = np.zeros(len(values['timestamp']), added.dtype)
    for field in samples.dtype.names:
      if field in values:
        samples[field] = values[field]
    added.buffer = bytearray(samples.tobytes())
    ulog._data_list.append(ULog.Data(added))
  ulog.write_ulog(str(path))
  return str(path)


def _vectors(prefix: str, values, width: int) -> dict[str, np.ndarray]:
  values = np.asarray(values, np.float64).reshape(-1, width)
  return {f'{prefix}[{i}]': values[:, i] for i in range(width)}


def write_px4_log(path: str, attitude_times_s=None, quats=None, positions=None, capture_times=None, *,
                  position_times_s=None, capture_quats=None) -> str:
  """Writes a PX4-like ULog at `path` (see the module docstring); each topic only if its data is given.

  Args:
    attitude_times_s: [N] seconds since boot of the `vehicle_attitude` samples.
    quats: [N, 4] their q (w, x, y, z: body FRD -> NED).
    positions: [M, 3] `vehicle_local_position` x, y, z (NED metres); at `position_times_s` (default: the attitude
      times).
    capture_times: [K] seconds since boot of the `camera_capture` samples (seq 0..K-1), q = `capture_quats` (default
      the identity).
  Returns `path`.
  """
  topics = {}
  if attitude_times_s is not None:
    t = micros(attitude_times_s)
    topics['vehicle_attitude'] = (ATTITUDE_FIELDS, {'timestamp': t, 'timestamp_sample': t, **_vectors('q', quats, 4)})
  if positions is not None:
    t = micros(attitude_times_s if position_times_s is None else position_times_s)
    xyz = np.asarray(positions, np.float64).reshape(-1, 3)
    velocity = np.gradient(xyz, t.astype(np.float64) / 1e6, axis=0) if len(t) > 1 else np.zeros_like(xyz)
    topics['vehicle_local_position'] = (POSITION_FIELDS, {
        'timestamp': t, 'timestamp_sample': t, 'x': xyz[:, 0], 'y': xyz[:, 1], 'z': xyz[:, 2],
        'vx': velocity[:, 0], 'vy': velocity[:, 1], 'vz': velocity[:, 2]})
  if capture_times is not None:
    t = micros(capture_times)
    q = np.tile([1.0, 0.0, 0.0, 0.0], (len(t), 1)) if capture_quats is None else capture_quats
    topics['camera_capture'] = (CAPTURE_FIELDS, {
        'timestamp': t, 'timestamp_utc': t + np.uint64(BOOT_UTC_US), 'seq': np.arange(len(t)),
        'lat': np.full(len(t), 47.4), 'lon': np.full(len(t), 8.5), 'alt': np.full(len(t), 500.0),
        'ground_distance': np.full(len(t), 20.0), **_vectors('q', q, 4), 'result': np.ones(len(t))})
  return write_topics(path, topics)
