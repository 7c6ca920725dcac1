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
  naming the file, the line and the column; more rows than the input has frames is a note stating both counts.
  The log is streamed, never held as text: a large one shows the progress of its reading, and of a folder's
  frames (whose number is known before) only the rows of its frames are kept, as floats (3 million rows: see
  docs/inference.md for the time and memory).

Standard library and NumPy only (imported before JAX starts).
"""

from __future__ import annotations

import array
import csv
import dataclasses
import io
import itertools
import math
import operator
import os
import sys
from typing import Iterator

import numpy as np

from depthnet_jax.common import cli, progress

MAX_DISPLACEMENT = 1000.0      # metres per frame beyond which --displacement is a typo
# Displacements at or below this (metres) count as zero: a hovering camera, whose pairs hold no parallax.
MIN_DISPLACEMENT = 1e-6

PROGRESS_BYTES = 16 * 2**20   # logs of this size or more show the progress of their reading (stderr)

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
    rows: the log's rows below its header, those not kept included (a log; None otherwise).
  """
  source: str
  kind: str
  per_frame: float | None = None
  positions: np.ndarray | None = None
  steps: np.ndarray | None = None
  path: str | None = None
  rows: int | None = None

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

  def check_covers(self, frames: int, what: str) -> str | None:
    """A `MotionError` if the log has fewer rows than the input has frames (`what` names the input); if it has
    more, a note on stderr stating both counts (the rows past the input's last frame are not used), returned."""
    if self.frames is not None and self.frames < frames:
      if self.kind == 'positions':
        raise MotionError(f'--motion {self.path}: no row for frame {self.frames}: the log covers frames 0 to '
                          f'{self.frames - 1} but {what} has {frames} frames; expected one row per frame '
                          '(frame numbers from 0 in the input\'s order)')
      raise MotionError(f'--motion {self.path}: {self.frames} rows of velocities but {what} has {frames} frames; '
                        'expected one row per frame (row i is frame i)')
    if self.rows is None or self.rows <= frames:
      return None
    note = (f'note: --motion {self.path}: {self.rows} rows for the {frames} frames of {what}; the rows of frames '
            f'{frames} and later are not used')
    print(note, file=sys.stderr, flush=True)
    return note


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


def read_log(path: str, frames: int | None = None) -> Motion:
  """Reads a motion log (see the module docstring); every problem is a `MotionError` naming file, line, column.

  The file is streamed (its text is never held whole; progress on stderr for a large one) and only the columns
  used are kept, as floats. `frames`: the number of frames of the input, when known: rows for frames at or past it
  are counted (`Motion.rows`) but not kept, so the memory is proportional to the rows used.
  """
  path = os.path.abspath(os.fspath(path))
  if os.path.isdir(path):
    raise MotionError(f'--motion {path}: is a directory; expected a CSV file')
  try:
    f = open(path, 'rb')
  except FileNotFoundError:
    raise MotionError(f'--motion {path}: no such file; expected a CSV motion log') from None
  except OSError as e:
    raise MotionError(f'--motion {path}: cannot read it ({e.strerror or e}); expected a CSV text file') from None
  with f, _reading_progress(path) as shown:
    log = _Log(path, f, shown)
    try:
      log.read_header()
      return (_positions if log.kind == 'positions' else _velocities)(log, frames)
    except UnicodeDecodeError as e:
      raise MotionError(f'--motion {path}, line {log.line + 1}: not UTF-8 text ({e.reason}); expected a CSV text '
                        'file') from None
    except OSError as e:
      raise MotionError(f'--motion {path}: cannot read it ({e.strerror or e}); expected a CSV text file') from None


