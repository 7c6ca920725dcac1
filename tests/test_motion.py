"""Metric depth from the flight's motion in infer.py: motion logs (positions, velocities) as flight logs write them,
the scale d / nominal, --frame_shift auto, skipped pairs, and bad logs as one error line naming file, line, column.

These tests hold for any network (a NumPy-drawn random one here): they check what infer.py does with the network's
output. What a trained network does with it (depth about half the truth at twice the speed, larger shifts for far
scenes) is measured by scripts/motion_check.py (`make test-slow`, tests/test_motion_trained.py).
"""

import csv
import os
import re

import imageio.v3 as iio
import numpy as np
import pytest

import infer
from depthnet_jax.checkpoints import checkpointing
from depthnet_jax.infer import motion
from depthnet_jax.infer import predictor as inference
from depthnet_jax.infer.outputs import SHIFTS_CSV
from tfds_stillbox.render import scenes

FRAMES = 8


@pytest.fixture(scope='module')
def flight(tmp_path_factory):
  """A rendered constant-speed flight (0.1 m per frame, 32x32) with its motion logged three ways."""
  folder = tmp_path_factory.mktemp('flight')
  frames = folder / 'frames'
  frames.mkdir()
  scene = scenes.render_scene((12, 0), 32, num_frames=FRAMES, supersample=1)
  for i, frame in enumerate(scene.frames):
    iio.imwrite(frames / f'img_{i:04d}.png', frame)
  step = float(np.linalg.norm(scene.time_step * scene.speed.astype(np.float64)))
  positions = np.arange(FRAMES)[:, None] * (scene.time_step * scene.speed.astype(np.float64))
  # positions as a logger writes them: a time column too, 9 significant digits
  with open(folder / 'positions.csv', 'w') as f:
    f.write('frame,time,x,y,z\n')
    for i, p in enumerate(positions):
      f.write(f'{i},{i * scene.time_step:.9g},{p[0]:.9g},{p[1]:.9g},{p[2]:.9g}\n')
  # velocities: upper-case names with spaces, an extra column, a comment line, CRLF line ends
  with open(folder / 'velocities.csv', 'w', newline='') as f:
    f.write('# exported from the flight controller\r\nTime, VX, VY, VZ, battery\r\n')
    for i in range(FRAMES):
      v = scene.speed.astype(np.float64)
      f.write(f'{i * scene.time_step:.6f}, {v[0]:.9g}, {v[1]:.9g}, {v[2]:.9g}, 15.1\r\n')
  return folder, frames, step


def _run(capsys, *args):
  # --no_resize: the 32x32 frames as they are (a checkpoint that records no size would be run at 512x512)
  code = infer.main([str(a) for a in args] + ['--no_resize'])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def _shifts(folder):
  with open(os.path.join(folder, SHIFTS_CSV)) as f:
    return list(csv.DictReader(f))


def _depths(folder):
  return {n[:-len('_depth.npy')]: np.load(os.path.join(folder, n)) for n in sorted(os.listdir(folder))
          if n.endswith('_depth.npy')}


# --- motion logs --------------------------------------------------------------------------------------------

def test_positions_and_velocities_give_the_constant_speed_displacements(flight):
  folder, _, step = flight
  constant = motion.constant(step)
  for name in ('positions.csv', 'velocities.csv'):
    log = motion.read_log(str(folder / name))
    assert log.frames == FRAMES
    for i in range(FRAMES):
      for j in range(FRAMES):
        assert log.displacement(i, j) == pytest.approx(constant.displacement(i, j), rel=1e-6, abs=1e-9), (name, i, j)


def test_velocities_are_integrated_with_the_trapezoid_rule(tmp_path):
  # accelerating along x: v = t (m/s) at t = 0, 0.5, 1.5 -> x(1.5) = 1.5^2 / 2 exactly (the rule is exact for linear v)
  path = tmp_path / 'v.csv'
  path.write_text('time,vx,vy,vz\n0,0,0,0\n0.5,0.5,0,0\n1.5,1.5,0,0\n')
  log = motion.read_log(str(path))
  assert log.displacement(0, 1) == pytest.approx(0.125)
  assert log.displacement(0, 2) == pytest.approx(1.125)
  assert log.displacement(2, 0) == pytest.approx(1.125)
  # positions: the straight line between the two frames, not the path
  path = tmp_path / 'p.csv'
  path.write_text('frame,x,y,z\n2,0,0,0\n0,0,0,0\n1,3,4,0\n')   # rows in any order
  log = motion.read_log(str(path))
  assert log.displacement(0, 1) == 5 and log.displacement(0, 2) == 0 and not motion.usable(log.displacement(0, 2))
  # semicolons or tabs, as spreadsheets in some locales and loggers write them
  for separator in (';', '\t'):
    path.write_text(separator.join(['frame', 'x', 'y', 'z']) + '\n' + '\n'.join(
        separator.join(map(str, row)) for row in ((0, 0, 0, 0), (1, 3, 4, 0))) + '\n')
    assert motion.read_log(str(path)).displacement(0, 1) == 5


