"""A reference model, trained and published with one command: `make reference [RESOLUTION=64|128|256]` runs

    .venv/bin/python scripts/reference.py --out reference_out [--resolution R] [--data_dir DIR] [--steps N]

for the recipe of resolution R (`RECIPES`: `configs/reference<R>.py` on the builder config `synth<R>_large`; 128
warm-starts from `models/reference64`, 256 from `models/reference128`):

1. `tfds build tfds_stillbox --config synth<R>_large --data_dir DIR` (rendered scenes; skipped when built; DIR
   defaults to <out>/data);
2. `train.py --config configs/reference<R>.py --workdir <out>/run` (resumes if the run exists: stop it at any
   time and run the same command again). `--steps N` stops after N steps instead, on the same schedule: the early
   part of the curve, to compare with the published one (N from 1 to the recipe's num_train_steps);
3. evaluates the best checkpoint on the validation split with both protocols of `python -m depthnet_jax.evaluate`
   (`original`, training's, and `followup`), beside the constant-depth baselines (the mean and the median training
   depth everywhere) under the same protocols;
4. renders the regression set, the recipe's `holdout_scenes` scenes of seed HOLDOUT_SEED at R (`python -m
   tfds_stillbox.render`; a seed the datasets do not use), and evaluates the model on it (original protocol): the
   figure tests/test_reference_model.py keeps the shipped model to;
5. exports the best checkpoint as a model checkpoint `<out>/reference<R>` (float32) whose metadata records what it
   was trained on (dataset, scenes, steps, recipe, commit, wall time, figures; `reference` key);
6. draws `<out>/learning_curve.png` (from the run's event files, `scripts/learning_curve.py`'s drawing),
   `<out>/predictions.png` (held-out scenes: frame t, frame t+3, true depth, predicted depth; rainbow 0-100 m),
   `<out>/error_by_depth.png`, and writes `<out>/summary.json` with every figure.

Nothing existing is overwritten: the export refuses an existing `<out>/reference<R>` (move it away first).
`--workdir` takes the run from elsewhere (default `<out>/run`); with `--steps N`, a run that has taken N steps is
not trained again (no train.py start-up). `--smoke` checks that the whole command runs, in seconds: the test
suite's tiny dataset and config (`synth_tiny`, `configs/test.py`), a regression set of SMOKE_HOLDOUT_SCENES scenes,
the constant baselines over SMOKE_CONSTANT_BATCHES batches, `--out` in a new temporary folder unless given. Its
figures mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import typing

from depthnet_jax.common import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLDOUT_SEED = 2027   # the regression set: scenes the datasets (seed 0) do not hold


class Recipe(typing.NamedTuple):   # not a dataclass: the tests load this file without a sys.modules entry
  """One reference model: its resolution, builder config, config file and regression set size."""
  resolution: int
  dataset: str
  holdout_scenes: int   # scenes of the regression set (fewer at larger sizes: the test stays fast)

  @property
  def name(self) -> str:
    return f'reference{self.resolution}'

  @property
  def config(self) -> str:
    return os.path.join(ROOT, 'configs', f'{self.name}.py')


RECIPES = {r.resolution: r for r in (Recipe(64, 'synth64_large', 16), Recipe(128, 'synth128_large', 16),
                                     Recipe(256, 'synth256_large', 4))}
CONSTANT_BATCHES = 200                    # training batches the constant baseline's mean depth is taken over
# --smoke: the test suite's tiny dataset and config instead, a smaller regression set, fewer baseline batches.
SMOKE_DATASET, SMOKE_CONFIG = 'synth_tiny', os.path.join(ROOT, 'configs', 'test.py')
SMOKE_HOLDOUT_SCENES, SMOKE_CONSTANT_BATCHES = 2, 5


def _run(cmd: list[str]) -> None:
  """Runs a step's command; its failure ends this one with its exit code (its own `error:` line is the message)."""
  print('$ ' + ' '.join(cmd), flush=True)
  code = subprocess.run(cmd, cwd=ROOT).returncode
  if code:
    raise SystemExit(code)


def schedule_steps(config_file: str) -> int | None:
  """The `num_train_steps` a config file sets (`c.num_train_steps = N`, N >= 1), read without importing it
  (configs/ is not installed: a script cannot import `from configs import default`); None if it sets none."""
  import ast
  with open(config_file, encoding='utf-8') as f:
    tree = ast.parse(f.read())
  steps = [node.value.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
           and isinstance(node.value, ast.Constant) and isinstance(node.value.value, int)
           and any(isinstance(t, ast.Attribute) and t.attr == 'num_train_steps' for t in node.targets)]
  return steps[-1] if steps and steps[-1] >= 1 else None


