"""The flight's motion: how far the camera travelled between two frames, so that depth can be made metric.

DepthNet's depths assume the displacement it was trained with between a pair's two frames (its checkpoint's
`displacement`, 0.3 m for Still Box: `conventions.NOMINAL_DISPLACEMENT`). A pair whose frames are d metres apart
sees d / nominal times the parallax, so the network's output times d / nominal is the depth in metres (the
authors' later evaluation code does this with ground-truth poses). Where d comes from:

- `constant(M)` (`infer.py --displacement M`): the camera moves M metres between consecutive frames, so a pair
  k frames apart is k x M metres apart.
- `read_log(path)` (`infer.py --motion CSV`): a per-frame log with a header line, one of
  - positions: columns `frame,x,y,z` (metres, any fixed axes: only distances are used); `frame` is the frame's
    index in the input's order from 0 (a folder's frames sorted by name, a video's in decoding order); one row per
    frame, in any order; a pair (i, j) is |p_j - p_i| apart (the straight line: the translation the network sees);
  - velocities: columns `time,vx,vy,vz` (seconds, metres per second); row i is frame i; times increase; the
    displacement of a pair (i, j) is the length of the integral of the velocity from t_i to t_j (trapezoid rule,
    as the authors' dataset tools integrate speeds when GPS is invalid).
  Other columns are ignored; names are matched without regard to case or surrounding spaces; fields are separated
  by commas (or semicolons, or tabs, as the header line shows); blank lines and lines starting with `#` are
  skipped. An empty cell in x/y/z (vx/vy/vz) means the value is unknown there: pairs that
  need it have no displacement and are skipped (counted), never divided by zero. Anything else that is not a number
  (a missing column, a non-numeric value, times that do not increase, fewer rows than frames) is a `MotionError`
  naming the file, the line and the column.

Standard library and NumPy only (imported before JAX starts).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os

import numpy as np

from depthnet_jax.common import cli

MAX_DISPLACEMENT = 1000.0      # metres per frame beyond which --displacement is a typo
# Displacements at or below this (metres) count as zero: a hovering camera, whose pairs hold no parallax.
MIN_DISPLACEMENT = 1e-6

POSITION_COLUMNS = ('frame', 'x', 'y', 'z')
VELOCITY_COLUMNS = ('time', 'vx', 'vy', 'vz')


class MotionError(cli.UserError):
  """A motion log or displacement that cannot be used; the message names the file, line and column."""


@dataclasses.dataclass(frozen=True)
class Motion:
  """Where the camera was: a constant per-frame displacement, positions per frame, or velocity integrals.

  Attributes:
    source: how it was given, for messages and the summary (`--displacement 0.2`, `--motion log.csv`).
    kind: 'constant', 'positions' or 'velocities'.
    per_frame: metres per frame ('constant').
    positions: [N, 3] metres per frame, NaN where unknown ('positions').
    steps: [N - 1, 3] metres travelled from frame i to i + 1, NaN where unknown ('velocities').
  """
  source: str
  kind: str
  per_frame: float | None = None
  positions: np.ndarray | None = None
  steps: np.ndarray | None = None
  path: str | None = None

  @property
  def frames(self) -> int | None:
    """The number of frames the log covers (None: any number)."""
    if self.kind == 'positions':
      return len(self.positions)
    if self.kind == 'velocities':
      return len(self.steps) + 1
    return None

  def displacement(self, first: int, second: int) -> float:
    """Metres between frames `first` and `second` (indices in the input's order); NaN when unknown."""
    if self.kind == 'constant':
      return abs(second - first) * self.per_frame
    i, j = sorted((first, second))
    if j >= self.frames:
      return math.nan
    if self.kind == 'positions':
      return float(np.linalg.norm(self.positions[j] - self.positions[i]))
    return float(np.linalg.norm(self.steps[i:j].sum(axis=0)))

  def check_covers(self, frames: int, what: str) -> None:
    """A `MotionError` if the log has fewer rows than the input has frames (`what` names the input)."""
    if self.frames is not None and self.frames < frames:
      if self.kind == 'positions':
        raise MotionError(f'--motion {self.path}: no row for frame {self.frames}: the log covers frames 0 to '
                          f'{self.frames - 1} but {what} has {frames} frames; expected one row per frame '
                          '(frame numbers from 0 in the input\'s order)')
      raise MotionError(f'--motion {self.path}: {self.frames} rows of velocities but {what} has {frames} frames; '
                        'expected one row per frame (row i is frame i)')


def usable(d: float) -> bool:
  """Whether a pair's displacement can scale its depth (known and not zero)."""
  return math.isfinite(d) and d > MIN_DISPLACEMENT


def constant(per_frame) -> Motion:
  """`--displacement M`: M metres between consecutive frames, checked."""
  value = cli.check_float('--displacement', per_frame, 0, MAX_DISPLACEMENT, low_open=True)
  return Motion(source=f'--displacement {value:g}', kind='constant', per_frame=float(value))


def _number(path: str, line: int, column: str, text: str, *, blank_ok: bool, unit: str) -> float:
  text = text.strip()
  if not text:
    if blank_ok:
      return math.nan
    raise MotionError(f'--motion {path}, line {line}, column {column!r}: empty; expected a number ({unit})')
  try:
    value = float(text)
  except ValueError:
    raise MotionError(f'--motion {path}, line {line}, column {column!r}: {text[:40]!r} is not a number; expected '
                      f'a number ({unit})') from None
  if math.isnan(value) and blank_ok:
    return math.nan
  if not math.isfinite(value):
    raise MotionError(f'--motion {path}, line {line}, column {column!r}: {text[:40]!r}; expected a finite number '
                      f'({unit}), or an empty cell where it is unknown')
  return value


def _header_error(path: str, line: int, names: list[str]) -> MotionError:
  have = set(names)
  for columns, kind in ((POSITION_COLUMNS, 'positions'), (VELOCITY_COLUMNS, 'velocities')):
    present = [c for c in columns if c in have]
    if len(present) >= 2:   # this format was meant: name what it lacks
      missing = [c for c in columns if c not in have]
      return MotionError(f'--motion {path}, line {line}: missing column(s) {", ".join(map(repr, missing))} of the '
                         f'{kind} format; expected a header with {",".join(columns)} (found '
                         f'{",".join(names) or "nothing"})')
  return MotionError(f'--motion {path}, line {line}: header {",".join(names)[:200]!r}; expected the columns '
                     f'{",".join(POSITION_COLUMNS)} (positions in metres) or {",".join(VELOCITY_COLUMNS)} (time in '
                     's, velocities in m/s)')


def read_log(path: str) -> Motion:
  """Reads a motion log (see the module docstring); every problem is a `MotionError` naming file, line, column."""
  path = os.path.abspath(os.fspath(path))
  rows = _rows(path)
  header_line, header = rows[0]
  kind, columns, index = _header(path, header_line, header)
  values = _values(path, rows[1:], columns, index, len(header))
  return _positions(path, values) if kind == 'positions' else _velocities(path, values)


def _rows(path: str) -> list[tuple[int, list[str]]]:
  """(line number, fields) of every line that is neither blank nor a comment; the header first."""
  if os.path.isdir(path):
    raise MotionError(f'--motion {path}: is a directory; expected a CSV file')
  try:
    with open(path, newline='', encoding='utf-8-sig') as f:
      lines = f.read().splitlines()
  except FileNotFoundError:
    raise MotionError(f'--motion {path}: no such file; expected a CSV motion log') from None
  except (OSError, UnicodeDecodeError) as e:
    raise MotionError(f'--motion {path}: cannot read it ({getattr(e, "strerror", None) or cli.one_line(e)}); '
                      'expected a CSV text file') from None
  # the delimiter that splits the header (the first line that is not blank or a comment) most: ',' ';' or tab
  header_text = next((t for t in lines if t.strip() and not t.lstrip().startswith('#')), '')
  delimiter = max((',', ';', '\t'), key=header_text.count)
  rows = [(n, row) for n, row in zip(range(1, len(lines) + 1), csv.reader(lines, delimiter=delimiter))
          if row and any(c.strip() for c in row) and not row[0].lstrip().startswith('#')]
  if not rows:
    raise MotionError(f'--motion {path}: empty; expected a header line ({",".join(POSITION_COLUMNS)} or '
                      f'{",".join(VELOCITY_COLUMNS)}) and one row per frame')
  return rows


def _header(path: str, line: int, header: list[str]) -> tuple[str, tuple[str, ...], dict[str, int]]:
  """The header's format: (kind, its columns, column -> field index)."""
  names = [c.strip().lower() for c in header]
  if all(c in names for c in POSITION_COLUMNS):
    kind, columns = 'positions', POSITION_COLUMNS
  elif all(c in names for c in VELOCITY_COLUMNS):
    kind, columns = 'velocities', VELOCITY_COLUMNS
  else:
    raise _header_error(path, line, names)
  return kind, columns, {c: names.index(c) for c in columns}


def _values(path: str, data: list[tuple[int, list[str]]], columns: tuple[str, ...], index: dict[str, int],
            width: int) -> list[tuple[int, list[str]]]:
  """(line number, its cells of `columns`) of every row below the header (of `width` fields)."""
  if not data:
    raise MotionError(f'--motion {path}: a header and no rows; expected one row per frame')
  values = []
  for line, row in data:
    if len(row) <= max(index.values()):
      missing = [c for c in columns if index[c] >= len(row)]
      raise MotionError(f'--motion {path}, line {line}, column {missing[0]!r}: missing ({len(row)} field(s) for '
                        f'the header\'s {width}); expected a value in every column of the header')
    values.append((line, [row[index[c]] for c in columns]))
  return values


def _positions(path: str, values: list[tuple[int, list[str]]]) -> Motion:
  """Rows `frame,x,y,z` (any order, one per frame, numbered from 0 without gaps) -> positions per frame."""
  by_frame: dict[int, tuple[int, list[float]]] = {}
  for line, (frame_text, *xyz) in values:
    frame = _number(path, line, 'frame', frame_text, blank_ok=False, unit='the frame index, 0 for the first')
    if frame < 0 or frame != int(frame):
      raise MotionError(f'--motion {path}, line {line}, column \'frame\': {frame_text.strip()!r}; expected an '
                        'integer >= 0 (the frame\'s index in the input\'s order, 0 for the first)')
    frame = int(frame)
    if frame in by_frame:
      raise MotionError(f'--motion {path}, line {line}, column \'frame\': frame {frame} again (first on line '
                        f'{by_frame[frame][0]}); expected one row per frame')
    by_frame[frame] = (line, [_number(path, line, c, v, blank_ok=True, unit='metres')
                              for c, v in zip(POSITION_COLUMNS[1:], xyz)])
  count = 0
  while count in by_frame:
    count += 1
  if count == 0:
    raise MotionError(f'--motion {path}: no row for frame 0 (the first frame); expected frame numbers from 0 '
                      'in the input\'s order')
  gap = [f for f in by_frame if f > count]
  if gap:   # rows after a missing frame number: the log is not per frame of this input
    raise MotionError(f'--motion {path}, line {by_frame[min(gap)][0]}, column \'frame\': frame {min(gap)} but '
                      f'no row for frame {count}; expected one row per frame, numbered from 0 without gaps')
  positions = np.array([by_frame[frame][1] for frame in range(count)], np.float64).reshape(count, 3)
  return Motion(source=f'--motion {os.path.basename(path)}', kind='positions', positions=positions, path=path)


def _velocities(path: str, values: list[tuple[int, list[str]]]) -> Motion:
  """Rows `time,vx,vy,vz` (row i = frame i, times increasing) -> the steps between frames (trapezoid rule)."""
  times, velocities = [], []
  for line, (time_text, *v) in values:
    t = _number(path, line, 'time', time_text, blank_ok=False, unit='seconds')
    if times and t <= times[-1][1]:
      raise MotionError(f'--motion {path}, line {line}, column \'time\': {time_text.strip()!r} is not after the '
                        f'previous row\'s {times[-1][1]!r} (line {times[-1][0]}); expected increasing times in '
                        'seconds, one row per frame')
    times.append((line, t))
    velocities.append([_number(path, line, c, x, blank_ok=True, unit='metres per second')
                       for c, x in zip(VELOCITY_COLUMNS[1:], v)])
  t = np.array([x for _, x in times])
  v = np.array(velocities, np.float64).reshape(-1, 3)
  steps = (t[1:] - t[:-1])[:, None] * (v[1:] + v[:-1]) / 2.0   # trapezoid rule; NaN where a velocity is unknown
  return Motion(source=f'--motion {os.path.basename(path)}', kind='velocities', steps=steps, path=path)
