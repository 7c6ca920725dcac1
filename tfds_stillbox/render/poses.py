"""Camera poses of the Still Box renderer beyond pure translation: a turning camera (rotation_path), a flight read
from a CSV file (read_trajectory), and a world seen from a posed camera (in_camera).

The conventions are depthnet_jax.common.rotations': camera x right, y down, z forward; an orientation is the
camera-to-world rotation R (a ray d in the camera is R d in the world), as a Hamilton quaternion [w, x, y, z].

A trajectory file is a CSV file with the header TRAJECTORY_HEADER (the columns in any order, others ignored) and
one row per frame: `frame` 0, 1, 2, ... in order, `time` in seconds (increasing), the camera position `x, y, z` in
metres and its orientation `qw, qx, qy, qz` (camera-to-world; |q| within rotations.UNIT_TOLERANCE of 1,
normalised here). A mistake is a `cli.UserError` naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from typing import NamedTuple

import numpy as np

from depthnet_jax.common import rotations
from depthnet_jax.common.cli import UserError

TRAJECTORY_HEADER = ('frame', 'time', 'x', 'y', 'z', 'qw', 'qx', 'qy', 'qz')
ATTITUDE_HEADER = 'frame,time,qw,qx,qy,qz'  # the attitude log's columns (export.write_attitude)
MIN_ROWS = 2  # a trajectory of one pose has no motion


class Trajectory(NamedTuple):
  """Poses of a flight: `times` [T] s (increasing), `positions` [T, 3] m, `quaternions` [T, 4] unit (w, x, y, z,
  camera-to-world), all float64; `source`: where it was read from (for messages and metadata)."""
  times: np.ndarray
  positions: np.ndarray
  quaternions: np.ndarray
  source: str = ''


def rotation_path(seed_sequence: np.random.SeedSequence, num_frames: int, degrees: float) -> np.ndarray:
  """[T, 3, 3] camera-to-world orientations of a camera turning `degrees` per frame about one random unit axis:
  frame i is `rotations.axis_angle(axis, i * degrees)` (frame 0 the identity). The axis is drawn from a stream of
  its own (the first child of `seed_sequence`), so that the scene's other draws do not change."""
  axis = np.random.default_rng(seed_sequence.spawn(1)[0]).normal(size=3)
  axis /= np.linalg.norm(axis)
  return np.stack([rotations.axis_angle(axis, i * float(degrees)) for i in range(int(num_frames))])


def as_trajectory(times, positions, quaternions, source: str = '') -> Trajectory:
  """A Trajectory of arrays (quaternions normalised), ValueError for shapes that do not fit or values that are no
  trajectory (fewer than MIN_ROWS poses, times not increasing, quaternions not of unit norm)."""
  times = np.asarray(times, np.float64).reshape(-1)
  positions = np.asarray(positions, np.float64).reshape(-1, 3)
  quaternions = np.asarray(quaternions, np.float64).reshape(-1, 4)
  if not len(times) == len(positions) == len(quaternions) or len(times) < MIN_ROWS:
    raise ValueError(f'trajectory {source}: expected >= {MIN_ROWS} poses of a time, a position and a quaternion')
  norms = np.linalg.norm(quaternions, axis=-1)
  if not (np.all(np.isfinite(times)) and np.all(np.isfinite(positions)) and np.all(np.diff(times) > 0)
          and np.all(np.abs(norms - 1.0) <= rotations.UNIT_TOLERANCE)):
    raise ValueError(f'trajectory {source}: expected increasing times, finite positions and unit quaternions')
  return Trajectory(times, positions, quaternions / norms[:, None], source)


def read_trajectory(path: str, flag: str = '--trajectory') -> Trajectory:
  """The Trajectory of the CSV file `path` (see the module docstring); a UserError naming `flag`, the file, the
  line and the column otherwise."""
  where = f'{flag} {path}'
  try:
    with open(path, newline='', encoding='utf-8-sig') as f:
      rows = list(csv.reader(f))
  except (OSError, UnicodeDecodeError) as e:
    reason = getattr(e, 'strerror', None) or str(e)
    raise UserError(f'{where}: cannot be read ({reason}); expected a CSV file with the columns '
                    f'{",".join(TRAJECTORY_HEADER)}') from None
  header = [name.strip().lower() for name in rows[0]] if rows else []
  missing = [name for name in TRAJECTORY_HEADER if name not in header]
  if missing:
    raise UserError(f'{where}: line 1: no column {", ".join(missing)} in the header {",".join(header)!r}; '
                    f'expected the columns {",".join(TRAJECTORY_HEADER)}')
  index = {name: header.index(name) for name in TRAJECTORY_HEADER}
  table = []
  for line, row in enumerate(rows[1:], start=2):
    if not any(cell.strip() for cell in row):
      continue  # a blank line (the file's end)
    table.append((line, [_cell(where, line, row, name, index[name]) for name in TRAJECTORY_HEADER]))
  return _checked(where, table, path)


def _cell(where: str, line: int, row: list[str], name: str, column: int) -> float:
  """The number in column `name` of a row, a UserError naming the line and column if it is none."""
  text = row[column].strip() if column < len(row) else ''
  try:
    value = float(text)
  except ValueError:
    value = math.nan
  if not math.isfinite(value):
    raise UserError(f'{where}: line {line}, column {name}: {text!r} is not a finite number; expected one')
  return value


def _checked(where: str, table: list[tuple[int, list[float]]], path: str) -> Trajectory:
  """The rows (line, [frame, time, x, y, z, qw, qx, qy, qz]) as a Trajectory, each checked."""
  if len(table) < MIN_ROWS:
    raise UserError(f'{where}: {len(table)} row(s) of poses; expected at least {MIN_ROWS} (one per frame)')
  for k, (line, values) in enumerate(table):
    frame, time = values[0], values[1]
    if frame != k:
      raise UserError(f'{where}: line {line}, column frame: {frame:g}; expected {k} (frames 0, 1, 2, ... in order)')
    if k and time <= table[k - 1][1][1]:
      raise UserError(f'{where}: line {line}, column time: {time:g} after {table[k - 1][1][1]:g}; expected '
                      'increasing times')
    norm = math.sqrt(sum(v * v for v in values[5:]))
    if abs(norm - 1.0) > rotations.UNIT_TOLERANCE:
      raise UserError(f'{where}: line {line}, columns qw,qx,qy,qz: |q| = {norm:.6g}; expected a unit quaternion '
                      f'(|q| within {rotations.UNIT_TOLERANCE:g} of 1)')
  values = np.array([v for _, v in table], np.float64)
  return as_trajectory(values[:, 1], values[:, 2:5], values[:, 5:9], path)


def in_camera(objects, light, position, rotation) -> tuple[tuple, np.ndarray]:
  """The world (its shapes and light direction) in the coordinates of a camera at `position` with camera-to-world
  `rotation`: centres R^T (c - p), shape rotations R^T rot, light R^T light. The shapes' own (texture) frames move
  with them, so that each looks the same from every pose."""
  r = np.asarray(rotation, np.float64)
  p = np.asarray(position, np.float64)
  moved = tuple(dataclasses.replace(shape, center=r.T @ (shape.center - p), rotation=r.T @ shape.rotation)
                for shape in objects)
  return moved, r.T @ np.asarray(light, np.float64)
