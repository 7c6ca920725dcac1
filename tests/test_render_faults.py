"""The renderer's command line under bad input and faults: one `error:` line, and the disk as it was.

Most cases run `tfds_stillbox.render.cli.main(argv)` in this process (argparse, checks and export are the same code
a user runs); the interruptions that need a real process (SIGINT from outside, SIGKILL) run
`python -m tfds_stillbox.render`. Every case checks the exit code, the one line on stderr (flag, value, range) and
the state of the disk: nothing created on an error, the user's files byte for byte, no `.partial-*` left.
"""

import json
import os
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import numpy as np
import pytest

from depthnet_jax.common import atomic, cli
from depthnet_jax.testing import disk
from tfds_stillbox import codec
from tfds_stillbox.render import cli as render_cli
from tfds_stillbox.render import export, raycast
from tfds_stillbox.render import scenes as render_scenes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--resolution', '16', '--frames', '2', '--scenes', '2']
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _main(capsys, *argv):
  """(exit code, stdout, stderr) of `python -m tfds_stillbox.render ARGV`, run in this process."""
  code = render_cli.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err


def _error_line(err):
  """The stderr of a failed run is exactly one `error:` line (after any progress lines: plain ones on a pipe)."""
  assert '\r' not in err, err
  lines = [line for line in err.splitlines() if line.strip()]
  assert lines and lines[-1].startswith('error: '), err
  assert 'Traceback' not in err
  assert all(line.startswith('rendered ') for line in lines[:-1]), err
  return lines[-1]


@pytest.fixture
def user_dir(tmp_path):
  """A folder holding a user's files, which no run may change."""
  (tmp_path / 'notes.txt').write_text('mine')
  (tmp_path / 'sheet.png').write_bytes(PNG_MAGIC + b'my own picture')
  return tmp_path


# --- Ranges: checked before anything is created ----------------------------------------------------------

STEP_RANGE = 'expected a number in (0, 10] (metres per frame)'
DEPTH_RANGE = 'expected two numbers NEAR,FAR in metres with 0 < NEAR < FAR <= 10000'
RANGES = [
    (['--scenes', '0'], "--scenes=0: expected an integer from 1 to 10000000"),
    (['--scenes', '-3'], "--scenes=-3: expected an integer from 1 to 10000000"),
    (['--scenes', '1000000000'], "--scenes=1000000000: expected an integer from 1 to 10000000"),
    (['--fov', '0'], "--fov=0.0: expected a number of degrees in (0, 180)"),
    (['--fov', '180'], "--fov=180.0: expected a number of degrees in (0, 180)"),
    (['--fov', '-30'], "--fov=-30.0: expected a number of degrees in (0, 180)"),
    (['--fov', 'nan'], "--fov=nan: expected a number of degrees in (0, 180)"),
    (['--frames', '0'], "--frames=0: expected an integer >= 2 (a training pair needs two frames of a scene)"),
    (['--frames', '1'], "--frames=1: expected an integer >= 2 (a training pair needs two frames of a scene)"),
    (['--frames', '1000000'], "--frames=1000000: expected at most 655360 frames at 16x16 (a scene is rendered at "
                              "once: frames x width x height <= 167772160, ~7.5 GB)"),
    (['--resolution', '0'], "--resolution='0': expected a size like 64 (square) or WIDTHxHEIGHT like 96x64, "
                            "each side from 1 to 4096 pixels"),
    (['--resolution', '96x0'], "--resolution='96x0': expected"),
    (['--resolution', '96x'], "--resolution='96x': expected"),
    (['--resolution', '96x64x3'], "--resolution='96x64x3': expected"),
    (['--resolution', 'big'], "--resolution='big': expected"),
    (['--resolution', '5000'], "--resolution='5000': expected a size like 64 (square) or WIDTHxHEIGHT like "
                               "96x64, each side from 1 to 4096 pixels"),
    (['--seed', '-1'], "--seed=-1: expected an integer >= 0"),
    (['--jobs', '-1'], f"--jobs=-1: expected an integer from 0 to {4 * (os.cpu_count() or 1)} (0: one per core; "
                       "at most 4 per core of this machine)"),
    (['--jobs', '1000000'], "--jobs=1000000: expected an integer from 0 to"),
    (['--scenes_per_folder', '0'], "--scenes_per_folder=0: expected an integer >= 1"),
    (['--step', '0'], "--step=0.0: " + STEP_RANGE),
    (['--step', '-0.1'], "--step=-0.1: " + STEP_RANGE),
    (['--step', '10.5'], "--step=10.5: " + STEP_RANGE),
    (['--step', 'nan'], "--step=nan: " + STEP_RANGE),
    (['--step', 'inf'], "--step=inf: " + STEP_RANGE),
    (['--depth_range', '8'], "--depth_range='8': " + DEPTH_RANGE),
    (['--depth_range', '20,2'], "--depth_range='20,2': " + DEPTH_RANGE),
    (['--depth_range', '8,8'], "--depth_range='8,8': " + DEPTH_RANGE),
    (['--depth_range', '0,20'], "--depth_range='0,20': " + DEPTH_RANGE),
    (['--depth_range=-2,20'], "--depth_range='-2,20': " + DEPTH_RANGE),
    (['--depth_range', '2,20000'], "--depth_range='2,20000': " + DEPTH_RANGE),
    (['--depth_range', '2,nan'], "--depth_range='2,nan': " + DEPTH_RANGE),
    (['--depth_range', '2,inf'], "--depth_range='2,inf': " + DEPTH_RANGE),
    (['--depth_range', '2,20,30'], "--depth_range='2,20,30': " + DEPTH_RANGE),
    (['--depth_range', 'near,far'], "--depth_range='near,far': " + DEPTH_RANGE),
    (['--depth_range', ''], "--depth_range='': " + DEPTH_RANGE),
]