def check_args(args) -> tuple[str, str, int | None]:
  """(dataset, config file, --steps) of the flags, checked before any work (one `error:` line each): --steps from 1
  to the config's num_train_steps (it stops the same schedule earlier; a config without one: train.py's most)."""
  recipe = RECIPES[args.resolution]
  dataset, config = (SMOKE_DATASET, SMOKE_CONFIG) if args.smoke else (recipe.dataset, recipe.config)
  steps = args.steps
  if steps is not None:
    most = schedule_steps(config)
    if most is None:
      from depthnet_jax.train import checks as train_checks
      most, why = train_checks.MAX_STEPS, 'the step counter is a 32-bit integer'
    else:
      why = f"{os.path.relpath(config, ROOT)}'s num_train_steps: --steps stops its schedule earlier"
    steps = cli.check_int('--steps', steps, 1, most, why=why)
  return dataset, config, steps


def check_workdir(workdir: str) -> None:
  """The run's folder: new, empty or a training run's (train.py's own check, before the build, not after it)."""
  from depthnet_jax.train import checks as train_checks
  train_checks.check_paths({'eval_only': False, 'init_from': ''}, workdir)


def _commit() -> dict:
  try:
    sha = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    dirty = bool(subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.strip())
    return {'commit': sha, 'uncommitted_changes': dirty}
  except (OSError, subprocess.CalledProcessError):
    return {'commit': 'unknown (not a git checkout)', 'uncommitted_changes': None}


def _machine() -> str:
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), cpu)
  except OSError:
    pass
  return f'{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}, Python {platform.python_version()}'


def render_holdout(out: str, scenes: int, resolution: int = 64) -> str:
  """The regression set as a Still Box tree (the renderer's command line); returns its resolution folder."""
  from tfds_stillbox.render import cli as render_cli
  tree = os.path.join(out, str(resolution))
  if not os.path.isdir(tree):
    code = render_cli.main(['--out', out, '--resolution', str(resolution), '--scenes', str(scenes), '--seed',
                            str(HOLDOUT_SEED), '--jobs', '1'])
    if code:
      raise SystemExit(f'error: rendering the regression set into {out} failed')
  return tree


def predictions_sheet(predictor, source, scenes: int = 6, shift: int = 3, zoom: int = 3):
  """uint8 RGB: per scene a row of frame t, frame t+shift, true depth of t+shift, predicted depth (0-100 m)."""
  import numpy as np

  from depthnet_jax.common import colormaps
  from tfds_stillbox import codec
  rows = []
  for index in range(min(scenes, len(source))):
    record = source[index]
    t = (index * 2) % (len(record['frames']) - shift)
    first = codec.decode_jpeg(record['frames'][t])
    second = codec.decode_jpeg(record['frames'][t + shift])
    truth = codec.decode_depth(record['depth'][t + shift])
    predicted = predictor.predict_batch(first[None], second[None])[0]
    rows.append(np.concatenate([first, second, colormaps.depth_to_rgb(truth), colormaps.depth_to_rgb(predicted)],
                               axis=1))
  sheet = np.concatenate(rows, axis=0)
  return np.repeat(np.repeat(sheet, zoom, axis=0), zoom, axis=1)


def evaluate_all(model, source, constants: dict[str, float], nominal: float) -> dict:
  """The model (eval mode) and the constant baselines under both protocols on `source`."""
  from flax import nnx

  from depthnet_jax.evaluation import evaluate
  from depthnet_jax.model import models
  results = {'model': {}, **{name: {} for name in constants}}
  for protocol in evaluate.PROTOCOLS:
    print(f'evaluating ({protocol} protocol) ...', flush=True)
    results['model'][protocol] = evaluate.evaluate(*nnx.split(model, nnx.Param, nnx.BatchStat), source,
                                                   protocol=protocol, nominal=nominal, show_progress=True)
    for name, depth in constants.items():
      results[name][protocol] = evaluate.evaluate(
          *nnx.split(models.ConstantDepth(depth), nnx.Param, nnx.BatchStat), source, protocol=protocol,
          nominal=nominal)
  return results