# --- scales and shifts --------------------------------------------------------------------------------------

def test_depth_is_the_output_times_displacement_over_nominal(random_checkpoint, flight, tmp_path, capsys):
  _, frames, step = flight
  code, out, err = _run(capsys, '--checkpoint', random_checkpoint, '--input', frames, '--output', tmp_path / 'raw',
                        '--frame_shift', 3, '--output_raw')
  assert code == 0, err
  assert "depths assume the nominal displacement of 0.3 m" in out
  assert not os.path.exists(tmp_path / 'raw' / SHIFTS_CSV)   # without motion: as before, no shifts.csv
  raw = _depths(tmp_path / 'raw')
  assert sorted(raw) == [f'img_{i:04d}' for i in range(3, FRAMES)]

  runs = {'displacement': ('--displacement', f'{step!r}'), 'positions': ('--motion', flight[0] / 'positions.csv'),
          'velocities': ('--motion', flight[0] / 'velocities.csv'), 'twice': ('--displacement', 2 * step)}
  scales = {}
  for name, flags in runs.items():
    code, out, err = _run(capsys, '--checkpoint', random_checkpoint, '--input', frames, '--output', tmp_path / name,
                          '--frame_shift', 3, '--output_raw', *flags)
    assert code == 0, err
    assert 'metric depths from' in out and '0 frame(s) skipped' in out
    rows = _shifts(tmp_path / name)
    assert [r['frame'] for r in rows] == [f'img_{i:04d}' for i in range(3, FRAMES)]
    assert [r['first_frame'] for r in rows] == [f'img_{i:04d}' for i in range(0, FRAMES - 3)]
    scales[name] = np.array([float(r['scale']) for r in rows])
    np.testing.assert_allclose([float(r['displacement_m']) for r in rows], 3 * step * (1 + (name == 'twice')),
                               rtol=1e-5)
    for stem, depth in _depths(tmp_path / name).items():
      np.testing.assert_allclose(depth, raw[stem] * scales[name][0], rtol=1e-5)
  np.testing.assert_allclose(scales['displacement'], 3 * step / 0.3, rtol=1e-6)
  np.testing.assert_allclose(scales['positions'], scales['displacement'], rtol=1e-6)
  np.testing.assert_allclose(scales['velocities'], scales['displacement'], rtol=1e-6)
  np.testing.assert_allclose(scales['twice'], 2 * scales['displacement'], rtol=1e-6)

  # a network trained at another displacement: --nominal_displacement (or its checkpoint's record) divides instead
  code, out, err = _run(capsys, '--checkpoint', random_checkpoint, '--input', frames, '--output', tmp_path / 'nom',
                        '--frame_shift', 3, '--output_raw', '--displacement', 0.2, '--nominal_displacement', 0.6)
  assert code == 0, err and 'over a nominal 0.6 m, --nominal_displacement' in out
  for stem, depth in _depths(tmp_path / 'nom').items():
    np.testing.assert_allclose(depth, raw[stem], rtol=1e-5)


