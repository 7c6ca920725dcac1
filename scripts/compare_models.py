"""The shipped models side by side on the same held-out scenes at each resolution, each fed at its own size.

    .venv/bin/python scripts/compare_models.py [--models models/reference64 models/reference128 ...]
        [--resolutions 64 128 256] [--scenes 16] [--seed 2031] [--out DIR] [--json FILE] [--smoke]

For each resolution R: renders `--scenes` scenes at R with `python -m tfds_stillbox.render --seed S` (a seed no
dataset or regression set uses), and for every pair (i, i + 3) of every scene runs each model as `infer.py` does
(`Predictor.predict_batch`: the frames resized to the model's training size, its output upsampled bilinearly to
R x R) and takes the mean absolute error against the rendered depth of frame i + 3 over every pixel ("full
resolution"). Beside it the constant baseline: the mean rendered depth of those scenes' target frames everywhere,
and each model's error as a ratio of the constant's. Prints one Markdown table (rows: models; columns: resolutions).
`--smoke` (a check that it runs, not a measurement): 1 scene at 32 and 64, models/reference64 only.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import numpy as np

from depthnet_jax.common import atomic, cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ('models/reference64', 'models/reference128', 'models/reference256')
SHIFT = 3


def render(out: str, resolution: int, scenes: int, seed: int) -> str:
  """The held-out scenes at `resolution` as a Still Box tree; returns its resolution folder."""
  from tfds_stillbox.render import cli as render_cli
  folder = os.path.join(out, str(resolution))
  if not os.path.isdir(folder):
    code = render_cli.main(['--out', out, '--resolution', str(resolution), '--scenes', str(scenes), '--seed',
                            str(seed)])
    if code:
      raise SystemExit(code)
  return folder


def pairs(folder: str):
  """(first frames, second frames, depth of the second) of every (i, i + SHIFT) pair, one scene at a time."""
  from depthnet_jax.data import tree_source
  from tfds_stillbox import codec
  source = tree_source.open_tree(folder)
  for index in range(len(source)):
    record = source[index]
    frames = np.stack([codec.decode_jpeg(f) for f in record['frames']])
    depth = np.stack([codec.decode_depth(d) for d in record['depth']])
    yield frames[:-SHIFT], frames[SHIFT:], depth[SHIFT:]


def errors(predictors: dict, folder: str) -> dict[str, float]:
  """Per model name (and 'constant'): the mean absolute error in metres over every pixel of every pair."""
  sums, truths = dict.fromkeys(predictors, 0.0), []
  for first, second, truth in pairs(folder):
    for name, predictor in predictors.items():
      for i in range(0, len(first), 8):
        depth = predictor.predict_batch(first[i:i + 8], second[i:i + 8], predictor.default_size())
        sums[name] += float(np.abs(depth.astype(np.float64) - truth[i:i + 8]).sum())
    truths.append(truth.astype(np.float64))
  truth = np.concatenate(truths)
  sums['constant'] = float(np.abs(truth - truth.mean()).sum())
  return {**{name: s / truth.size for name, s in sums.items()}, 'constant_depth_m': float(truth.mean()),
          'pairs': len(truth)}


def table(results: dict[int, dict[str, float]], names: list[str]) -> list[str]:
  """Markdown: a row per model (error in m, and its ratio to the constant's), a column per resolution."""
  resolutions = sorted(results)
  lines = ['| model | ' + ' | '.join(f'{r}x{r}' for r in resolutions) + ' |',
           '|---|' + '---|' * len(resolutions)]
  for name in names:
    cells = [f'{results[r][name]:.2f} m ({results[r][name] / results[r]["constant"]:.2f}x)' for r in resolutions]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  lines.append('| constant (the scenes\' mean depth) | ' + ' | '.join(
      f'{results[r]["constant"]:.2f} m ({results[r]["constant_depth_m"]:.1f} m)' for r in resolutions) + ' |')
  lines.append('| pairs | ' + ' | '.join(str(results[r]['pairs']) for r in resolutions) + ' |')
  return lines


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--models', nargs='+', default=None,
                 help=f'model checkpoints (default: those of {", ".join(MODELS)} that exist)')
  p.add_argument('--resolutions', nargs='+', type=int, default=[64, 128, 256], help='square sizes rendered')
  p.add_argument('--scenes', type=int, default=16, help='held-out scenes per resolution (10 frames each)')
  p.add_argument('--seed', type=int, default=2031, help='render seed (2031: no dataset or test uses it)')
  p.add_argument('--out', default=None, help='folder of the rendered scenes (default: a new temporary one)')
  p.add_argument('--json', default=None, help='write the figures as JSON')
  p.add_argument('--runtime', default='auto', choices=('auto', 'jax', 'onnx'), help='the network runtime')
  p.add_argument('--smoke', action='store_true', help='1 scene at 32 and 64, models/reference64: checks it runs')
  return p


def work(args) -> int:
  from depthnet_jax.infer import predictor as inference
  if args.smoke:
    args.models, args.resolutions, args.scenes = ['models/reference64'], [32, 64], 1
  names = args.models or [m for m in MODELS if os.path.isdir(os.path.join(ROOT, m))]
  for r in args.resolutions:
    cli.check_int('--resolutions', r, 16, 1024)
  cli.check_int('--scenes', args.scenes, 1, 10000)
  for name in names:
    if not os.path.exists(os.path.join(ROOT, name)) and not os.path.exists(name):
      raise cli.UserError(f'--models {name}: no such checkpoint')
  if args.json:
    cli.check_writable_dir(os.path.dirname(os.path.abspath(args.json)), '--json')
  out = args.out or tempfile.mkdtemp(prefix='depthnet-compare-')
  predictors = {n: inference.Predictor.from_checkpoint(n if os.path.exists(n) else os.path.join(ROOT, n),
                                                       runtime=args.runtime) for n in names}
  results = {}
  for r in args.resolutions:
    results[r] = errors(predictors, render(out, r, args.scenes, args.seed))
    print(f'{r}x{r}: ' + ', '.join(f'{n} {results[r][n]:.3f} m' for n in [*names, 'constant']), flush=True)
  print('\n'.join(['', *table(results, names)]))
  if args.json:
    atomic.write_text(args.json, json.dumps({'seed': args.seed, 'scenes': args.scenes, 'shift': SHIFT,
                                             'results': results}, indent=1) + '\n')
  return 0


def main(argv: list[str] | None = None) -> int:
  return cli.main(parser(), work, argv)


if __name__ == '__main__':
  sys.exit(main())