@pytest.mark.parametrize('flags, message', RANGES, ids=[' '.join(f) for f, _ in RANGES])
def test_out_of_range_flag_is_one_line_and_creates_nothing(capsys, tmp_path, flags, message):
  code, out, err = _main(capsys, '--out', tmp_path / 'new' / 'tree', '--contact_sheet',
                         tmp_path / 'sheets' / 'sheet.png', *TINY, *flags)
  assert code == 1 and out == ''
  assert err.startswith(f'error: {message}') and err.endswith('\n') and err.count('\n') == 1  # one line
  assert os.listdir(tmp_path) == []


def test_motion_flags_at_their_bounds_render(capsys, tmp_path):
  """The ends of the ranges are valid: --step 10, --depth_range with FAR 10000 (and spaces after the comma)."""
  code, out, err = _main(capsys, '--out', tmp_path, *TINY, '--step', '10', '--depth_range', '0.5, 10000')
  assert code == 0 and out == f'wrote 2 scenes to {tmp_path / "16"}\n', err
  with open(tmp_path / '16' / '0' / 'metadata.json') as f:
    args = json.load(f)['args']
  assert (args['step'], args['time_step'], args['depth_range']) == (10.0, 0.1, [0.5, 10000.0])


def test_debug_shows_the_traceback_above_the_line(capsys, tmp_path, monkeypatch):
  code, _, err = _main(capsys, '--out', tmp_path / 'tree', *TINY, '--scenes', '0', '--debug')
  assert code == 1 and 'Traceback' in err and err.splitlines()[-1] == ('error: --scenes=0: expected '
                                                                                 'an integer from 1 to 10000000')
  monkeypatch.setenv('DEPTHNET_DEBUG', '1')
  code, _, err = _main(capsys, '--out', tmp_path / 'tree', *TINY, '--fov', '180')
  assert code == 1 and 'Traceback' in err and err.splitlines()[-1].startswith('error: --fov=180.0')
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('flags, message', [
    (['--scenes', '1.5'], "argument --scenes: invalid int value: '1.5'"),
    (['--bogus', '1'], 'unrecognized arguments: --bogus 1'),
    ([], 'give --out, --contact_sheet, or both'),
], ids=['non-integer', 'unknown flag', 'nothing to write'])
def test_usage_errors_are_one_line_and_exit_code_1(capsys, tmp_path, flags, message):
  """As every command's (cli.ArgumentParser): before, argparse's usage line and exit code 2."""
  out_flags = ['--out', tmp_path / 'tree'] if flags else []
  code, out, err = _main(capsys, *out_flags, *flags)
  assert code == 1 and out == '' and err.count('\n') == 1, err
  assert err == (f'error: {message} (usage: python -m tfds_stillbox.render (--out DIR | --contact_sheet PNG | both) '
                 '[--resolution R] [--scenes N] [options]; --help lists the flags)\n'), err
  assert os.listdir(tmp_path) == []