def _built(data_dir: str, name: str) -> bool:
  """Whether `tfds build` has finished the config `name` of the builder's version in `data_dir` (it writes
  dataset_info.json last): the build, a `tfds` process of several seconds, is skipped then."""
  from tfds_stillbox.tfds_stillbox_dataset_builder import Builder
  return os.path.isfile(os.path.join(data_dir, 'tfds_stillbox', name, str(Builder.VERSION), 'dataset_info.json'))


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--out', default=None, help='output folder (run, pictures, exported model; default reference_out)')
  p.add_argument('--resolution', type=int, default=64, choices=sorted(RECIPES),
                 help='which reference model: configs/reference<R>.py on its builder config (default 64)')
  p.add_argument('--data_dir', default=None, help='TFDS data_dir of the dataset (default <out>/data)')
  p.add_argument('--workdir', default=None, help='the training run (resumed if it exists; default <out>/run)')
  p.add_argument('--steps', type=int, default=None,
                 help="stop after this many steps, 1 to the config's num_train_steps (its schedule; default: the "
                      'whole run)')
  p.add_argument('--train_only', action='store_true',
                 help='stop after training (no evaluation, export or pictures): e.g. with --steps, to compare '
                      'the early curve with the published one (scripts/learning_curve.py --compare)')
  p.add_argument('--smoke', action='store_true', help="the tests' tiny dataset and config: checks that it runs")
  return p


def work(args) -> int:
  dataset, config, _ = check_args(args)
  out = os.path.abspath(args.out or (tempfile.mkdtemp(prefix='depthnet-reference-') if args.smoke
                                     else 'reference_out'))
  data_dir = os.path.abspath(args.data_dir or os.path.join(out, 'data'))
  recipe = RECIPES[args.resolution]
  workdir, export = os.path.abspath(args.workdir or os.path.join(out, 'run')), os.path.join(out, recipe.name)
  for flag, folder in (('--out', out), ('--data_dir', data_dir), ('--workdir', workdir)):
    cli.check_writable_dir(folder, flag)
  check_workdir(workdir)
  if os.path.exists(export) and not args.train_only:
    raise cli.UserError(f'--out {out}: {export} exists already; expected a new folder for the exported model (move '
                        'it away first)')
  bin_dir = os.path.dirname(sys.executable)
  commit = _commit()   # the code the run trains with (publishing later must not record later edits)

  started = time.time()
  if not _built(data_dir, dataset):
    _run([os.path.join(bin_dir, 'tfds'), 'build', 'tfds_stillbox', '--config', dataset, '--data_dir', data_dir])
  built = time.time()
  overrides = [f'--config.dataset=tfds_stillbox/{dataset}', f'--config.data_dir={data_dir}']
  if args.steps is not None:
    overrides.append(f'--config.num_train_steps={args.steps}')
  from depthnet_jax.checkpoints import loading
  done = loading.latest_step(workdir) if args.steps is not None else 0
  times = {'build': built - started}
  if args.steps is not None and done >= args.steps:   # train.py would only start up, restore and stop
    print(f'train: the run in {workdir} has taken {done} steps (>= --steps {args.steps}); not resumed', flush=True)
  else:
    _run([sys.executable, os.path.join(ROOT, 'train.py'), '--config', config, '--workdir', workdir, *overrides])
    times['train'] = time.time() - built
    print(f'trained in {times["train"]:.0f} s', flush=True)
  if args.train_only:
    return 0
  smoke = {'holdout_scenes': SMOKE_HOLDOUT_SCENES, 'constant_batches': SMOKE_CONSTANT_BATCHES} if args.smoke else {}
  return publish(workdir, out, recipe, times=times, commit=commit, **smoke)


def main(argv: list[str] | None = None) -> int:
  return cli.main(parser(), work, argv)


