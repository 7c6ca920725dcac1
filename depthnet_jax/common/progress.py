"""Progress of long work (rendering scenes, predicting pairs, training steps): count, rate and ETA.

On a terminal it is tqdm's bar, redrawn in place. On a pipe or a file (CI logs, `| tee`, nohup) a redrawn line
would be one line of thousands of carriage returns, so there it is a plain line at most every `every` seconds
and at the end.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO


def format_eta(seconds: float) -> str:
  """H:MM:SS, or '?' when unknown."""
  if not math.isfinite(seconds) or seconds < 0:
    return '?'
  seconds = int(round(seconds))
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def rate_and_eta(done: float, total: float | None, elapsed: float) -> tuple[float, float]:
  """(items per second, seconds left) after `done` of `total` items in `elapsed` seconds."""
  rate = done / max(elapsed, 1e-9)
  eta = (total - done) / rate if total is not None and rate > 0 else math.inf
  return rate, eta


class Progress:
  """`with Progress(total, 'scenes', desc='rendered') as p: ... p.update(1)`; `total` may be None (unknown)."""

  def __init__(self, total: int | None, unit: str, *, desc: str = '', stream: TextIO | None = None,
               every: float = 10.0, tty: bool | None = None, enabled: bool = True):
    """`enabled=False`: counts, shows nothing."""
    self.total, self.unit, self.desc, self.enabled = total, unit, desc, enabled
    self.stream = stream or sys.stderr
    self.every = every
    self.done = 0
    self.started = self._last = time.monotonic()
    isatty = getattr(self.stream, 'isatty', None)
    self.tty = bool(isatty and isatty()) if tty is None else tty
    self._bar = None
    self._closed = not enabled   # nothing to end
    if self.tty and enabled:
      import tqdm  # tqdm's bar only on a terminal
      self._bar = tqdm.tqdm(total=total, unit=f' {unit}', desc=desc or None, file=self.stream, mininterval=0.25,
                            dynamic_ncols=True, leave=True)

  def __enter__(self) -> 'Progress':
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def line(self) -> str:
    """`<desc> done/total <unit>, rate <unit>/s, ETA H:MM:SS`."""
    rate, eta = rate_and_eta(self.done, self.total, time.monotonic() - self.started)
    total = '?' if self.total is None else self.total
    text = f'{self.desc} ' if self.desc else ''
    text += f'{self.done}/{total} {self.unit}, {rate:.2f} {self.unit}/s'
    return text + (f', ETA {format_eta(eta)}' if self.total is not None else '')

  def update(self, n: int = 1) -> None:
    self.done += n
    if self._bar is not None:
      self._bar.update(n)
      return
    if not self.enabled:
      return
    now = time.monotonic()
    if now - self._last >= self.every and (self.total is None or self.done < self.total):
      self._last = now
      self.stream.write(self.line() + '\n')
      self.stream.flush()

  def close(self) -> None:
    """Ends the bar (a terminal) or prints the final line (a pipe); a second call does nothing."""
    if self._closed:
      return
    self._closed = True
    if self._bar is not None:
      self._bar.close()
      return
    if self.done:
      self.stream.write(self.line() + '\n')
      self.stream.flush()