# --- Paths: checked before rendering ---------------------------------------------------------------------


def test_out_that_is_a_file(capsys, user_dir):
  before = disk.snapshot(user_dir)
  code, out, err = _main(capsys, '--out', user_dir / 'notes.txt', *TINY)
  assert code == 1 and out == ''
  assert err == (f'error: --out {user_dir / "notes.txt"}: is a file, expected a directory (or a path that does not '
                 'exist yet)\n')
  code, _, err = _main(capsys, '--out', user_dir / 'notes.txt' / 'tree', *TINY)
  assert code == 1 and err == (f'error: --out {user_dir / "notes.txt" / "tree"}: {user_dir / "notes.txt"} is a '
                               'file, so the directory cannot be created there\n')
  code, _, err = _main(capsys, '--out', '', *TINY)
  assert code == 1 and err == "error: --out='': expected a folder path\n"
  assert disk.snapshot(user_dir) == before


def test_unwritable_out_and_contact_sheet_folder(capsys, tmp_path):
  # /proc refuses new files to everyone, root included (permission bits would not stop root).
  code, out, err = _main(capsys, '--out', '/proc/depthnet-render-test', *TINY)
  assert code == 1 and out == '' and err.count('\n') == 1
  assert err.startswith('error: --out /proc/depthnet-render-test: cannot write in /proc (')
  assert err.endswith('); expected a writable directory\n')
  code, _, err = _main(capsys, '--out', tmp_path / 'tree', '--contact_sheet', '/proc/sheet.png', *TINY)
  assert code == 1 and err.startswith('error: --contact_sheet /proc/sheet.png: its folder /proc: cannot write in')
  assert not os.path.exists('/proc/depthnet-render-test') and os.listdir(tmp_path) == []


def test_existing_tree_is_refused_even_with_overwrite(capsys, user_dir):
  (user_dir / '16' / '0').mkdir(parents=True)
  (user_dir / '16' / '0' / 'metadata.json').write_text('{"scenes": []}')
  before = disk.snapshot(user_dir)
  code, out, err = _main(capsys, '--out', user_dir, *TINY)
  assert code == 1 and out == ''
  assert err == f'error: --out {user_dir}: {user_dir / "16"} exists already; remove it or choose another --out\n'
  code, _, err = _main(capsys, '--out', user_dir, *TINY, '--overwrite', '--contact_sheet', user_dir / 'new.png')
  assert code == 1 and err == (f'error: --out {user_dir}: {user_dir / "16"} exists already; remove it or choose '
                               'another --out (--overwrite only replaces a contact sheet, never a tree)\n')
  assert disk.snapshot(user_dir) == before


def test_existing_contact_sheet_is_refused_before_the_tree_is_rendered(capsys, user_dir):
  before = disk.snapshot(user_dir)
  code, out, err = _main(capsys, '--out', user_dir / 'tree', '--contact_sheet', user_dir / 'sheet.png', *TINY)
  assert code == 1 and out == ''
  assert err == (f'error: --contact_sheet {user_dir / "sheet.png"}: exists already; pass --overwrite to replace it, '
                 'or choose another path\n')
  assert disk.snapshot(user_dir) == before  # no tree either