def test_auto_shift_keeps_the_pair_whose_output_is_nearest_the_target(random_checkpoint, flight, tmp_path, capsys):
  _, frames, step = flight
  images = [iio.imread(frames / f'img_{i:04d}.png') for i in range(FRAMES)]
  predictor = inference.Predictor.from_checkpoint(random_checkpoint)
  raw_means = {}
  for t in range(1, FRAMES):
    ks = list(range(1, min(4, t) + 1))
    padded = ks + [ks[-1]] * (4 - len(ks))   # one shape, one compile
    low, high = predictor.predict_pairs(np.stack([images[t - k] for k in padded]), np.stack([images[t]] * 4))
    raw_means[t] = (ks, low[:len(ks)].reshape(len(ks), -1).mean(axis=1), high)
    if t == FRAMES - 1:   # the library's metric depth: the same outputs x d / nominal, per pair
      metric = predictor.predict_metric(np.stack([images[t - k] for k in padded]), np.stack([images[t]] * 4),
                                        [k * step for k in padded])
      np.testing.assert_allclose(metric, high * (np.array(padded) * step / 0.3)[:, None, None], rtol=1e-5)
  # a target between the candidates' outputs, so that the choice is not always the same shift
  target = float(np.median(np.concatenate([m for _, m, _ in raw_means.values()])))
  code, out, err = _run(capsys, '--checkpoint', random_checkpoint, '--input', frames, '--output', tmp_path,
                        '--frame_shift', 'auto', '--max_shift', 4, '--target_depth', f'{target!r}',
                        '--displacement', f'{step!r}', '--output_raw', '--batch_size', 4)
  assert code == 0, err
  assert f'{FRAMES - 1} depth maps (shift auto 1..4' in out
  rows = {r['frame']: r for r in _shifts(tmp_path)}
  depths = _depths(tmp_path)
  assert sorted(rows) == sorted(depths) == [f'img_{i:04d}' for i in range(1, FRAMES)]
  for t, (ks, means, high) in raw_means.items():
    row = rows[f'img_{t:04d}']
    pick = int(np.argmin(np.abs(means - target)))
    assert int(row['shift']) == ks[pick] and int(row['candidates']) == len(ks)
    assert row['first_frame'] == f'img_{t - ks[pick]:04d}'
    assert float(row['displacement_m']) == pytest.approx(ks[pick] * step, rel=1e-6)
    assert float(row['raw_mean_m']) == pytest.approx(means[pick], rel=1e-4)
    # the chosen pair's depth, made metric by its own shift
    np.testing.assert_allclose(depths[f'img_{t:04d}'], high[pick] * ks[pick] * step / 0.3, rtol=1e-4, atol=1e-4)
  assert len({int(r['shift']) for r in rows.values()}) > 1


def test_zero_and_unknown_displacements_are_skipped_and_counted(random_checkpoint, flight, tmp_path, capsys):
  _, frames, _ = flight
  log = tmp_path / 'hover.csv'
  # frames 0-2 hover (same position), frame 5's position is unknown (GPS lost: empty cells)
  xs = [0, 0, 0, 0.2, 0.4, None, 0.8, 1.0]
  log.write_text('frame,x,y,z\n' + ''.join(f'{i},{"" if x is None else x},{"" if x is None else 0},'
                                           f'{"" if x is None else 0}\n' for i, x in enumerate(xs)))
  out_dir = tmp_path / 'out'
  code, out, err = _run(capsys, '--checkpoint', random_checkpoint, '--input', frames, '--output', out_dir,
                        '--motion', log, '--output_raw')
  assert code == 0, err
  # shift 1: pairs (0,1), (1,2) have zero displacement; (4,5), (5,6) unknown -> frames 1, 2, 5, 6 skipped
  assert '4 frame(s) skipped: displacement zero or unknown' in out
  assert sorted(_depths(out_dir)) == ['img_0003', 'img_0004', 'img_0007']
  rows = {r['frame']: r for r in _shifts(out_dir)}
  assert rows['img_0001']['note'].startswith('skipped') and rows['img_0005']['note'].startswith('skipped')
  assert float(rows['img_0003']['displacement_m']) == pytest.approx(0.2)
  for depth in _depths(out_dir).values():
    assert np.all(np.isfinite(depth))
  # auto: frame 5 has no usable pair (5 is unknown), frame 6 uses (3, 6) or (4, 6)? no: 6 - k for k <= 3 with
  # both ends known and apart -> 3 and 4 (5 unknown); frames 1 and 2 have only hovering partners
  code, out, err = _run(capsys, '--checkpoint', random_checkpoint, '--input', frames, '--output', tmp_path / 'auto',
                        '--motion', log, '--output_raw', '--frame_shift', 'auto', '--max_shift', 3)
  assert code == 0, err
  rows = {r['frame']: r for r in _shifts(tmp_path / 'auto')}
  assert sorted(_depths(tmp_path / 'auto')) == ['img_0003', 'img_0004', 'img_0006', 'img_0007']
  assert int(rows['img_0006']['shift']) in (2, 3) and int(rows['img_0006']['candidates']) == 2
  assert '3 frame(s) skipped' in out


# --- user errors ----------------------------------------------------------------------------------------------

