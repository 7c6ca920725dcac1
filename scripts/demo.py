"""`make demo`: build a small rendered Still Box, train DepthNet on it, evaluate it against a baseline, draw it.

1. `tfds build tfds_stillbox --config synth64_small` (800 rendered 64x64 scenes; skipped when already built);
2. `train.py --config configs/synth64.py` on it for `--steps` steps (resumes if the run exists);
3. evaluates the best checkpoint on the validation split beside the constant-depth baseline (predicting the
   mean training target everywhere) and prints both;
4. writes `<out>/examples.png`: rows of frame 1, frame 2, ground truth, prediction (rainbow, 0-100 m);
5. renders a new scene into `<out>/scene/`, runs `infer.py` on it as a user would (its `main`, in this process),
   with this run's model (`<out>/infer/`) and with the shipped reference model (`models/reference64`,
   `<out>/infer_reference/`), prints both models' mean absolute error on it (over the pixels within 100 m) and
   writes `<out>/inference.png`: rows of frame t + 3, its true depth, this run's predicted depth, the reference
   model's.

Exits 1 if the trained model does not beat the baseline. `--data_dir` takes a built synth64_small from elsewhere
(default `<out>/data`), `--workdir` a run (default `<out>/run`). `--smoke` checks that the demo runs, in seconds:
the test suite's tiny dataset and config (`synth_tiny`, 32x32, `configs/test.py`, 6 steps; a run given by
`--workdir` that has taken them is not trained again), a 32x32 scene, `--out` in a new temporary folder unless given;
the baseline comparison is printed but not enforced (6 steps need not beat it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from depthnet_jax.common import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_NAME = 'models/reference64'   # the shipped reference model (docs/reference_models.md)
REFERENCE = os.path.join(ROOT, *REFERENCE_NAME.split('/'))


def _run(cmd: list[str]) -> None:
  """Runs a step's command; its failure ends the demo with its exit code (its own `error:` line is the message)."""
  print('$ ' + ' '.join(cmd), flush=True)
  code = subprocess.run(cmd, cwd=ROOT).returncode
  if code:
    raise SystemExit(code)


def _infer(argv: list[str]) -> None:
  """`infer.py argv` as a user runs it, but in this process (no second start-up of JAX): its own entry point
  `infer.main`, loaded by path (infer.py is not a package module); its failure (one `error:` line) ends the demo."""
  from depthnet_jax.testing import config_files
  print('$ ' + ' '.join([sys.executable, os.path.join(ROOT, 'infer.py'), *argv]), flush=True)
  code = config_files.load_module(os.path.join(ROOT, 'infer.py'), 'depthnet_infer_cli').main(argv)
  if code:
    raise SystemExit(code)


# The demo's dataset, recipe, steps and scene size; --smoke: the test suite's (seconds, not minutes).
FULL = {'dataset': 'synth64_small', 'config': 'synth64.py', 'steps': 300, 'size': 64}
SMOKE = {'dataset': 'synth_tiny', 'config': 'test.py', 'steps': 6, 'size': 32}
MAX_STEPS = 100000   # --steps: the demo trains a few hundred steps; a long run is train.py's (docs/training.md)


def _built(data_dir: str, name: str) -> bool:
  """Whether `tfds build` has finished the config `name` of the builder's version in `data_dir` (it writes
  dataset_info.json last): the build, a `tfds` process of several seconds, is skipped then."""
  from tfds_stillbox.tfds_stillbox_dataset_builder import Builder
  return os.path.isfile(os.path.join(data_dir, 'tfds_stillbox', name, str(Builder.VERSION), 'dataset_info.json'))


def build(name: str, data_dir: str) -> None:
  """Step 1: `tfds build` of the Still Box config `name` into `data_dir`, unless it is built there."""
  if not _built(data_dir, name):
    _run([os.path.join(os.path.dirname(sys.executable), 'tfds'), 'build', 'tfds_stillbox', '--config', name,
          '--data_dir', data_dir])