@pytest.mark.parametrize('sheet, message', [
    ('folder', 'is a directory, expected a .png or .jpg or .jpeg file path'),
    ('sheet.txt', 'expected a file name ending in .png or .jpg or .jpeg'),
    ('notes.txt/sheet.png', 'its folder {root}/notes.txt: is a file, expected a directory'),
    ('tree/16/sheet.png', 'inside the tree {root}/tree/16 this run writes; expected a path outside it'),
], ids=['a directory', 'not an image name', 'under a file', 'inside the new tree'])
def test_bad_contact_sheet_path(capsys, user_dir, sheet, message):
  (user_dir / 'folder').mkdir()
  before = disk.snapshot(user_dir)
  code, out, err = _main(capsys, '--out', user_dir / 'tree', '--contact_sheet', user_dir / sheet, *TINY)
  assert code == 1 and out == ''
  assert err.startswith(f'error: --contact_sheet {user_dir / sheet}: {message.format(root=user_dir)}')
  assert err.count('\n') == 1 and disk.snapshot(user_dir) == before


def test_contact_sheet_in_a_missing_folder_and_overwrite(capsys, user_dir):
  code, out, err = _main(capsys, '--contact_sheet', user_dir / 'new' / 'deeper' / 'sheet.png', *TINY)
  assert code == 0 and err == ''
  written = user_dir / 'new' / 'deeper' / 'sheet.png'
  assert out == f'wrote a contact sheet to {written}\n' and os.listdir(written.parent) == ['sheet.png']
  image = iio.imread(written)
  assert image.dtype == np.uint8 and image.shape[0] == 4 + 2 * (16 + 4)  # two rows of 16 px tiles, 4 px gaps
  assert oct(os.stat(written).st_mode & 0o777) != oct(0o600)  # not left private like a temp file
  # --overwrite replaces a user's file with the sheet, in one rename: no temp file left next to it.
  notes = (user_dir / 'notes.txt').read_bytes()
  code, out, err = _main(capsys, '--contact_sheet', user_dir / 'sheet.png', '--overwrite', *TINY)
  assert code == 0 and err == ''
  assert np.array_equal(iio.imread(user_dir / 'sheet.png'), image)
  assert sorted(os.listdir(user_dir)) == ['new', 'notes.txt', 'sheet.png']
  assert (user_dir / 'notes.txt').read_bytes() == notes
  # A JPEG sheet, by its name.
  code, _, _ = _main(capsys, '--contact_sheet', user_dir / 'sheet.jpg', *TINY)
  assert code == 0 and (user_dir / 'sheet.jpg').read_bytes()[:2] == b'\xff\xd8'


# --- Faults during the work ------------------------------------------------------------------------------


def test_interrupted_contact_sheet_keeps_the_users_file(capsys, user_dir, monkeypatch):
  """Ctrl-C while the PNG is being written (--overwrite): the old file stays whole, the temp file goes."""
  real = iio.imwrite

  def interrupted(path, image, **kwargs):
    real(path, image[:8], **kwargs)  # a part written, then Ctrl-C
    raise KeyboardInterrupt

  monkeypatch.setattr(iio, 'imwrite', interrupted)
  before = disk.snapshot(user_dir)
  code, out, err = _main(capsys, '--contact_sheet', user_dir / 'sheet.png', '--overwrite', *TINY)
  assert code == 130 and out == ''
  assert err == 'error: interrupted (Ctrl-C); temporary files were removed, finished outputs kept\n'
  code, _, _ = _main(capsys, '--contact_sheet', user_dir / 'a' / 'b' / 'sheet.png', *TINY)
  assert code == 130 and disk.snapshot(user_dir) == before  # the folders it had created are gone too


