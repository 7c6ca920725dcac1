"""Draws a training run's learning curve from its TensorBoard event files (no TensorFlow needed).

    .venv/bin/python scripts/learning_curve.py --workdir runs/reference64 --out curve.png [--baseline 25.9]

Top: the training loss (the multi-scale L1 of `train.py`, averaged over each logging window) against steps.
Bottom: the evaluation's depth error (m) at each evaluation, the training batches' depth error, and with
`--baseline M` the constant-depth baseline's error as a dashed line. Learning-rate drops are grey vertical lines.
`--csv PATH` also writes the points (tag, step, value). A resumed run's files are read in the order written; a
step logged twice keeps its last value.

`--compare CSV` draws another run's points (a `--csv` file, e.g. the published `docs/reference64_curve.csv`) in
grey under this run's, and prints how far apart they are at the steps both logged: to check that a re-run (or
its first N steps, `make reference REFERENCE_ARGS="--steps N --train_only"`) reproduces the published curve.

`--smoke` (a check that the script runs): `--csv` defaults to curve.csv beside `--out`, and `--out` to curve.png in
a new temporary folder.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys

TAGS = ('train_loss', 'train_depth_error', 'train_learning_rate', 'eval_depth_error')


def read_csv(path: str) -> dict[str, list[tuple[int, float]]]:
  """The points of a `--csv` file; a file of another layout is a one-line error naming it."""
  from depthnet_jax.common import cli
  if not os.path.isfile(path):
    raise cli.UserError(f'--compare {os.path.abspath(path)}: does not exist; expected a CSV written by --csv')
  points: dict[str, list[tuple[int, float]]] = {}
  with open(path, newline='') as f:
    rows = list(csv.reader(f))
  if not rows or rows[0] != ['tag', 'step', 'value']:
    raise cli.UserError(f'--compare {os.path.abspath(path)}: line 1 is {",".join(rows[0]) if rows else "empty"}; '
                        'expected the header tag,step,value (a CSV written by --csv)')
  for n, row in enumerate(rows[1:], start=2):
    try:
      tag, step, value = row
      points.setdefault(tag, []).append((int(step), float(value)))
    except ValueError:
      raise cli.UserError(f'--compare {os.path.abspath(path)}: line {n} is {",".join(row)!r}; expected tag,'
                          'integer step,number') from None
  return {tag: sorted(values) for tag, values in points.items()}


def compare(ours: dict, other: dict) -> list[str]:
  """Per tag, at the steps both logged: the number of steps, the largest relative difference (at which step), and
  the mean relative difference."""
  lines = []
  for tag in ('train_loss', 'eval_depth_error'):
    mine, theirs = dict(ours.get(tag, [])), dict(other.get(tag, []))
    common = sorted(set(mine) & set(theirs))
    if not common:
      lines.append(f'{tag}: no step logged by both runs')
      continue
    rel = [abs(mine[s] - theirs[s]) / max(abs(theirs[s]), 1e-12) for s in common]
    worst = max(range(len(common)), key=rel.__getitem__)
    lines.append(f'{tag}: {len(common)} common steps ({common[0]}-{common[-1]}), relative difference max '
                 f'{rel[worst]:.2%} (step {common[worst]}: {mine[common[worst]]:.4g} vs {theirs[common[worst]]:.4g}), '
                 f'mean {sum(rel) / len(rel):.2%}')
  return lines


def main(argv: list[str] | None = None) -> int:
  from depthnet_jax.common import atomic, cli
  from depthnet_jax.evaluation import charts, run_log
  p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--workdir', required=True, help='the train.py workdir (its events.out.tfevents.* files)')
  p.add_argument('--out', default=None, help='the picture to write (.png); required unless --smoke')
  p.add_argument('--baseline', type=float, default=None, metavar='M',
                 help="the constant-depth baseline's depth error in metres, drawn as a dashed line")
  p.add_argument('--title', default=None, help='the title (default: the workdir)')
  p.add_argument('--csv', default=None, metavar='PATH', help='also write the points as CSV (tag, step, value)')
  p.add_argument('--compare', default=None, metavar='CSV',
                 help="another run's points (a --csv file): drawn in grey, differences printed")
  p.add_argument('--overwrite', action='store_true', help='replace existing --out / --csv files')
  p.add_argument('--smoke', action='store_true', help='--csv beside --out (default: a temporary folder)')

  def work(a):
    if a.smoke:   # both files, beside --out if given
      import tempfile
      folder = os.path.dirname(os.path.abspath(a.out)) if a.out else tempfile.mkdtemp(prefix='depthnet-curve-')
      a.out, a.csv = a.out or os.path.join(folder, 'curve.png'), a.csv or os.path.join(folder, 'curve.csv')
    if a.out is None:
      raise cli.UserError('--out: missing; expected the picture to write (.png)')
    workdir = os.path.abspath(a.workdir)
    if not os.path.isdir(workdir):
      raise cli.UserError(f'--workdir {workdir}: does not exist or is not a folder; expected a train.py workdir')
    out = cli.check_output_file('--out', a.out, a.overwrite, ('.png',))
    points = cli.check_output_file('--csv', a.csv, a.overwrite, ('.csv',))
    if a.baseline is not None and not (math.isfinite(a.baseline) and a.baseline > 0):
      raise cli.UserError(f'--baseline {a.baseline}: expected a depth error in metres > 0')
    other = read_csv(a.compare) if a.compare is not None else None
    scalars = run_log.read_scalars(workdir)
    if not scalars.get('train_loss'):
      raise cli.UserError(f'--workdir {workdir}: its event files hold no train_loss; expected a train.py run that '
                          'logged at least once')
    image = charts.learning_curve(scalars, title=a.title or f'learning curve of {workdir}', baseline=a.baseline,
                                  other=other)
    for path in (out, points):
      if path:
        atomic.make_dirs(os.path.dirname(path))
    atomic.write_png(out, image)
    if points:
      rows = io.StringIO()
      w = csv.writer(rows, lineterminator='\n')
      w.writerow(['tag', 'step', 'value'])
      for tag in TAGS:
        for step, value in scalars.get(tag, []):
          w.writerow([tag, step, repr(value)])
      atomic.write_text(points, rows.getvalue())
    evals = scalars.get('eval_depth_error', [])
    last = f', last eval depth error {evals[-1][1]:.3f} m at step {evals[-1][0]}' if evals else ''
    print(f'wrote {out}: {len(scalars["train_loss"])} train points, {len(evals)} evaluations'
          f'{last}')
    if other is not None:
      for line in compare(scalars, other):
        print(line)
    return 0
  return cli.main(p, work, argv)


if __name__ == '__main__':
  sys.exit(main())
