"""Which pairs give each frame its depth (`Plan`), and the `PairBatcher` that gathers them into network calls.

A frame t gets its depth from the pair (frame t - k, frame t): k is --frame_shift, or with `--frame_shift auto`
every k of 1..K is a candidate and the writer of results keeps one. With the flight's motion, the candidates
whose displacement is zero or unknown are dropped; a frame left with none is skipped (and counted). The batcher
holds the last K frames, so that a video is read once and never held whole.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from depthnet_jax.infer import motion


class Plan:
  """Which pairs give each frame its depth (see the module docstring)."""

  def __init__(self, frame_shift: int | str, max_shift: int, flight: motion.Motion | None):
    self.frame_shift = frame_shift   # as given: an integer or 'auto'
    self.auto = frame_shift in ('auto', 'fuse')
    self.shifts = tuple(range(1, max_shift + 1)) if self.auto else (frame_shift,)
    self.first_shift = self.shifts[0]
    self.need = self.first_shift + 1   # frames the input needs for one pair
    self.reach = max(self.shifts)      # frames held back in memory
    self.flight = flight

  def candidates(self, t: int) -> list[tuple[int, float]]:
    """(k, displacement in metres or NaN without motion) of the usable pairs (t - k, t) of frame t."""
    out = []
    for k in self.shifts:
      if k > t:
        break
      d = self.flight.displacement(t - k, t) if self.flight else float('nan')
      if self.flight is None or motion.usable(d):
        out.append((k, d))
    return out

  def frames_per_call(self, batch_size: int) -> int:
    """Frames per network call: --batch_size pairs, each frame taking one pair per candidate shift."""
    return max(1, batch_size // len(self.shifts))


class Candidate(NamedTuple):
  """A pair (first, frame t) that may give frame t its depth."""
  shift: int
  first: np.ndarray          # the pair's first frame, uint8 RGB
  displacement: float        # metres between the pair's frames (NaN without the flight's motion)
  first_stem: str


@dataclasses.dataclass(frozen=True)
class Job:
  """A frame that gets a depth map: its index in the input, its stem and image, its candidate pairs."""
  index: int
  stem: str
  image: np.ndarray
  candidates: list[Candidate]


@dataclasses.dataclass(frozen=True)
class Batch:
  """One network call's frames (`jobs`, at most `frames_per_call`), and the frames skipped since the last batch
  (index, stem): no usable pair. The last batch may have no jobs."""
  skipped: list[tuple[int, str]]
  jobs: list[Job]


class PairBatcher:
  """Frames in input order -> `Batch`es: each frame's candidate pairs gathered into calls of `per_call` frames."""

  def __init__(self, plan: Plan, per_call: int):
    self.plan, self.per_call = plan, per_call
    self.frames = 0      # frames read so far
    self._window: collections.deque = collections.deque(maxlen=plan.reach + 1)

  def batches(self, frames: Iterable[tuple[str, np.ndarray]]) -> Iterator[Batch]:
    """Yields a batch as soon as it is full, and what is left at the end."""
    skipped, jobs = [], []
    for t, (stem, image) in enumerate(frames):
      self.frames += 1
      job = self._job(t, stem, image)
      if job is None:
        if t >= self.plan.first_shift:
          skipped.append((t, stem))
        continue
      jobs.append(job)
      if len(jobs) == self.per_call:
        yield Batch(skipped, jobs)
        skipped, jobs = [], []
    if skipped or jobs:
      yield Batch(skipped, jobs)

  def _job(self, t: int, stem: str, image: np.ndarray) -> Job | None:
    """Frame t held back for later pairs; its job, or None when it has no usable pair."""
    self._window.append((stem, image))
    candidates = self.plan.candidates(t)
    if not candidates:
      return None
    held = list(self._window)
    return Job(t, stem, image, [Candidate(k, held[-1 - k][1], d, held[-1 - k][0]) for k, d in candidates])