def test_sigterm_and_disk_errors_mid_export_leave_nothing(capsys, user_dir, monkeypatch):
  real = render_scenes.render_scene
  before = disk.snapshot(user_dir)

  def terminated(seed, *args, **kwargs):
    if seed[1] == 1:
      os.kill(os.getpid(), signal.SIGTERM)  # handled in the main thread, as from `kill PID`
    return real(seed, *args, **kwargs)

  monkeypatch.setattr(render_scenes, 'render_scene', terminated)
  code, out, err = _main(capsys, '--out', user_dir / 'new' / 'tree', *TINY, '--scenes', '3')
  assert code == 143 and out == ''
  assert _error_line(err) == 'error: interrupted (SIGTERM); temporary files were removed, finished outputs kept'
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
  assert disk.snapshot(user_dir) == before  # no tree, no .partial, and the folders it created are removed

  def disk_full(*args, **kwargs):
    raise OSError(28, 'No space left on device', str(user_dir / 'tree' / 'RGB_0000_00.jpg'))

  monkeypatch.setattr(render_scenes, 'render_scene', real)
  monkeypatch.setattr(codec, 'encode_jpeg', disk_full)
  code, out, err = _main(capsys, '--out', user_dir, *TINY)
  assert code == 1 and out == ''
  assert _error_line(err) == (f"error: [Errno 28] No space left on device: '{user_dir / 'tree' / 'RGB_0000_00.jpg'}'")
  assert disk.snapshot(user_dir) == before


