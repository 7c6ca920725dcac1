"""The writer of results: batches of pairs in, depth maps out (`ResultWriter`), `shifts.csv` and the summary line.

For each batch the network predicts every candidate pair at once (a frame's candidates padded to K, so that every
call has one shape and compiles once); per frame the writer keeps one pair (`--frame_shift auto`: the one whose
raw output is nearest --target_depth, `predictor.choose_shift`), makes its depth metric by the pair's own
displacement over the nominal one (with the flight's motion), and writes the frame's files into the
`OutputFolder`, which enters them in its manifest first.
"""

from __future__ import annotations

import csv
import io
import time

import numpy as np

from depthnet_jax.common import atomic, colormaps, progress
from depthnet_jax.infer import predictor as inference
from depthnet_jax.infer.checkpoint_input import Nominal
from depthnet_jax.infer.options import InferOptions
from depthnet_jax.infer.outputs import MANIFEST, SHIFTS_CSV, OutputFolder
from depthnet_jax.infer.pairs import Batch, Job, Plan

SHIFTS_COLUMNS = ('frame', 'index', 'first_frame', 'shift', 'displacement_m', 'scale', 'raw_mean_m', 'raw_median_m',
                  'candidates', 'note')
SKIPPED_NOTE = 'skipped: displacement zero or unknown for every pair'


def csv_text(rows: list[dict]) -> str:
  """shifts.csv: a row per frame (SHIFTS_COLUMNS; a skipped frame has only frame, index and note)."""
  text = io.StringIO()
  writer = csv.writer(text, lineterminator='\n')
  writer.writerow(SHIFTS_COLUMNS)
  for row in rows:
    writer.writerow([f'{v:.6g}' if isinstance(v, float) else v for v in (row.get(c, '') for c in SHIFTS_COLUMNS)])
  return text.getvalue()


class ResultWriter:
  """Writes the results of `Batch`es (see the module docstring); counts pairs, predictions and skipped frames."""

  def __init__(self, predictor: inference.Predictor, opts: InferOptions, plan: Plan, size: tuple[int, int] | None,
               nominal: Nominal, out: OutputFolder, shown: progress.Progress):
    self.predictor, self.opts, self.plan, self.size, self.nominal = predictor, opts, plan, size, nominal
    self.out, self.shown = out, shown
    self.rows: list[dict] = []   # shifts.csv
    self.pairs = self.predicted = self.skipped = 0
    self.started = time.time()

  def add(self, batch: Batch) -> None:
    for t, stem in batch.skipped:
      self.skipped += 1
      self.rows.append({'frame': stem, 'index': t, 'note': SKIPPED_NOTE})
    if not batch.jobs:
      return
    low, high = self._predict(batch.jobs)
    self.out.enter([job.stem for job in batch.jobs])
    width = len(self.plan.shifts)
    for j, job in enumerate(batch.jobs):
      self._write(job, low[j * width:(j + 1) * width], high[j * width:(j + 1) * width])
    self.shown.update(len(batch.jobs))

  def _predict(self, jobs: list[Job]) -> tuple[np.ndarray, np.ndarray]:
    """(the network's outputs, them upsampled) of every candidate of `jobs`, K per frame (the last repeated)."""
    width = len(self.plan.shifts)   # candidates per frame: 1, or K with --frame_shift auto
    firsts, seconds = [], []
    for job in jobs:
      cands = job.candidates
      firsts += [c.first for c in cands + [cands[-1]] * (width - len(cands))]
      seconds += [job.image] * width
    low, high = self.predictor.predict_pairs(np.stack(firsts), np.stack(seconds), self.size)
    self.predicted += sum(len(job.candidates) for job in jobs)
    return low, high

  def _write(self, job: Job, low: np.ndarray, high: np.ndarray) -> None:
    """One frame's files from its candidates' outputs `low` and `high` (`[K, ...]`)."""
    opts, flight = self.opts, self.plan.flight
    pick = inference.choose_shift(low[:len(job.candidates)], opts.target_depth, opts.shift_statistic)[0] \
        if opts.auto else 0
    chosen = job.candidates[pick]
    scale = inference.metric_scale(chosen.displacement, self.nominal.metres) if flight is not None else 1.0
    depth = (high[pick] * np.float32(scale)).astype(np.float32)
    if flight is not None:
      self.rows.append({'frame': job.stem, 'index': job.index, 'first_frame': chosen.first_stem,
                        'shift': chosen.shift, 'displacement_m': float(chosen.displacement), 'scale': float(scale),
                        'raw_mean_m': float(low[pick].mean()), 'raw_median_m': float(np.median(low[pick])),
                        'candidates': len(job.candidates)})
    if opts.output_depth:
      self.out.write(f'{job.stem}_depth.png', atomic.write_png, colormaps.depth_to_rgb(depth))
    if opts.output_disp:
      self.out.write(f'{job.stem}_disp.png', atomic.write_png, colormaps.disparity_to_rgb(depth))
    if opts.output_raw:
      self.out.write(f'{job.stem}_depth.npy', atomic.write_npy, depth)
    if self.out.animation:
      self.out.animation.add(np.concatenate([job.image, colormaps.depth_to_rgb(depth)], axis=1))
    self.pairs += 1

  def finish(self) -> None:
    """shifts.csv (with the flight's motion), the animation, the manifest's 'complete'."""
    if self.plan.flight is not None:
      self.out.write(SHIFTS_CSV, atomic.write_text, csv_text(self.rows))
    self.out.finish(self.pairs)

  def summary(self, frames: int) -> str:
    """The line infer.py prints: frames, pairs (or shifts chosen), network input, speed, the output folder, and
    what the depths are metres of."""
    opts, size = self.opts, self.size
    elapsed = time.time() - self.started
    network = 'as they are' if size is None else f'{size[1]}x{size[0]}'
    rate = f'{self.pairs / elapsed:.1f} {"depth maps" if opts.auto else "pairs"}/s'
    return (f'{frames} frames, {self._pairs_said()}, network input {network}: {elapsed:.1f} s, {rate} -> '
            f'{self.out.folder} ({MANIFEST}: complete); {self._depth_said()}')

  def _used(self) -> list[dict]:
    """With the flight's motion (always with auto): a row per depth map."""
    return [r for r in self.rows if 'shift' in r]

  def _pairs_said(self) -> str:
    opts = self.opts
    if not opts.auto:
      return f'{self.pairs} pairs (shift {opts.frame_shift})'
    shifts = np.array([r['shift'] for r in self._used()])
    chose = f'{shifts.min()}{"" if shifts.min() == shifts.max() else f" to {shifts.max()}"}'
    return (f'{self.pairs} depth maps (shift auto 1..{opts.max_shift}, target {opts.target_depth:g} m by '
            f'{opts.shift_statistic}: chose {chose}, median {np.median(shifts):g}; {self.predicted} pairs predicted)')

  def _depth_said(self) -> str:
    flight, nominal = self.plan.flight, self.nominal
    if flight is None:
      return (f'depths assume the nominal displacement of {nominal.metres:g} m between a pair\'s frames '
              f'({nominal.said}); give --displacement or --motion for metric depth')
    scales = [r['scale'] for r in self._used()]
    return (f'metric depths from {flight.source} (scale {min(scales):.3g} to {max(scales):.3g} over a nominal '
            f'{nominal.metres:g} m, {nominal.said}); {self.skipped} frame(s) skipped: displacement zero or '
            f'unknown; per frame in {SHIFTS_CSV}')
