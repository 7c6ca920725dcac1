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
from depthnet_jax.infer.camera import Camera, masked_pictures
from depthnet_jax.infer.checkpoint_input import Nominal
from depthnet_jax.infer.options import InferOptions
from depthnet_jax.infer.outputs import MANIFEST, SHIFTS_CSV, OutputFolder
from depthnet_jax.infer.pairs import Batch, Job, Plan

SHIFTS_COLUMNS = ('frame', 'index', 'first_frame', 'shift', 'displacement_m', 'scale', 'raw_mean_m', 'raw_median_m',
                  'candidates', 'note', 'rotation_deg', 'invalid_fraction')
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
               nominal: Nominal, out: OutputFolder, shown: progress.Progress, camera: Camera | None = None):
    self.predictor, self.opts, self.plan, self.size, self.nominal = predictor, opts, plan, size, nominal
    self.out, self.shown, self.camera = out, shown, camera or Camera()
    self.rows: list[dict] = []   # shifts.csv
    self.pairs = self.predicted = self.skipped = 0
    self.invalid = self.pixels = 0   # pixels without a depth (stabilization), of all written
    self.started = time.time()

  def add(self, batch: Batch) -> None:
    for t, stem in batch.skipped:
      self.skipped += 1
      self.rows.append({'frame': stem, 'index': t, 'note': SKIPPED_NOTE})
    if not batch.jobs:
      return
    low, high, valid = self._predict(batch.jobs)
    self.out.enter([job.stem for job in batch.jobs])
    width = len(self.plan.shifts)
    for j, job in enumerate(batch.jobs):
      part = slice(j * width, (j + 1) * width)
      self._write(job, low[part], high[part], valid[part])
    self.shown.update(len(batch.jobs))

  def _predict(self, jobs: list[Job]) -> tuple[np.ndarray, np.ndarray, list]:
    """(the network's outputs, them upsampled, the valid masks or None) of every candidate of `jobs`, K per frame
    (the last repeated); each candidate's first frame in its frame's orientation when the camera stabilizes."""
    width = len(self.plan.shifts)   # candidates per frame: 1, or K with --frame_shift auto / fuse
    firsts, seconds, valid = [], [], []
    for job in jobs:
      cands = job.candidates
      for c in cands + [cands[-1]] * (width - len(cands)):
        first, mask = self.camera.stabilize(c.first, job.index - c.shift, job.index)
        firsts.append(first)
        valid.append(mask)
      seconds += [job.image] * width
    low, high = self.predictor.predict_pairs(np.stack(firsts), np.stack(seconds), self.size)
    self.predicted += sum(len(job.candidates) for job in jobs)
    return low, high, valid

  def _choose(self, job: Job, low: np.ndarray, high: np.ndarray, valid: list) -> tuple[int, np.ndarray, list]:
    """(the candidate chosen, the frame's depth [H, W] in metres, the scale of every candidate)."""
    opts, flight, count = self.opts, self.plan.flight, len(job.candidates)
    scales = [inference.metric_scale(c.displacement, self.nominal.metres) if flight is not None else 1.0
              for c in job.candidates]
    if opts.fuse:
      depth, shares = inference.fuse_shifts(high[:count], scales, valid[:count])
      return int(np.argmax(shares)), depth, scales
    pick = inference.choose_shift(low[:count], opts.target_depth, opts.shift_statistic)[0] if opts.auto else 0
    depth = (high[pick] * np.float32(scales[pick])).astype(np.float32)
    if valid[pick] is not None:
      depth[~valid[pick]] = np.nan
    return pick, depth, scales

  def _write(self, job: Job, low: np.ndarray, high: np.ndarray, valid: list) -> None:
    """One frame's files from its candidates' outputs `low` and `high` (`[K, ...]`) and valid masks."""
    opts, flight = self.opts, self.plan.flight
    pick, depth, scales = self._choose(job, low, high, valid)
    chosen = job.candidates[pick]
    holes = ~np.isfinite(depth)
    self.invalid += int(holes.sum())
    self.pixels += depth.size
    if flight is not None or self.camera.stabilizes:
      self.rows.append({'frame': job.stem, 'index': job.index, 'first_frame': chosen.first_stem,
                        'shift': chosen.shift, 'displacement_m': float(chosen.displacement),
                        'scale': float(scales[pick]), 'raw_mean_m': float(low[pick].mean()),
                        'raw_median_m': float(np.median(low[pick])), 'candidates': len(job.candidates),
                        'rotation_deg': self.camera.rotation_between(job.index - chosen.shift, job.index),
                        'invalid_fraction': float(holes.mean())})
    valid_px = None if not holes.any() else ~holes
    picture = masked_pictures(valid_px, colormaps.depth_to_rgb(depth)) \
        if opts.output_depth or self.out.animation else None
    if opts.output_depth:
      self.out.write(f'{job.stem}_depth.png', atomic.write_png, picture)
    if opts.output_disp:
      self.out.write(f'{job.stem}_disp.png', atomic.write_png,
                     masked_pictures(valid_px, colormaps.disparity_to_rgb(np.nan_to_num(depth, nan=1e9))))
    if opts.output_raw:
      self.out.write(f'{job.stem}_depth.npy', atomic.write_npy, depth)
    if self.out.animation:
      self.out.animation.add(np.concatenate([job.image, picture], axis=1))
    self.pairs += 1

  def finish(self) -> None:
    """shifts.csv (with the flight's motion), the animation, the manifest's 'complete'."""
    if self.plan.flight is not None or self.camera.stabilizes:
      self.out.write(SHIFTS_CSV, atomic.write_text, csv_text(self.rows))
    self.out.finish(self.pairs)

  def summary(self, frames: int) -> str:
    """The line infer.py prints: frames, pairs (or shifts chosen), network input and runtime, speed, the output
    folder, and what the depths are metres of."""
    opts, size = self.opts, self.size
    elapsed = time.time() - self.started
    network = 'as they are' if size is None else f'{size[1]}x{size[0]}'
    rate = f'{self.pairs / elapsed:.1f} {"depth maps" if opts.auto else "pairs"}/s'
    runtime = {'onnx': 'ONNX Runtime', 'jax': 'JAX'}.get(self.predictor.runtime, self.predictor.runtime)
    return (f'{frames} frames, {self._pairs_said()}, network input {network} ({runtime}): {elapsed:.1f} s, {rate} -> '
            f'{self.out.folder} ({MANIFEST}: complete); {self._depth_said()}')

  def _used(self) -> list[dict]:
    """With the flight's motion (always with auto): a row per depth map."""
    return [r for r in self.rows if 'shift' in r]

  def _pairs_said(self) -> str:
    opts = self.opts
    if not opts.auto:
      return f'{self.pairs} pairs (shift {opts.frame_shift})'
    shifts = np.array([r['shift'] for r in self._used()])
    if opts.fuse:
      return (f'{self.pairs} depth maps (shift fuse 1..{opts.max_shift}: per pixel the smallest shift whose raw '
              f'output is under {inference.FUSE_CEILING:g} m; most used per frame median {np.median(shifts):g}; '
              f'{self.predicted} pairs predicted)')
    chose = f'{shifts.min()}{"" if shifts.min() == shifts.max() else f" to {shifts.max()}"}'
    return (f'{self.pairs} depth maps (shift auto 1..{opts.max_shift}, target {opts.target_depth:g} m by '
            f'{opts.shift_statistic}: chose {chose}, median {np.median(shifts):g}; {self.predicted} pairs predicted)')

  def _camera_said(self) -> str:
    """What was undone of the camera: the lens, the rotation (and the pixels it left without a depth)."""
    camera, said = self.camera, []
    if camera.calibration is not None:
      said.append(f'undistorted by {camera.calibration_source} (FOV {camera.frame_fov:.1f} deg)')
    if camera.stabilizes:
      turned = [r['rotation_deg'] for r in self._used()]
      share = self.invalid / self.pixels if self.pixels else 0.0
      said.append(f'stabilized by {camera.attitude_source} (rotation within pairs {min(turned, default=0):.2f} to '
                  f'{max(turned, default=0):.2f} deg; {self.invalid} invalid pixels, {100 * share:.1f} %: NaN in '
                  f'the .npy, grey in the pictures)')
    return ''.join(f'; {s}' for s in said)

  def _depth_said(self) -> str:
    return self._metric_said() + self._camera_said()

  def _metric_said(self) -> str:
    flight, nominal = self.plan.flight, self.nominal
    if flight is None:
      return (f'depths assume the nominal displacement of {nominal.metres:g} m between a pair\'s frames '
              f'({nominal.said}); give --displacement or --motion for metric depth')
    scales = [r['scale'] for r in self._used()]
    return (f'metric depths from {flight.source} (scale {min(scales):.3g} to {max(scales):.3g} over a nominal '
            f'{nominal.metres:g} m, {nominal.said}); {self.skipped} frame(s) skipped: displacement zero or '
            f'unknown; per frame in {SHIFTS_CSV}')