def publish(workdir: str, out: str, recipe: Recipe = RECIPES[64], times: dict[str, float] | None = None,
            commit: dict | None = None, *, holdout_scenes: int | None = None,
            constant_batches: int = CONSTANT_BATCHES) -> int:
  """Steps 3-6 on a finished run (any run of a built dataset: its config.json names the data)."""
  export = os.path.join(out, recipe.name)
  holdout_scenes = holdout_scenes or recipe.holdout_scenes
  if os.path.exists(export):
    print(f'error: {export} exists already; expected a new folder for the exported model', file=sys.stderr)
    return 1
  times = dict(times or {})
  started = time.time()
  import ml_collections
  from flax import nnx

  from depthnet_jax.checkpoints import checkpointing, loading
  from depthnet_jax.common import atomic
  from depthnet_jax.data import tree_source
  from depthnet_jax.evaluation import charts, evaluate, report, run_log
  from depthnet_jax.infer import predictor as inference
  from depthnet_jax.train import trainer as train_lib
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  trainer = train_lib.Trainer(config)
  best = loading.eval_checkpoint_path(workdir, 'best')
  recorded = checkpointing.read_model_config(best)
  nominal = loading.checkpoint_info(best).displacement   # the recorded one, else Still Box's 0.3 m
  model = loading.load_any(best)
  model.eval()
  # The constant baselines' depths: the mean and median training target over CONSTANT_BATCHES batches (every 4th
  # pixel of each axis).
  constants = train_lib.training_depths(trainer, constant_batches, stride=4)
  validation = evaluate_all(model, trainer.eval_source, constants, nominal)
  holdout = tree_source.open_tree(render_holdout(os.path.join(out, 'holdout'), holdout_scenes, recipe.resolution))
  regression = evaluate.evaluate(*nnx.split(model, nnx.Param, nnx.BatchStat), holdout, protocol='original',
                                 nominal=nominal)
  evaluated = time.time()

  scalars = run_log.read_scalars(workdir)
  rates = [v for _, v in scalars.get('train_steps_per_sec', [])[1:]]   # the first window holds the compile
  reference = {
      'name': recipe.name,
      'dataset': config.dataset, 'train_scenes': len(trainer.train_source),
      'validation_scenes': len(trainer.eval_source), 'resolution': recipe.resolution,
      'recipe': os.path.relpath(recipe.config, ROOT), 'config': config.to_dict(),
      'best_step': int(recorded['step']), 'steps': int(trainer.num_steps), 'batch_size': int(config.batch_size),
      **(commit or _commit()),
      'trained_at': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
      'machine': _machine(),
      'train_wall_time_s': round(times['train'], 1) if 'train' in times else None,
      'median_steps_per_sec': sorted(rates)[len(rates) // 2] if rates else None,
      'validation': {
          'constant_depth_m': constants,
          **{f'{name}_{p}': validation[name][p].metrics for name in validation for p in evaluate.PROTOCOLS},
      },
      'regression': {'seed': HOLDOUT_SEED, 'scenes': holdout_scenes, 'resolution': recipe.resolution, 'shift': 3,
                     'protocol': 'original', 'depth_error': regression.metrics['depth_error'],
                     'render': f'python -m tfds_stillbox.render --out DIR --resolution {recipe.resolution} --scenes '
                               f'{holdout_scenes} --seed {HOLDOUT_SEED}'},
  }
  metadata = {k: recorded[k] for k in ('image_size', 'fov', 'displacement', 'step', 'eval_metrics') if k in recorded}
  checkpointing.save_model(export, model, metadata={**metadata, 'source': 'reference', 'reference': reference})
  print(f'exported {export}')

  curve = charts.learning_curve(scalars, baseline=validation['mean']['original'].metrics['depth_error'],
                                title=f'{recipe.name}: DepthNet on {config.dataset} ({config.solver}, batch '
                                      f'{config.batch_size}), validation every {config.eval_every_epochs:g} epoch')
  atomic.write_png(os.path.join(out, 'learning_curve.png'), curve)
  predictor = inference.Predictor.from_checkpoint(export)
  atomic.write_png(os.path.join(out, 'predictions.png'), predictions_sheet(predictor, holdout))
  atomic.write_png(os.path.join(out, 'error_by_depth.png'), charts.error_by_depth(
      validation['model']['original'].bins, f'{recipe.name} on {config.dataset} validation (original protocol)'))
  summary = {
      'reference': reference,
      'validation_bins': {f'{name}_{p}': validation[name][p].bins for name in validation
                          for p in evaluate.PROTOCOLS},
      'time_s': {**{k: round(v, 1) for k, v in times.items()}, 'evaluate': round(evaluated - started, 1)},
  }
  atomic.write_text(os.path.join(out, 'summary.json'), json.dumps(summary, indent=1) + '\n')
  for p in evaluate.PROTOCOLS:
    print(f'\n{p} protocol, validation split:\n' + '\n'.join(report.metrics_table(validation['model'][p])))
  m = validation['model']['original'].metrics['depth_error']
  c = {name: validation[name]['original'].metrics['depth_error'] for name in constants}
  print(f'\nvalidation depth error {m:.3f} m; constant {constants["mean"]:.2f} m (mean) {c["mean"]:.3f} m '
        f'({c["mean"] / m:.2f}x), constant {constants["median"]:.2f} m (median) {c["median"]:.3f} m '
        f'({c["median"] / m:.2f}x); regression set {regression.metrics["depth_error"]:.4f} m; wrote {out}/'
        'learning_curve.png, predictions.png, error_by_depth.png, summary.json')
  return 0


if __name__ == '__main__':
  sys.exit(main())
