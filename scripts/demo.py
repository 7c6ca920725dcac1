"""`make demo`: build a small rendered Still Box, train DepthNet on it, evaluate it against a baseline, draw it.

1. `tfds build tfds_stillbox --config synth64_small` (800 rendered 64x64 scenes; skipped when already built);
2. `train.py --config configs/synth64.py` on it for `--steps` steps (resumes if the run exists);
3. evaluates the best checkpoint on the validation split beside the constant-depth baseline (predicting the
   mean training target everywhere) and prints both;
4. writes `<out>/examples.png`: rows of frame 1, frame 2, ground truth, prediction (rainbow, 0-100 m);
5. renders a new scene into `<out>/scene/`, runs `infer.py` on it as a user would, with this run's model
   (`<out>/infer/`) and with the shipped reference model (`models/reference64`, `<out>/infer_reference/`), prints
   both models' mean absolute error on it (over the pixels within 100 m) and writes `<out>/inference.png`: rows
   of frame t + 3, its true depth, this run's predicted depth, the reference model's.

Exits 1 if the trained model does not beat the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_NAME = 'models/reference64'   # the shipped reference model (docs/reference_models.md)
REFERENCE = os.path.join(ROOT, *REFERENCE_NAME.split('/'))


def _run(cmd: list[str]) -> None:
  print('$ ' + ' '.join(cmd), flush=True)
  subprocess.run(cmd, check=True, cwd=ROOT)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', default='demo_out', help='output folder (dataset, run, pictures)')
  parser.add_argument('--steps', type=int, default=300, help='training steps of 32 pairs')
  args = parser.parse_args()
  out = os.path.abspath(args.out)
  data_dir, workdir = os.path.join(out, 'data'), os.path.join(out, 'run')
  bin_dir = os.path.dirname(sys.executable)
  started = time.time()

  _run([os.path.join(bin_dir, 'tfds'), 'build', 'tfds_stillbox', '--config', 'synth64_small', '--data_dir', data_dir])
  built = time.time()
  overrides = ['--config.dataset=tfds_stillbox/synth64_small', f'--config.data_dir={data_dir}',
               f'--config.num_train_steps={args.steps}', '--config.eval_every_epochs=0.5']
  _run([sys.executable, os.path.join(ROOT, 'train.py'), '--config', os.path.join(ROOT, 'configs', 'synth64.py'),
        '--workdir', workdir, *overrides])
  trained = time.time()

  import imageio.v3 as iio
  import ml_collections
  import numpy as np

  from depthnet_jax.checkpoints import checkpointing
  from depthnet_jax.common import atomic, colormaps
  from depthnet_jax.common.conventions import MAX_DEPTH
  from depthnet_jax.train import trainer as train_lib

  # The config the run was trained with (configs/synth64.py and the overrides above), as train.py wrote it.
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  config.dataset, config.data_dir = 'tfds_stillbox/synth64_small', data_dir
  trainer = train_lib.Trainer(config)
  mean_depth = train_lib.mean_training_depth(trainer)
  baseline, _ = trainer.evaluate(None, None, constant=mean_depth)
  best = checkpointing.TrainCheckpoints(workdir).path_of('best')
  params, stats = trainer.weights_of(best)
  metrics, pictures = trainer.evaluate(params, stats, images=6)
  print(f'\nvalidation split of synth64_small, every (i, i+3) pair; best checkpoint {best}')
  print(f'{"metric":<18} {"constant " + format(mean_depth, ".2f") + " m":>16} {"DepthNet":>12}')
  for k in train_lib.EVAL_METRICS:
    print(f'{k:<18} {baseline[k]:>16.4f} {metrics[k]:>12.4f}')
  sheet = np.concatenate(list(pictures), axis=0)
  sheet = np.repeat(np.repeat(sheet, 2, axis=0), 2, axis=1)
  path = os.path.join(out, 'examples.png')
  atomic.write_png(path, sheet)
  print(f'\nwrote {path} (rows: frame 1 | frame 2 | ground truth | prediction, rainbow 0-100 m)')
  evaluated = time.time()

  from tfds_stillbox.render import scenes
  scene_dir, infer_dir = os.path.join(out, 'scene'), os.path.join(out, 'infer')
  os.makedirs(scene_dir, exist_ok=True)
  scene = scenes.render_scene((2026, 0), 64)   # a seed the dataset does not use
  for i, frame in enumerate(scene.frames):
    iio.imwrite(os.path.join(scene_dir, f'frame_{i:02d}.png'), frame)
  _run([sys.executable, os.path.join(ROOT, 'infer.py'), '--checkpoint', workdir, '--input', scene_dir, '--output',
        infer_dir, '--frame_shift', '3', '--output_depth', '--output_raw'])
  reference_dir = os.path.join(out, 'infer_reference')
  _run([sys.executable, os.path.join(ROOT, 'infer.py'), '--checkpoint', REFERENCE, '--input', scene_dir, '--output',
        reference_dir, '--frame_shift', '3', '--output_depth', '--output_raw'])
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
        f'this run ({args.steps} steps) '
        f'{np.mean(errors["demo"]):.2f} m, reference model ({REFERENCE_NAME}) {np.mean(errors["reference"]):.2f} m')
  print(f'time: build {built - started:.0f} s, train {trained - built:.0f} s, evaluate {evaluated - trained:.0f} s, '
        f'infer {time.time() - evaluated:.0f} s')
  if not metrics['depth_error'] < baseline['depth_error']:
    print('error: the trained model does not beat the constant-depth baseline', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  main()