def train(config: str, workdir: str, steps: int, overrides: list[str]) -> None:
  """Step 2: train.py with `configs/<config>` and `overrides` (it resumes a run of `workdir`, if any), unless the
  run has taken its `steps` already (train.py would only start up, restore and stop: seconds of nothing)."""
  from depthnet_jax.checkpoints import loading
  done = loading.latest_step(workdir)
  if done >= steps:
    print(f'train: the run in {workdir} has taken {done} steps (>= {steps}); not resumed', flush=True)
    return
  _run([sys.executable, os.path.join(ROOT, 'train.py'), '--config', os.path.join(ROOT, 'configs', config),
        '--workdir', workdir, *overrides])


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--out', default=None, help='output folder (dataset, run, pictures; default demo_out)')
  p.add_argument('--steps', type=int, default=None,
                 help=f'training steps of 32 pairs, 1 to {MAX_STEPS} (default {FULL["steps"]})')
  p.add_argument('--data_dir', default=None, help=f'TFDS data_dir of {FULL["dataset"]} (built there if it is not; '
                 'default <out>/data)')
  p.add_argument('--workdir', default=None, help='the training run (resumed if it exists; default <out>/run)')
  p.add_argument('--smoke', action='store_true', help='the tiny dataset and config of the tests: checks that it runs')
  return p


def main(argv: list[str] | None = None) -> int:
  return cli.main(parser(), work, argv)


def work(args) -> int:
  setting = SMOKE if args.smoke else FULL
  steps = cli.check_int('--steps', setting['steps'] if args.steps is None else args.steps, 1, MAX_STEPS,
                        why='a demo; train.py trains longer runs')
  out = os.path.abspath(args.out or (tempfile.mkdtemp(prefix='depthnet-demo-') if args.smoke else 'demo_out'))
  data_dir = os.path.abspath(args.data_dir or os.path.join(out, 'data'))
  workdir = os.path.abspath(args.workdir or os.path.join(out, 'run'))
  for flag, folder in (('--out', out), ('--data_dir', data_dir), ('--workdir', workdir)):
    cli.check_writable_dir(folder, flag)
  from depthnet_jax.train import checks as train_checks
  train_checks.check_paths({'eval_only': False, 'init_from': ''}, workdir)   # train.py's check, before the build
  os.makedirs(out, exist_ok=True)
  dataset = f'tfds_stillbox/{setting["dataset"]}'
  started = time.time()
  build(setting['dataset'], data_dir)
  built = time.time()
  train(setting['config'], workdir, steps, [f'--config.dataset={dataset}', f'--config.data_dir={data_dir}',
                                     f'--config.num_train_steps={steps}', '--config.eval_every_epochs=0.5'])
  trained = time.time()

  import ml_collections
  import numpy as np
  from flax import nnx

  from depthnet_jax.checkpoints import checkpointing
  from depthnet_jax.common import atomic
  from depthnet_jax.model import models
  from depthnet_jax.train import trainer as train_lib

  # The config the run was trained with (configs/synth64.py and the overrides above), as train.py wrote it.
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  config.dataset, config.data_dir = dataset, data_dir
  trainer = train_lib.Trainer(config)
  # Both through training's evaluation of the validation split (evaluate.evaluate, the original protocol).
  mean_depth = train_lib.training_depths(trainer)['mean']
  baseline = trainer.evaluate(*nnx.split(models.ConstantDepth(mean_depth), nnx.Param, nnx.BatchStat)).metrics
  best = checkpointing.TrainCheckpoints(workdir).path_of('best')
  params, stats = trainer.weights_of(best)
  result = trainer.evaluate(trainer.eval_def, params, stats, images=6)
  metrics, pictures = result.metrics, result.pictures
  print(f'\nvalidation split of {dataset}, every (i, i+3) pair; best checkpoint {best}')
  print(f'{"metric":<18} {"constant " + format(mean_depth, ".2f") + " m":>16} {"DepthNet":>12}')
  for k in train_lib.EVAL_METRICS:
    print(f'{k:<18} {baseline[k]:>16.4f} {metrics[k]:>12.4f}')
  sheet = np.concatenate(list(pictures), axis=0)
  sheet = np.repeat(np.repeat(sheet, 2, axis=0), 2, axis=1)
  path = os.path.join(out, 'examples.png')
  atomic.write_png(path, sheet)
  print(f'\nwrote {path} (rows: frame 1 | frame 2 | ground truth | prediction, rainbow 0-100 m)')
  evaluated = time.time()
  unseen_scene(out, workdir, setting['size'], steps)
  print(f'time: build {built - started:.0f} s, train {trained - built:.0f} s, evaluate {evaluated - trained:.0f} s, '
        f'infer {time.time() - evaluated:.0f} s')
  if not metrics['depth_error'] < baseline['depth_error']:
    if args.smoke:
      print(f'(--smoke: the {steps}-step model does not beat the constant-depth baseline; not enforced)')
      return 0
    cli.report('the trained model does not beat the constant-depth baseline')
    return 1
  return 0