def _start(out_dir):
  """A renderer process busy for about a minute (it is stopped long before)."""
  # SIGINT back to its default in the child: a test run started in the background of a shell ignores it, and a
  # child would inherit that (Python then leaves Ctrl-C ignored, as nohup intends).
  return subprocess.Popen([sys.executable, '-m', 'tfds_stillbox.render', '--out', str(out_dir), '--resolution',
                           '32', '--frames', '4', '--scenes', '2000', '--jobs', '1'], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_partial(process, folder, timeout=60.0):
  """The name of the export's temporary folder, once it exists and holds a rendered scene."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    assert process.poll() is None, process.communicate()
    partial = [n for n in os.listdir(folder) if '.partial-' in n] if os.path.isdir(folder) else []
    if partial and os.listdir(os.path.join(folder, partial[0], '0')):
      return partial[0]
    time.sleep(0.05)
  raise AssertionError(f'no .partial folder in {folder} after {timeout} s')


def test_sigint_removes_the_partial_folder(user_dir):
  before = disk.snapshot(user_dir)
  process = _start(user_dir)
  partial = _wait_for_partial(process, user_dir)
  assert partial.startswith('.32.partial-') and f'-{process.pid}-' in partial  # the writer's PID
  process.send_signal(signal.SIGINT)
  out, err = process.communicate(timeout=60)
  assert process.returncode == 130 and out == ''
  assert _error_line(err) == 'error: interrupted (Ctrl-C); temporary files were removed, finished outputs kept'
  assert disk.snapshot(user_dir) == before


def test_after_sigkill_the_next_run_sweeps_what_the_dead_process_left(capsys, tmp_path):
  out_dir = tmp_path / 'out'
  process = _start(out_dir)
  partial = _wait_for_partial(process, out_dir)
  process.kill()
  process.communicate(timeout=60)
  # SIGKILL cannot be caught: the folder stays, named for its PID, and so does the tree's lock file (unlocked by the
  # kernel when the process died: the next run into OUT/32 takes it and removes it on its way out; folder_lock)
  assert sorted(os.listdir(out_dir)) == sorted([partial, '.32.lock'])
  host = atomic.HOST
  assert partial.startswith(f'.32.partial-{host}-{process.pid}-')
  # A dead process's half-written contact sheet; and temporary paths that must stay: this live process's, and
  # another host's (a shared disk: its PIDs mean nothing here).
  sheets = tmp_path / 'sheets'
  sheets.mkdir()
  stale_sheet = sheets / f'.sheet.png.partial-{host}-{process.pid}-k2j4h5g6.png'
  stale_sheet.write_bytes(PNG_MAGIC)
  live = [out_dir / f'.64.partial-{host}-{os.getpid()}-abcd1234', sheets / f'.a.png.partial-{host}-{os.getpid()}-'
          'abcd1234.png', out_dir / f'.64.partial-elsewhere{host}-{process.pid}-abcd1234']
  live[0].mkdir()
  live[1].write_bytes(b'')
  live[2].mkdir()
  code, out, err = _main(capsys, '--out', out_dir, '--contact_sheet', sheets / 'sheet.png', *TINY)
  assert code == 0, err
  assert out.splitlines() == [
      f'removed {out_dir / partial}: left by renderer process {process.pid}, which is no longer running',
      f'wrote 2 scenes to {out_dir / "16"}',
      f'removed {stale_sheet}: left by renderer process {process.pid}, which is no longer running',
      f'wrote a contact sheet to {sheets / "sheet.png"}']
  # the run into OUT/16 holds and removes `.16.lock` only: `.32.lock` is OUT/32's, left for its next run
  assert sorted(os.listdir(out_dir)) == sorted(['16', '.32.lock', live[0].name, live[2].name])
  assert sorted(os.listdir(sheets)) == sorted(['sheet.png', live[1].name])
  code, out, err = _main(capsys, '--out', out_dir, '--resolution', '32', '--frames', '2', '--scenes', '1')
  assert code == 0 and out.splitlines() == [f'wrote 1 scenes to {out_dir / "32"}'], err   # not blocked
  assert sorted(os.listdir(out_dir)) == sorted(['16', '32', live[0].name, live[2].name])   # its lock file gone


# --- The library's own checks (scenes, raycast, export) --------------------------------------------------


def test_library_checks_name_the_value():
  with pytest.raises(ValueError, match=r"fov=180: expected a number of degrees in \(0, 180\)"):
    render_scenes.sample_world(0, 16, fov=180)  # was an OverflowError from deep in numpy
  with pytest.raises(ValueError, match=r"resolution '96x': expected a positive size"):
    raycast.as_resolution('96x')
  with pytest.raises(ValueError, match=r"resolution \(96, 64, 3\): expected"):
    raycast.as_resolution((96, 64, 3))
  with pytest.raises(ValueError, match=r"resolution 63.5: expected"):
    raycast.as_resolution(63.5)  # not silently 63
  with pytest.raises(ValueError, match=r'seed=\(1, 2.5\): expected a non-negative integer'):
    render_scenes.seed_sequence((1, 2.5))
  assert raycast.as_resolution(' 96X64 ') == (96, 64) and raycast.as_resolution(np.int64(8)) == (8, 8)
  with pytest.raises(cli.UserError, match=r'num_scenes=0: expected an integer >= 1'):
    export.export('/nonexistent/never-created', 16, num_scenes=0, seed=0)
  assert not os.path.exists('/nonexistent')


@pytest.mark.parametrize('motion, message', [
    (dict(step=0), r'step=0.0: expected a number > 0 \(metres per frame\)'),
    (dict(step=float('nan')), r'step=nan: expected a number > 0'),
    (dict(step=True), r'step=True: expected a number > 0'),
    (dict(depth_range=(20, 2)), r'depth_range=\[20, 2\]: expected two numbers NEAR,FAR in metres with 0 < NEAR < '
                                r'FAR$'),
    (dict(depth_range=(0, 2)), r'depth_range=\[0, 2\]: expected two numbers'),
    (dict(depth_range=8.0), r'depth_range=8.0: expected two numbers'),
    (dict(depth_range=(1, 2, 3)), r'depth_range=\[1, 2, 3\]: expected two numbers'),
    (dict(depth_range=(1, None)), r'depth_range=\[1, None\]: expected two numbers'),
], ids=['step 0', 'step nan', 'step bool', 'far < near', 'near 0', 'one number', 'three numbers', 'None'])
def test_library_checks_of_step_and_depth_range(tmp_path, motion, message):
  """The library has no upper bounds (the command line's are typos guards), and checks before writing."""
  with pytest.raises(ValueError, match=message):
    render_scenes.sample_world(0, 16, **motion)
  with pytest.raises(ValueError, match=message):
    render_scenes.render_scene(0, 16, num_frames=2, **motion)
  with pytest.raises(cli.UserError, match=message):
    export.export(str(tmp_path / 'out'), 16, num_scenes=1, seed=0, num_frames=2, **motion)
  with pytest.raises(cli.UserError, match=message):
    export.contact_sheet(str(tmp_path / 'sheet.png'), 16, 1, num_frames=2, **motion)
  assert os.listdir(tmp_path) == []
  assert render_scenes.sample_world(0, 16, 90.0, 2, step=50.0, depth_range=(1e4, 1e5)).speed is not None
