"""What a trained DepthNet does with the flight's motion (slow: `make test-slow`, kept out of `make test`).

tests/test_motion.py checks what infer.py does with any network's output. Whether that makes depth metric needs a
network that has learnt parallax: this test runs scripts/motion_check.py (rendered flights, infer.py as a user runs
it) on a trained checkpoint: `DEPTHNET_TRAINED_CHECKPOINT` if set, else the shipped reference model
(`models/reference64`, docs/reference_models.md: validation depth error 7.17 m), which gave the figures of the
README (about 4 minutes on 2 CPU cores).

One of the issue's claims does not hold for it (measured, see the test): it is marked xfail, not strict, so that a
better network given by DEPTHNET_TRAINED_CHECKPOINT shows it passing. The network of the previous recipe (three
warm-started phases of configs/synth64.py, 8.99 m) failed one more: with `--displacement 0.2` its error was 16 %
above the nominal speed's; the reference model's is 6.0 % above.
"""

import importlib.util
import os

import pytest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(REPO, 'models', 'reference64')


@pytest.fixture(scope='module')
def figures(tmp_path_factory):
  checkpoint = os.environ.get('DEPTHNET_TRAINED_CHECKPOINT') or REFERENCE
  spec = importlib.util.spec_from_file_location('motion_check', os.path.join(REPO, 'scripts', 'motion_check.py'))
  motion_check = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(motion_check)
  return motion_check.measure(checkpoint, str(tmp_path_factory.mktemp('motion_check')))


def test_at_twice_the_speed_without_motion_the_depth_is_about_half(figures):
  nominal, fast = figures['speed']['nominal_0.1'], figures['speed']['fast_0.2_unscaled']
  # median depth / truth, relative to the network's own at the nominal speed (reference64: 0.503 / 0.964 = 0.52)
  assert 0.4 <= fast['ratio'] / nominal['ratio'] <= 0.6, (fast, nominal)


def test_the_motion_log_gives_the_depth_of_the_displacement(figures):
  speed = figures['speed']
  assert speed['fast_0.2_motion_log']['error_m'] == pytest.approx(speed['fast_0.2_displacement']['error_m'],
                                                                  rel=1e-6)
  # flights rendered with --step 0.2 (their own motion logs) against the same worlds' every other frame
  assert speed['rendered_0.2_motion_log']['error_m'] == pytest.approx(speed['fast_0.2_motion_log']['error_m'],
                                                                      rel=0.25)


def test_with_the_displacement_the_error_is_the_nominal_speeds_within_10_percent(figures):
  nominal, scaled = figures['speed']['nominal_0.1'], figures['speed']['fast_0.2_displacement']
  # reference64: 5.814 m vs 5.485 m (+6.0 %)
  assert abs(scaled['error_m'] - nominal['error_m']) <= 0.1 * nominal['error_m'], (scaled, nominal)


def test_auto_shift_picks_larger_shifts_for_far_scenes(figures):
  near, far = figures['depth_range']['near_2_20'], figures['depth_range']['far_40_400']
  assert far['auto']['mean_shift'] > near['auto']['mean_shift'] + 1, (near['auto'], far['auto'])


@pytest.mark.xfail(strict=False, reason='reference64 on far scenes (40-400 m): auto abs rel 0.648 vs 0.569 for '
                   'shift 3 (near scenes: equal, shift 1); the previous recipe network: 0.727 vs 0.646')
def test_auto_shift_is_not_worse_than_the_best_fixed_shift(figures):
  for name, scenes in figures['depth_range'].items():
    best = min((v['abs_rel'], k) for k, v in scenes.items() if k.startswith('shift_'))
    assert scenes['auto']['abs_rel'] <= best[0] * 1.001, (name, scenes['auto'], best)
