"""What a trained DepthNet does with the flight's motion: measured on rendered flights, run as a user runs them.

    .venv/bin/python scripts/motion_check.py --checkpoint runs/synth64 [--out motion_check] [--scenes 12]

Renders flights with `python -m tfds_stillbox.render` (one scene per folder, each with its motion log) and runs
`infer.py` on each (in this process, through `infer.main`, the command line's own entry point), then compares the
depth it wrote (`<frame>_depth.npy`) with the rendered ground truth (`D_*.npy`) of the same frame. `error` is
the mean absolute error in metres over the pixels whose true depth is at most 100 m (the network's range), per
depth map, averaged over the depth maps; `depth/truth` is the median of depth / truth over those pixels; `abs rel`
the mean of |depth - truth| / truth over every pixel (far ones too: with larger shifts they come into range).

1. Speed, frame shift 3: flights at 0.1 m per frame (Still Box's) and the same worlds at 0.2 m per frame (every
   other frame of the nominal flights, which is what rendering them at that step gives), compared on the same
   depth maps: without motion the fast flights' depth is about half the truth; with `--displacement 0.2`, and
   with `--motion motion_0000.csv`, the error should be close to the nominal flights'. Flights rendered with
   `--step 0.2` (other worlds: the longer path moves objects) are reported too.
2. Depth range: near (`--depth_range 2,20`) and far (`--depth_range 40,400`) flights at 0.1 m per frame, with
   `--frame_shift auto --max_shift K --motion`: the shifts chosen, and the error against every fixed shift
   1..K made metric with the same motion log, all on the frames K onwards (those that every shift can reach).

Prints the tables; `--json PATH` writes the figures. The numbers depend on the network: a network that has not
learnt parallax cannot pass these checks (tests/test_motion_trained.py asserts them for a trained checkpoint).
`--resolution` sets the flights' frame size (default 64). `--smoke` (a check that the script runs, not a
measurement): one flight per set, 4 frames of 32x32, `--max_shift 1`, and `--out` in a new temporary folder unless
given.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys

import numpy as np

from depthnet_jax.common import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _infer_module():
  """infer.py (at the top of the repository, not a package module), loaded by path."""
  from depthnet_jax.testing import config_files
  return config_files.load_module(os.path.join(ROOT, 'infer.py'), 'depthnet_infer_cli')


_INFER = None   # infer.py, loaded by measure()


def render(out: str, *, scenes: int, frames: int, step: float, depth_range: str, seed: int, resolution: int) -> str:
  """`python -m tfds_stillbox.render` into `out`: one scene per folder; returns the tree (`out/<resolution>`)."""
  from tfds_stillbox.render import cli
  tree = os.path.join(out, str(resolution))
  if not os.path.isdir(tree):
    code = cli.main(['--out', out, '--resolution', str(resolution), '--scenes', str(scenes), '--frames', str(frames),
                     '--seed', str(seed), '--step', str(step), '--depth_range', depth_range,
                     '--scenes_per_folder', '1', '--jobs', '0'])
    if code:
      raise SystemExit(f'rendering into {out} failed (exit {code})')
  return tree


def scene_folders(tree: str) -> list[str]:
  return [os.path.join(tree, d) for d in sorted(os.listdir(tree), key=int)]


def infer(checkpoint: str, folder: str, output: str, *flags, motion_log: bool = False) -> str:
  """infer.py on one flight folder (with `motion_log`: `--motion` its own log); returns its summary line."""
  if motion_log:
    with open(os.path.join(folder, 'metadata.json')) as f:
      flags += ('--motion', os.path.join(folder, json.load(f)['scenes'][0]['motion']))
  stdout, stderr = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
    code = _INFER.main(['--checkpoint', checkpoint, '--input', folder, '--output', output, '--extensions', 'jpg',
                        '--output_raw', '--overwrite', *map(str, flags)])
  if code:
    raise SystemExit(f'infer.py failed on {folder}: {stderr.getvalue().strip()}')
  return stdout.getvalue().strip()


def errors(folder: str, output: str, keep=lambda t: True) -> tuple[list[float], list[float], list[float]]:
  """Per depth map of `output` of the frames t that `keep(t)`: mean |depth - truth| over the pixels whose truth is
  at most 100 m, the median of depth / truth and the mean |depth - truth| / truth over every pixel."""
  with open(os.path.join(folder, 'metadata.json')) as f:
    scene = json.load(f)['scenes'][0]
  stems = {os.path.splitext(name)[0]: (t, depth) for t, (name, depth) in enumerate(zip(scene['imgs'],
                                                                                       scene['depth']))}
  maes, ratios, rels = [], [], []
  for name in sorted(os.listdir(output)):
    if not name.endswith('_depth.npy'):
      continue
    t, truth_file = stems[name[:-len('_depth.npy')]]
    if not keep(t):
      continue
    depth = np.load(os.path.join(output, name)).astype(np.float64)
    truth = np.load(os.path.join(folder, truth_file)).astype(np.float64)
    valid = (truth > 1e-3) & (truth <= 100.0)
    maes.append(float(np.abs(depth - truth)[valid].mean()))
    ratios.append(float(np.median(depth[valid] / truth[valid])))
    every = truth > 1e-3
    rels.append(float((np.abs(depth - truth)[every] / truth[every]).mean()))
  return maes, ratios, rels


def shifts(output: str, keep=lambda t: True) -> list[int]:
  with open(os.path.join(output, 'shifts.csv')) as f:
    return [int(r['shift']) for r in csv.DictReader(f) if r['shift'] and keep(int(r['index']))]


def every_other_frame(tree: str, out: str) -> str:
  """The flights of `tree` seen at twice their speed: frames 0, 2, 4, ... of each scene (with their depth), the
  speed doubled in metadata.json and the motion log's rows 0, 2, 4, ... renumbered: what rendering the same worlds
  at twice the step gives (`--step` renders other worlds, as its longer path changes where objects may be)."""
  import shutil
  target = os.path.join(out, os.path.basename(tree))
  if os.path.isdir(target):
    return target
  for folder in scene_folders(tree):
    dest = os.path.join(target, os.path.basename(folder))
    os.makedirs(dest)
    with open(os.path.join(folder, 'metadata.json')) as f:
      metadata = json.load(f)
    scene = metadata['scenes'][0]
    for name in scene['imgs'][::2] + scene['depth'][::2]:
      shutil.copyfile(os.path.join(folder, name), os.path.join(dest, name))
    with open(os.path.join(folder, scene['motion'])) as f:
      rows = list(csv.reader(f))
    with open(os.path.join(dest, scene['motion']), 'w', newline='') as f:
      writer = csv.writer(f, lineterminator='\n')
      writer.writerow(rows[0])
      for i, row in enumerate(rows[1::2]):
        writer.writerow([i, *row[1:]])
    scene.update(imgs=scene['imgs'][::2], depth=scene['depth'][::2], length=len(scene['imgs'][::2]),
                 speed=[2 * v for v in scene['speed']])
    metadata['args']['step'] = 2 * metadata['args']['step']
    with open(os.path.join(dest, 'metadata.json'), 'w') as f:
      json.dump(metadata, f)
  return target


def measure(checkpoint: str, out: str, *, scenes: int = 8, frames: int = 16, max_shift: int = 8,
            seed: int = 100, resolution: int = 64, log=print) -> dict:
  """Runs both experiments; returns the figures (see the module docstring)."""
  global _INFER
  _INFER = _INFER or _infer_module()
  checkpoint = os.path.abspath(checkpoint)
  results: dict = {'checkpoint': checkpoint, 'scenes': scenes, 'frames': frames, 'max_shift': max_shift}

  def run_set(tree: str, name: str, *flags, motion_log: bool = False, keep=lambda t: True) -> dict:
    maes, ratios, rels, chosen = [], [], [], []
    for folder in scene_folders(tree):
      output = os.path.join(out, 'infer', name.replace(' ', '_').replace('/', '_').replace(',', ''),
                            os.path.basename(folder))
      summary = infer(checkpoint, folder, output, *flags, motion_log=motion_log)
      m, r, a = errors(folder, output, keep)
      maes += m
      ratios += r
      rels += a
      if '--frame_shift' in flags and flags[flags.index('--frame_shift') + 1] == 'auto':
        chosen += shifts(output, keep)
    figures = {'error_m': float(np.mean(maes)), 'ratio': float(np.median(ratios)), 'abs_rel': float(np.mean(rels)),
               'depth_maps': len(maes)}
    if chosen:
      figures['mean_shift'] = float(np.mean(chosen))
      figures['shifts'] = {str(k): chosen.count(k) for k in sorted(set(chosen))}
    shown = f'   mean shift {figures["mean_shift"]:.2f} {figures["shifts"]}' if chosen else ''
    log(f'  {name:<34} error {figures["error_m"]:7.3f} m   depth/truth {figures["ratio"]:.3f}   abs rel '
        f'{figures["abs_rel"]:.3f}   ({len(maes)} depth maps){shown}\n    {summary[-160:]}')
    return figures

  # The same worlds at 0.1 and 0.2 m per frame (every other frame of flights twice as long), compared on the same
  # depth maps: nominal frames 6, 8, ... are the fast flights' frames 3, 4, ...; and other worlds rendered at 0.2.
  flights = dict(seed=seed, resolution=resolution)
  nominal = render(os.path.join(out, 'nominal'), scenes=scenes, frames=2 * frames, step=0.1, depth_range='8,150',
                   **flights)
  fast = every_other_frame(nominal, os.path.join(out, 'fast_same_worlds'))
  rendered = render(os.path.join(out, 'fast_rendered'), scenes=scenes, frames=frames, step=0.2, depth_range='8,150',
                    **flights)
  log('1. speed: frame shift 3')
  speed = results['speed'] = {}
  speed['nominal_0.1'] = run_set(nominal, 'nominal 0.1 m/frame', '--frame_shift', 3,
                                 keep=lambda t: t % 2 == 0 and t >= 6)
  speed['fast_0.2_unscaled'] = run_set(fast, 'same worlds 0.2 m/frame, no motion', '--frame_shift', 3)
  speed['fast_0.2_displacement'] = run_set(fast, 'same worlds, --displacement 0.2', '--frame_shift', 3,
                                           '--displacement', 0.2)
  speed['fast_0.2_motion_log'] = run_set(fast, 'same worlds, --motion', '--frame_shift', 3, motion_log=True)
  speed['rendered_0.2_unscaled'] = run_set(rendered, 'rendered --step 0.2, no motion', '--frame_shift', 3)
  speed['rendered_0.2_motion_log'] = run_set(rendered, 'rendered --step 0.2, --motion', '--frame_shift', 3,
                                             motion_log=True)
  near = render(os.path.join(out, 'near'), scenes=scenes, frames=frames, step=0.1, depth_range='2,20', **flights)
  far = render(os.path.join(out, 'far'), scenes=scenes, frames=frames, step=0.1, depth_range='40,400', **flights)
  log(f'2. depth range: --frame_shift auto --max_shift {max_shift} against fixed shifts (all with --motion)')
  ranges = results['depth_range'] = {}
  for name, tree in (('near_2_20', near), ('far_40_400', far)):
    reachable = lambda t: t >= max_shift   # noqa: E731 - the frames every shift can give
    ranges[name] = {'auto': run_set(tree, f'{name} auto', '--frame_shift', 'auto', '--max_shift', max_shift,
                                    motion_log=True, keep=reachable)}
    for k in range(1, max_shift + 1):
      ranges[name][f'shift_{k}'] = run_set(tree, f'{name} shift {k}', '--frame_shift', k, motion_log=True,
                                           keep=reachable)
  return results


def work(args) -> int:
  import tempfile

  from depthnet_jax.infer import checkpoint_input
  if args.smoke:
    args.scenes, args.frames, args.max_shift, args.resolution = 1, 4, 1, 32
  scenes = cli.check_int('--scenes', args.scenes, 1)
  max_shift = cli.check_int('--max_shift', args.max_shift, 1)
  frames = cli.check_int('--frames', args.frames, max_shift + 1, why='more than --max_shift')
  resolution = cli.check_int('--resolution', args.resolution, 16, 512)
  if args.out or not args.smoke:
    cli.check_writable_dir(args.out or 'motion_check', '--out')
  json_path = cli.check_output_file('--json', args.json, True, ('.json',)) if args.json else None
  checkpoint_input.info(args.checkpoint, 'best')   # a --checkpoint infer.py cannot read: one line, nothing rendered
  out = os.path.abspath(args.out or (tempfile.mkdtemp(prefix='depthnet-motion-check-') if args.smoke
                                     else 'motion_check'))
  results = measure(args.checkpoint, out, scenes=scenes, frames=frames, max_shift=max_shift, resolution=resolution)
  if json_path:
    from depthnet_jax.common import atomic
    atomic.write_text(json_path, json.dumps(results, indent=1) + '\n')
  return 0


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--checkpoint', required=True, help='training workdir, checkpoint directory or .pth.tar')
  p.add_argument('--out', default=None, help='folder for the rendered flights and the depth maps (default '
                 'motion_check)')
  p.add_argument('--scenes', type=int, default=8, help='flights per set')
  p.add_argument('--frames', type=int, default=16, help='frames per flight (the nominal ones: twice as many)')
  p.add_argument('--max_shift', type=int, default=8, help='largest shift tried by --frame_shift auto')
  p.add_argument('--resolution', type=int, default=64, help='the flights\' frame size in pixels (square)')
  p.add_argument('--json', default='', help='also write the figures here')
  p.add_argument('--smoke', action='store_true', help='1 flight per set, 4 frames of 32x32, --max_shift 1: checks '
                 'that it runs')
  return p


def main(argv: list[str] | None = None) -> int:
  return cli.main(parser(), work, argv)


if __name__ == '__main__':
  sys.exit(main())
