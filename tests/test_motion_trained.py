"""What a trained DepthNet does with the flight's motion (slow: `make test-slow`, kept out of `make test`).

tests/test_motion.py checks what infer.py does with any network's output. Whether that makes depth metric needs a
network that has learnt parallax: this test runs scripts/motion_check.py (rendered flights, infer.py as a user runs
it) on a trained checkpoint, `DEPTHNET_TRAINED_CHECKPOINT` if set, else one trained here with the recipe below,
which gave the figures of the README (about 35 minutes of training on 2 idle CPU cores; `DEPTHNET_TEST_CACHE=DIR`
keeps the data and the runs between sessions, and a run that was stopped resumes):

    tfds build tfds_stillbox --config synth64 --data_dir DATA
    python train.py --config configs/synth64.py --config.data_dir=DATA --config.eval_every_epochs=0.5 \\
        --workdir P1 --config.num_train_steps=2248                                             # Adam 1e-3
    ... --workdir P2 --config.init_from=P1 --config.learning_rate=0.0003 --config.num_train_steps=3934
    ... --workdir P3 --config.init_from=P2 --config.learning_rate=0.0001 --config.num_train_steps=2810

Each phase warm-starts from the previous one's best checkpoint (its last step here). That network's validation
depth error is 8.99 m (constant-depth baseline: 26 m; the paper's network at 64x64: 4.65 m). Two of the issue's
claims do not hold for it (measured, see each test): they are marked xfail, not strict, so that a better network
given by DEPTHNET_TRAINED_CHECKPOINT shows them passing.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (learning rate, steps) of each phase; a phase ends on an evaluation (every 562 steps), its best checkpoint
PHASES = ((0.001, 2248), (0.0003, 3934), (0.0001, 2810))


def _train(cache: str) -> str:
  data = os.path.join(cache, 'data')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  bin_dir = os.path.dirname(sys.executable)
  subprocess.run([os.path.join(bin_dir, 'tfds'), 'build', 'tfds_stillbox', '--config', 'synth64', '--data_dir', data],
                 check=True, cwd=REPO, env=env)
  previous = None
  for i, (learning_rate, steps) in enumerate(PHASES, 1):
    workdir = os.path.join(cache, f'phase{i}')
    subprocess.run([sys.executable, os.path.join(REPO, 'train.py'), '--config',
                    os.path.join(REPO, 'configs', 'synth64.py'), '--workdir', workdir, f'--config.data_dir={data}',
                    '--config.eval_every_epochs=0.5', f'--config.learning_rate={learning_rate}',
                    f'--config.num_train_steps={steps}', *([f'--config.init_from={previous}'] if previous else [])],
                   check=True, cwd=REPO, env=env)
    previous = workdir
  return previous


@pytest.fixture(scope='module')
def figures(tmp_path_factory):
  checkpoint = os.environ.get('DEPTHNET_TRAINED_CHECKPOINT')
  if not checkpoint:
    cache = os.environ.get('DEPTHNET_TEST_CACHE') or str(tmp_path_factory.mktemp('trained'))
    checkpoint = _train(cache)
  spec = importlib.util.spec_from_file_location('motion_check', os.path.join(REPO, 'scripts', 'motion_check.py'))
  motion_check = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(motion_check)
  return motion_check.measure(checkpoint, str(tmp_path_factory.mktemp('motion_check')))


def test_at_twice_the_speed_without_motion_the_depth_is_about_half(figures):
  nominal, fast = figures['speed']['nominal_0.1'], figures['speed']['fast_0.2_unscaled']
  # median depth / truth, relative to the network's own at the nominal speed (recipe: 0.549 / 0.977 = 0.56)
  assert 0.4 <= fast['ratio'] / nominal['ratio'] <= 0.6, (fast, nominal)


def test_the_motion_log_gives_the_depth_of_the_displacement(figures):
  speed = figures['speed']
  assert speed['fast_0.2_motion_log']['error_m'] == pytest.approx(speed['fast_0.2_displacement']['error_m'],
                                                                  rel=1e-6)
  # flights rendered with --step 0.2 (their own motion logs) against the same worlds' every other frame
  assert speed['rendered_0.2_motion_log']['error_m'] == pytest.approx(speed['fast_0.2_motion_log']['error_m'],
                                                                      rel=0.25)


@pytest.mark.xfail(strict=False, reason='the recipe network: 8.139 m with --displacement 0.2 vs 7.002 m at the '
                   'nominal speed (+16 %): its output at twice the parallax is 0.549 x truth, not half of 0.977')
def test_with_the_displacement_the_error_is_the_nominal_speeds_within_10_percent(figures):
  nominal, scaled = figures['speed']['nominal_0.1'], figures['speed']['fast_0.2_displacement']
  assert abs(scaled['error_m'] - nominal['error_m']) <= 0.1 * nominal['error_m'], (scaled, nominal)


def test_auto_shift_picks_larger_shifts_for_far_scenes(figures):
  near, far = figures['depth_range']['near_2_20'], figures['depth_range']['far_40_400']
  assert far['auto']['mean_shift'] > near['auto']['mean_shift'] + 1, (near['auto'], far['auto'])


@pytest.mark.xfail(strict=False, reason='the recipe network on far scenes (40-400 m): auto abs rel 0.727 vs 0.646 '
                   'for shift 4 (near scenes: equal, shift 1)')
def test_auto_shift_is_not_worse_than_the_best_fixed_shift(figures):
  for name, scenes in figures['depth_range'].items():
    best = min((v['abs_rel'], k) for k, v in scenes.items() if k.startswith('shift_'))
    assert scenes['auto']['abs_rel'] <= best[0] * 1.001, (name, scenes['auto'], best)