def unseen_scene(out: str, workdir: str, size: int, steps: int) -> None:
  """Step 5: a new scene, infer.py on it with the run's model and the reference model, their errors, the picture."""
  import imageio.v3 as iio
  import numpy as np

  from depthnet_jax.common import atomic, colormaps
  from depthnet_jax.common.conventions import MAX_DEPTH
  from tfds_stillbox.render import scenes
  scene_dir, infer_dir = os.path.join(out, 'scene'), os.path.join(out, 'infer')
  os.makedirs(scene_dir, exist_ok=True)
  scene = scenes.render_scene((2026, 0), size)   # a seed the dataset does not use
  for i, frame in enumerate(scene.frames):
    iio.imwrite(os.path.join(scene_dir, f'frame_{i:02d}.png'), frame)
  _infer(['--checkpoint', workdir, '--input', scene_dir, '--output', infer_dir, '--frame_shift', '3', '--output_depth',
          '--output_raw'])
  reference_dir = os.path.join(out, 'infer_reference')
  _infer(['--checkpoint', REFERENCE, '--input', scene_dir, '--output', reference_dir, '--frame_shift', '3',
          '--output_depth', '--output_raw'])
  rows, errors = [], {'demo': [], 'reference': []}
  for i in range(3, len(scene.frames)):
    row = [scene.frames[i], colormaps.depth_to_rgb(scene.depth[i])]
    for name, folder in (('demo', infer_dir), ('reference', reference_dir)):
      within = scene.depth[i] <= MAX_DEPTH   # the network's range (training targets are capped at 100 m)
      predicted = np.load(os.path.join(folder, f'frame_{i:02d}_depth.npy'))
      errors[name].append(float(np.mean(np.abs(predicted - scene.depth[i])[within])))
      row.append(iio.imread(os.path.join(folder, f'frame_{i:02d}_depth.png')))
    if i % 2:
      rows.append(np.concatenate(row, axis=1))
  sheet = np.concatenate(rows, axis=0)
  path = os.path.join(out, 'inference.png')
  atomic.write_png(path, np.repeat(np.repeat(sheet, 2, axis=0), 2, axis=1))
  print(f'wrote {path} (rows: frame t+3 | true depth | this run\'s depth | the reference model\'s depth; pairs '
        '(t, t+3))')
  print(f'unseen scene, mean |depth - truth| (truth <= {MAX_DEPTH:g} m) over frames 3-{len(scene.frames) - 1}: '
        f'this run ({steps} steps) '
        f'{np.mean(errors["demo"]):.2f} m, reference model ({REFERENCE_NAME}) {np.mean(errors["reference"]):.2f} m')


if __name__ == '__main__':
  sys.exit(main())