BAD_LOGS = {
    'missing_column': ('frame,x,y\n0,0,0\n', r"line 1: missing column\(s\) 'z' of the positions format"),
    'no_format': ('a,b,c\n1,2,3\n', r"line 1: header 'a,b,c'; expected the columns frame,x,y,z"),
    'fewer_rows': ('frame,x,y,z\n' + ''.join(f'{i},0,0,{i / 10}\n' for i in range(5)),
                   r'no row for frame 5: the log covers frames 0 to 4 but --input .* has 8 frames'),
    'fewer_velocity_rows': ('time,vx,vy,vz\n' + ''.join(f'{i / 10},0,0,1\n' for i in range(7)),
                            r'7 rows of velocities but --input .* has 8 frames'),
    'non_numeric': ('frame,x,y,z\n0,0,0,0\n1,0,0,0.1\n2,0,zero,0.2\n',
                    r"line 4, column 'y': 'zero' is not a number; expected a number \(metres\)"),
    'time_not_increasing': ('time,vx,vy,vz\n0,0,0,1\n0.1,0,0,1\n0.1,0,0,1\n',
                            r"line 4, column 'time': '0.1' is not after the previous row's 0.1 \(line 3\)"),
    'short_row': ('frame,x,y,z\n0,0,0,0\n1,0,0\n', r"line 3, column 'z': missing"),
    'duplicate_frame': ('frame,x,y,z\n0,0,0,0\n0,0,0,1\n',
                        r"line 3, column 'frame': frame 0 again \(first on line 2\)"),
    'infinite': ('frame,x,y,z\n0,0,0,inf\n', r"line 2, column 'z': 'inf'; expected a finite number"),
    'empty': ('', r'empty; expected a header line'),
}


@pytest.mark.parametrize('case', sorted(BAD_LOGS))
def test_bad_motion_logs_are_one_error_line_naming_file_line_column(random_checkpoint, flight, tmp_path, capsys,
                                                                     case):
  _, frames, _ = flight
  text, message = BAD_LOGS[case]
  log = tmp_path / f'{case}.csv'
  log.write_text(text)
  out_dir = tmp_path / 'out'
  code, out, err = _run(capsys, '--checkpoint', random_checkpoint, '--input', frames, '--output', out_dir,
                        '--motion', log)
  assert code == 1 and out == ''
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f'error: --motion {log}'), err

  assert re.search(message, lines[0]), lines[0]
  assert not out_dir.exists()


@pytest.mark.parametrize('flags,message', [
    (['--frame_shift', 'auto'], '--frame_shift auto: expected --displacement M or --motion CSV too'),
    (['--frame_shift', 'sometimes'], "--frame_shift='sometimes': expected an integer >= 1, 'auto' or 'fuse'"),
    (['--frame_shift', '0'], "--frame_shift=0: expected an integer >= 1, 'auto' or 'fuse'"),
    (['--max_shift', '4'], '--max_shift=4: used only with --frame_shift auto'),
    (['--frame_shift', 'auto', '--displacement', '0.1', '--max_shift', '0'], '--max_shift=0: expected'),
    (['--frame_shift', 'auto', '--displacement', '0.1', '--target_depth', '150'], '--target_depth=150.0: expected'),
    (['--displacement', '0'], '--displacement=0.0: expected'),
    (['--displacement', 'nan'], '--displacement=nan: expected'),
    (['--displacement', '0.1', '--motion', 'x.csv'], 'expected one of them'),
    (['--motion', 'no_such.csv'], 'no_such.csv: no such file; expected a CSV motion log'),
    (['--nominal_displacement', '-1'], '--nominal_displacement=-1.0: expected'),
])
def test_bad_motion_flags(random_checkpoint, flight, tmp_path, capsys, flags, message):
  _, frames, _ = flight
  code, out, err = _run(capsys, '--checkpoint', random_checkpoint, '--input', frames, '--output', tmp_path / 'out',
                        *flags)
  assert code == 1 and len(err.strip().splitlines()) == 1 and message in err, err
  assert not (tmp_path / 'out').exists()


def test_clamp_networks_need_a_target_inside_their_range(flight, tmp_path, capsys):
  from depthnet_jax.testing.random_models import random_depthnet
  checkpoint = tmp_path / 'clamp'
  checkpointing.save_model(checkpoint, random_depthnet(clamp=True))
  _, frames, step = flight
  code, out, err = _run(capsys, '--checkpoint', checkpoint, '--input', frames, '--output', tmp_path / 'out',
                        '--frame_shift', 'auto', '--displacement', step, '--target_depth', 80)
  assert code == 1 and 'clamps its depths to [10, 60] m' in err and len(err.strip().splitlines()) == 1
  assert not (tmp_path / 'out').exists()