def _reading_progress(path: str) -> progress.Progress:
  """MiB read of the log, shown for a log of PROGRESS_BYTES or more."""
  try:
    size = os.path.getsize(path)
  except OSError:
    size = 0
  return progress.Progress(-(-size // 2**20), 'MiB', desc=f'reading --motion {os.path.basename(path)}',
                           enabled=size >= PROGRESS_BYTES)


class _Log:
  """A log's header read (`kind`, `columns`), and its data rows as (line number, floats of `columns`): `rows()`."""

  def __init__(self, path: str, f, shown: progress.Progress):
    self.path, self._f, self._shown, self._counted = path, f, shown, 0
    self.line = 0   # of the last line read

  def read_header(self) -> None:
    # kept: the wrapper closes the file when it is collected, as the reader drops it at the end
    path, first = self.path, ''
    self._text = text = io.TextIOWrapper(self._f, encoding='utf-8-sig', newline='')
    for first in iter(text.readline, ''):   # the header: the first line that is neither blank nor a comment
      self.line += 1
      if first.strip() and not first.lstrip().startswith('#'):
        break
    else:
      raise MotionError(f'--motion {path}: empty; expected a header line ({",".join(POSITION_COLUMNS)} or '
                        f'{",".join(VELOCITY_COLUMNS)}) and one row per frame')
    self._offset = self.line - 1
    delimiter = max((',', ';', '\t'), key=first.count)   # the one that splits the header most
    self._reader = csv.reader(itertools.chain([first], text), delimiter=delimiter)
    header = next(self._reader)
    self.kind, self.columns, index = _header(path, self.line, header)
    self._fields = [index[c] for c in self.columns]
    self._width = len(header)

  def rows(self, blank_ok: tuple[bool, ...], units: tuple[str, ...]) -> Iterator[tuple[int, list[float]]]:
    """(line number, the row's values of `columns`) of every data row; an empty cell is NaN where `blank_ok`."""
    pick, last, reader = operator.itemgetter(*self._fields), max(self._fields), self._reader
    for n, row in enumerate(reader):
      if not n & 0xFFFF:
        self._progress()
      self.line = self._offset + reader.line_num
      try:
        values = list(map(float, pick(row)))
        if all(map(math.isfinite, values)) and not row[0].lstrip().startswith('#'):
          yield self.line, values
          continue
      except (ValueError, IndexError):
        pass
      values = self._slow(row, last, blank_ok, units)
      if values is not None:
        yield self.line, values
    self._progress()

  def _slow(self, row: list[str], last: int, blank_ok, units) -> list[float] | None:
    """A row that is not all finite numbers: None for a blank or comment line, else its values (NaN for an empty
    cell where that is allowed) or the `MotionError` of its first bad cell."""
    if not row or not any(c.strip() for c in row) or row[0].lstrip().startswith('#'):
      return None
    if len(row) <= last:
      missing = [c for c, i in zip(self.columns, self._fields) if i >= len(row)]
      raise MotionError(f'--motion {self.path}, line {self.line}, column {missing[0]!r}: missing ({len(row)} '
                        f'field(s) for the header\'s {self._width}); expected a value in every column of the header')
    return [_number(self.path, self.line, c, row[i], blank_ok=b, unit=u)
            for c, i, b, u in zip(self.columns, self._fields, blank_ok, units)]

  def _progress(self) -> None:
    done = -(-self._f.tell() // 2**20)
    if done > self._counted:
      self._shown.update(done - self._counted)
      self._counted = done


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


def _no_rows(path: str) -> MotionError:
  return MotionError(f'--motion {path}: a header and no rows; expected one row per frame')


_FRAME_UNIT = 'the frame index, 0 for the first'


def _positions(log: _Log, limit: int | None) -> Motion:
  """Rows `frame,x,y,z` (any order, one per frame, numbered from 0 without gaps) -> positions per frame; rows of
  frames >= `limit` are counted, not kept."""
  path, frames, lines, xyz, rows = log.path, array.array('q'), array.array('q'), array.array('d'), 0
  for line, (frame, *values) in log.rows((False, True, True, True), (_FRAME_UNIT, 'metres', 'metres', 'metres')):
    rows += 1
    if frame < 0 or frame != int(frame):
      shown = str(int(frame) if frame == int(frame) else frame)
      raise MotionError(f'--motion {path}, line {line}, column \'frame\': {shown!r}; expected an integer >= 0 (the '
                        'frame\'s index in the input\'s order, 0 for the first)')
    if limit is None or frame < limit:
      frames.append(int(frame))
      lines.append(line)
      xyz.extend(values)
  if not rows:
    raise _no_rows(path)
  frame, line = np.frombuffer(frames, np.int64), np.frombuffer(lines, np.int64)
  order = np.argsort(frame, kind='stable')   # stable: of one frame's rows, the first in the file comes first
  by_frame = frame[order]
  again = np.flatnonzero(by_frame[1:] == by_frame[:-1]) + 1
  if len(again):
    k = again[np.argmin(line[order[again]])]   # the repeat met first in the file
    first = line[order[np.searchsorted(by_frame, by_frame[k])]]
    raise MotionError(f'--motion {path}, line {line[order[k]]}, column \'frame\': frame {by_frame[k]} again (first '
                      f'on line {first}); expected one row per frame')
  if not len(by_frame) or by_frame[0] != 0:
    raise MotionError(f'--motion {path}: no row for frame 0 (the first frame); expected frame numbers from 0 '
                      'in the input\'s order')
  gaps = np.flatnonzero(by_frame != np.arange(len(by_frame)))
  if len(gaps):   # rows after a missing frame number: the log is not per frame of this input
    count = int(gaps[0])
    raise MotionError(f'--motion {path}, line {line[order[count]]}, column \'frame\': frame {by_frame[count]} but '
                      f'no row for frame {count}; expected one row per frame, numbered from 0 without gaps')
  positions = np.frombuffer(xyz, np.float64).reshape(-1, 3)[order]
  return Motion(source=f'--motion {os.path.basename(path)}', kind='positions', positions=positions, path=path,
                rows=rows)


def _velocities(log: _Log, limit: int | None) -> Motion:
  """Rows `time,vx,vy,vz` (row i = frame i, times increasing) -> the steps between frames (trapezoid rule); rows
  from `limit` on are counted, not kept."""
  path, values, rows, previous = log.path, array.array('d'), 0, (0, -math.inf)
  speed = 'metres per second'
  for line, row in log.rows((False, True, True, True), ('seconds', speed, speed, speed)):
    rows += 1
    if limit is not None and rows > limit:
      continue
    if row[0] <= previous[1]:
      raise MotionError(f'--motion {path}, line {line}, column \'time\': {str(row[0])!r} is not after the previous '
                        f'row\'s {previous[1]!r} (line {previous[0]}); expected increasing times in seconds, one row '
                        'per frame')
    previous = (line, row[0])
    values.extend(row)
  if not rows:
    raise _no_rows(path)
  tv = np.frombuffer(values, np.float64).reshape(-1, 4)
  t, v = tv[:, 0], tv[:, 1:]
  steps = (t[1:] - t[:-1])[:, None] * (v[1:] + v[:-1]) / 2.0   # trapezoid rule; NaN where a velocity is unknown
  return Motion(source=f'--motion {os.path.basename(path)}', kind='velocities', steps=steps, path=path, rows=rows)
