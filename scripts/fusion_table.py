"""Frame shifts fused per pixel (`infer.py --frame_shift fuse`) against every fixed shift and `auto`, measured.

    .venv/bin/python scripts/fusion_table.py --checkpoint models/reference64 [--out fusion] [--scenes 4] [--smoke]

Renders near (`--depth_range 2,20`), far (`40,400`) and mixed (`2,400`) flights at 0.1 m per frame with
`python -m tfds_stillbox.render`, runs `infer.py` on each (its motion log given) with `--frame_shift k` for every
k of 1..K, `auto` and `fuse`, and compares the depth maps of the frames K onwards with the rendered truth (abs rel
over every pixel, as scripts/motion_check.py). The network's most accurate range is measured on the fixed-shift
runs of all three sets: per pixel the raw output (depth / scale) and its relative error, binned by raw output
(log-spaced bins); the bin of the lowest median relative error is printed (its centre is what `fuse` aims at:
`predictor.FUSE_CENTRE`). `--smoke` (a check that it runs, not a measurement): one mixed flight of 4 frames of
32x32, K = 1.
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile

import numpy as np

from depthnet_jax.common import cli
from depthnet_jax.testing import config_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SETS = {'near': '2,20', 'far': '40,400', 'mixed': '2,400'}
BINS = np.geomspace(1, 200, 24)


def _raw_errors(folder: str, output: str, keep) -> tuple[np.ndarray, np.ndarray]:
  """(raw output, relative error) of every pixel of the kept depth maps of a fixed-shift run."""
  import json
  with open(os.path.join(folder, 'metadata.json')) as f:
    scene = json.load(f)['scenes'][0]
  with open(os.path.join(output, 'shifts.csv')) as f:
    scales = {r['frame']: float(r['scale']) for r in csv.DictReader(f) if r['scale']}
  raws, rels = [], []
  for t, (image, truth_file) in enumerate(zip(scene['imgs'], scene['depth'])):
    stem = os.path.splitext(image)[0]
    if not keep(t) or stem not in scales:
      continue
    depth = np.load(os.path.join(output, stem + '_depth.npy')).astype(np.float64)
    truth = np.load(os.path.join(folder, truth_file)).astype(np.float64)
    good = truth > 1e-3
    raws.append(depth[good] / scales[stem])
    rels.append(np.abs(depth - truth)[good] / truth[good])
  return np.concatenate(raws), np.concatenate(rels)


def measure(checkpoint: str, out: str, scenes: int, frames: int, max_shift: int, resolution: int,
            sets: dict = SETS) -> dict:
  tools = config_files.load_module(os.path.join(ROOT, 'scripts', 'motion_check.py'), 'motion_check_fusion')
  tools._INFER = tools._infer_module()
  keep = lambda t: t >= max_shift   # noqa: E731 - frames every shift reaches
  table, raws, rels = {}, [], []
  for name, depth_range in sets.items():
    tree = tools.render(os.path.join(out, name), scenes=scenes, frames=frames, step=0.1, depth_range=depth_range,
                        seed=2026, resolution=resolution)
    row = {}
    shifts = [str(k) for k in range(1, max_shift + 1)] + ['auto', 'fuse']
    for shift in shifts:
      values = []
      for folder in tools.scene_folders(tree):
        output = os.path.join(out, f'{name}_{shift}_{os.path.basename(folder)}')
        extra = ('--max_shift', max_shift) if shift in ('auto', 'fuse') else ()
        tools.infer(checkpoint, folder, output, '--frame_shift', shift, *extra, motion_log=True)
        values += tools.errors(folder, output, keep)[2]
        if shift.isdigit():
          raw, rel = _raw_errors(folder, output, keep)
          raws.append(raw)
          rels.append(rel)
      row[shift] = float(np.mean(values))
    table[name] = row
  raw, rel = np.concatenate(raws), np.concatenate(rels)
  index = np.digitize(raw, BINS)
  medians = [(float(np.median(rel[index == b])), b) for b in range(1, len(BINS)) if np.sum(index == b) > 200]
  best = min(medians)[1]
  return {'table': table, 'range': (float(BINS[best - 1]), float(BINS[best])), 'bins': medians}


def main(argv=None) -> int:
  p = cli.ArgumentParser(prog='scripts/fusion_table.py', description=__doc__.split('\n\n')[0])
  p.add_argument('--checkpoint', default=os.path.join(ROOT, 'models', 'reference64'))
  p.add_argument('--out', default=None)
  p.add_argument('--scenes', type=int, default=4)
  p.add_argument('--smoke', action='store_true')

  def work(a) -> int:
    out = a.out or tempfile.mkdtemp(prefix='fusion_')
    sizes = (1, 4, 1, 32) if a.smoke else (cli.check_int('--scenes', a.scenes, 1), 16, 8, 64)
    figures = measure(a.checkpoint, out, *sizes, sets={'mixed': SETS['mixed']} if a.smoke else SETS)
    shifts = list(next(iter(figures['table'].values())))
    print('abs rel | ' + ' | '.join(f'{s:>5}' for s in shifts))
    for name, row in figures['table'].items():
      print(f'{name:>7} | ' + ' | '.join(f'{row[s]:.3f}' for s in shifts))
    low, high = figures['range']
    print(f'most accurate raw output: {low:.1f} to {high:.1f} m (centre {np.sqrt(low * high):.1f} m)')
    return 0

  return cli.main(p, work, argv)


if __name__ == '__main__':
  sys.exit(main())
