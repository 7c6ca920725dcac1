"""infer.py under bad inputs and faults (issue 9): one `error:` line per user error, found before any work; nothing
a user owns lost; no half-result that looks whole; no temporary left behind.

Every case asserts the exit code, the one error line (naming the flag or file, the value, what was expected) and
the disk afterwards: the input and output folders byte for byte, no temporary file. Most cases run `infer.main`
in-process (the errors come before the model loads); a few run `infer.py` as a user does, where only a real
process shows it (signals, stray log lines).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import TEST_XLA_FLAGS

import infer
from depthnet_jax.checkpoints import checkpointing
from depthnet_jax.common import atomic
from depthnet_jax.infer.outputs import MANIFEST
from depthnet_jax.testing.random_models import random_depthnet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32


# --- fixtures and helpers ---------------------------------------------------------------------------------------

def _save(path, seed=0):
  """A checkpoint that records a 32x32 training size (so the network input is 32x32)."""
  checkpointing.save_model(path, random_depthnet(seed), metadata={'image_size': [SIZE, SIZE]})
  return str(path)


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
  return _save(tmp_path_factory.mktemp('model') / 'ckpt')


@pytest.fixture(scope='module')
def damaged(ckpt, tmp_path_factory):
  """A copy of `ckpt` whose largest data file is truncated, as an interrupted copy leaves it."""
  path = tmp_path_factory.mktemp('damaged') / 'ckpt'
  shutil.copytree(ckpt, path)
  data = max((os.path.join(d, n) for d, _, ns in os.walk(path / 'model') for n in ns), key=os.path.getsize)
  with open(data, 'r+b') as f:
    f.truncate(1000)
  return str(path)


def _frames(folder, n, *, seed=0, ext='png'):
  """n random 32x32 RGB frames named frame_000.png..., as a camera's export writes them."""
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  for i in range(n):
    iio.imwrite(folder / f'frame_{i:03d}.{ext}', rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
  return folder


def _video(path, n, *, seed=0):
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
  iio.imwrite(path, np.stack([np.roll(base, i, axis=1) for i in range(n)]), plugin='pyav', codec='libx264', fps=10)
  return path


def _disk(*folders):
  """Every file under the folders (hidden ones included) -> its bytes; a missing folder -> None."""
  state = {}
  for folder in folders:
    folder = str(folder)
    if not os.path.exists(folder):
      state[folder] = None
      continue
    for directory, _, names in os.walk(folder):
      for name in names:
        path = os.path.join(directory, name)
        with open(path, 'rb') as f:
          state[path] = f.read()
  return state


def _temporaries(folder):
  return [n for n in os.listdir(folder) if '.partial-' in n or '.tmp' in n]


def _main(capsys, *args):
  """infer.py in-process: (exit code, stdout, stderr)."""
  code = infer.main([str(a) for a in args])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def _one_error(err):
  """The single `error:` line of stderr (asserting there is exactly one, and no traceback)."""
  lines = [line for line in err.splitlines() if line.startswith('error: ')]
  assert len(lines) == 1 and 'Traceback' not in err, err
  return lines[0]


def _infer_process(*args, **popen):
  return subprocess.Popen([sys.executable, os.path.join(REPO, 'infer.py'), *map(str, args)],
                          env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu', XLA_FLAGS=TEST_XLA_FLAGS),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, **popen)


def _manifest(folder):
  with open(os.path.join(folder, MANIFEST)) as f:
    return json.load(f)


# --- flags out of range, bad paths: one line, before any work ---------------------------------------------------

@pytest.fixture(scope='module')
def frames(tmp_path_factory):
  return _frames(tmp_path_factory.mktemp('in') / 'frames', 6)


RANGE_CASES = [  # (extra flags, the exact error line)
    (['--fov', '0'], 'error: --fov=0.0: expected a number in (0, 180)'),
    (['--fov', '180'], 'error: --fov=180.0: expected a number in (0, 180)'),
    (['--fov', 'nan'], 'error: --fov=nan: expected a number in (0, 180)'),
    (['--fov', '30', '--train_fov', '0'], 'error: --train_fov=0.0: expected a number in (0, 180)'),
    (['--train_fov', '60'], "error: --train_fov=60.0: used only with --fov (the footage's FOV it is matched to); "
                            'expected --fov too'),
    (['--height', '0', '--width', '64'], 'error: --height=0: expected an integer from 1 to 16384'),
    (['--height', '32', '--width', '-1'], 'error: --width=-1: expected an integer from 1 to 16384'),
    (['--height', '32'], 'error: --height=32 --width=None: expected both (the network input size) or neither'),
    (['--fps', '0'], 'error: --fps=0.0: expected a number in [0.01, 100] with --video_format gif (GIF frame delays '
                     'are whole 1/100 s)'),
    (['--fps', '0', '--video_format', 'mp4'], 'error: --fps=0.0: expected a number in (0, 1000]'),
    (['--fps', '-5', '--video_format', 'mp4'], 'error: --fps=-5.0: expected a number in (0, 1000]'),
    (['--frame_shift', '0'], "error: --frame_shift=0: expected an integer >= 1, 'auto' or 'fuse'"),
    (['--batch_size', '0'], 'error: --batch_size=0: expected an integer >= 1'),
    (['--extensions', ','], "error: --extensions='': expected at least one image extension, e.g. jpg,png"),
    (['--no_resize', '--fov', '30'], 'error: --no_resize and --fov: expected at most one of --no_resize, '
                                     '--height/--width, --fov (each sets the network input size)'),
    (['--fov', 'wide'], "error: argument --fov: invalid float value: 'wide' (--help lists the flags)"),
    (['--video_format', 'avi'], "error: argument --video_format: invalid choice: 'avi' (choose from 'gif', "
                              "'mp4') (--help lists the flags)"),
    (['--outptu', 'x'], 'error: unrecognized arguments: --outptu x (--help lists the flags)'),
    (['--fov', '100'], "error: --fov=100.0: the footage's FOV (100.0 deg) is wider than the network's training FOV "
                       '(90.0 deg): at the training focal length its borders fall outside anything the network '
                       'has seen. Crop the footage to at most 90.0 deg (a centred crop 27 px wide of its 32 px) or '
                       'use a network trained wider.'),
]


@pytest.mark.parametrize('extra,expected', RANGE_CASES, ids=[' '.join(c[0]) for c in RANGE_CASES])
def test_flag_out_of_range_is_one_line_before_any_work(capsys, ckpt, frames, tmp_path, extra, expected):
  out = tmp_path / 'out'
  before = _disk(frames, ckpt)
  code, stdout, err = _main(capsys, '--checkpoint', ckpt, '--input', frames, '--output', out, *extra)
  assert code == 1 and err == expected + '\n' and stdout == ''
  assert not out.exists() and _disk(frames, ckpt) == before


def test_fps_zero_is_refused_by_the_command_before_the_model_loads(ckpt, frames, tmp_path):
  """As a user runs it (today: all frames written, then ZeroDivisionError): one line on stderr, nothing written."""
  out = tmp_path / 'out'
  result = _infer_process('--checkpoint', ckpt, '--input', frames, '--output', out, '--output_video', '--fps', '0')
  stdout, err = result.communicate(timeout=120)
  assert result.returncode == 1 and stdout == ''
  assert err == ('error: --fps=0.0: expected a number in [0.01, 100] with --video_format gif (GIF frame delays are '
                 'whole 1/100 s)\n')
  assert not out.exists()


def test_bad_paths_are_one_line_before_any_work(capsys, ckpt, damaged, frames, tmp_path):
  (tmp_path / 'garbage.pth.tar').write_bytes(b'not a checkpoint')
  a_file = tmp_path / 'a_file'
  a_file.write_bytes(b'mine')
  empty = tmp_path / 'empty'
  empty.mkdir()
  few = _frames(tmp_path / 'few', 2)
  twins = _frames(tmp_path / 'twins', 3)
  iio.imwrite(twins / 'frame_002.jpg', np.zeros((SIZE, SIZE, 3), np.uint8))
  out = tmp_path / 'out'
  unwritable = '/proc/depthnet-test/out'   # root may write anywhere else; a chmod'ed folder would not stop it
  if os.geteuid() != 0:
    (tmp_path / 'ro').mkdir(mode=0o500)
    unwritable = str(tmp_path / 'ro' / 'out')
  cases = [
      (dict(output=a_file), f'error: --output {a_file}: is a file, expected a directory (or a path that does not '
                            'exist yet)'),
      (dict(output=unwritable), f'error: --output {unwritable}: cannot write in '),
      (dict(input=tmp_path / 'nowhere'), f'error: --input {tmp_path / "nowhere"}: no such folder or video file'),
      (dict(checkpoint=tmp_path / 'no_ckpt'), f'error: --checkpoint {tmp_path / "no_ckpt"}: no such file or '
                                              'directory; expected a training workdir, a checkpoint directory or '
                                              'a .pth.tar'),
      (dict(checkpoint=few), f'error: --checkpoint: {few} is neither a depthnet-jax checkpoint'),
      (dict(checkpoint=damaged), f'error: --checkpoint: checkpoint {damaged} '),
      (dict(checkpoint=tmp_path / 'garbage.pth.tar'), f'error: --checkpoint: {tmp_path / "garbage.pth.tar"}: not a '
                                                      'torch checkpoint'),
      (dict(output=os.path.join(ckpt, 'depth')), f'error: --output {os.path.join(ckpt, "depth")}: inside the '
                                                 f'checkpoint {ckpt}; expected a folder outside it'),
      (dict(input=empty), f"error: --input {empty}: no frames with extensions ['bmp', 'jpeg', 'jpg', 'png'] "
                          '(change --extensions?)'),
      (dict(input=few, frame_shift=3), f'error: --input {few}: 2 frame(s); pairs at --frame_shift 3 need at least 4'),
      (dict(input=twins), f'error: --input {twins}: frames frame_002.jpg and frame_002.png would both write outputs '
                          'named frame_002_*; expected one frame per name (rename one, or narrow --extensions)'),
  ]
  for flags_, expected in cases:
    args = {**dict(checkpoint=ckpt, input=frames, output=out), **flags_}
    before = _disk(tmp_path, ckpt)
    code, stdout, err = _main(capsys, *[x for k, v in args.items() for x in (f'--{k}', v)])
    assert code == 1 and stdout == '', (flags_, err)
    assert _one_error(err).startswith(expected) and err.count('\n') == 1, (flags_, err)
    assert _disk(tmp_path, ckpt) == before, flags_   # nothing created, nothing changed
  assert 'damaged or incomplete' in _one_error(_main(capsys, '--checkpoint', damaged, '--input', frames,
                                                     '--output', out)[2])


def test_damaged_checkpoint_is_one_line_from_the_command(tmp_path, damaged, frames):
  """Orbax and TensorStore print 161 lines of traceback and logs for a truncated file; the command prints one."""
  out = tmp_path / 'out'
  result = _infer_process('--checkpoint', damaged, '--input', frames, '--output', out)
  stdout, err = result.communicate(timeout=120)
  assert result.returncode == 1 and stdout == ''
  assert err.startswith(f'error: --checkpoint: checkpoint {damaged} is damaged') and err.count('\n') == 1, err
  assert not out.exists()


# --- nothing a user owns is lost --------------------------------------------------------------------------------

def test_output_equal_to_input_twice_gives_the_same_results(capsys, ckpt, tmp_path):
  """Today the second run read the first run's PNGs as frames and overwrote the .npy with other depths."""
  folder = _frames(tmp_path / 'shots', 6)
  (folder / 'notes.txt').write_text('mine')
  frames_before = _disk(folder)
  code, stdout, _ = _main(capsys, '--checkpoint', ckpt, '--input', folder, '--output', folder, '--batch_size', 1)
  assert code == 0 and stdout.startswith('6 frames, 5 pairs (shift 1), network input 32x32')
  first = _disk(folder)
  assert all(first[p] == b for p, b in frames_before.items())   # the user's files untouched
  written = sorted(os.path.basename(p) for p in set(first) - set(frames_before))
  stems = [f'frame_{i:03d}' for i in range(1, 6)]
  assert written == sorted([MANIFEST] + [s + x for s in stems for x in ('_depth.png', '_disp.png',
                                                                                '_depth.npy')])
  manifest = _manifest(folder)
  assert manifest['status'] == 'complete' and manifest['error'] is None
  assert sorted(manifest['files']) == sorted(n for n in written if n != MANIFEST)

  code, stdout, _ = _main(capsys, '--checkpoint', ckpt, '--input', folder, '--output', folder, '--batch_size', 1)
  assert code == 0 and stdout.startswith('6 frames, 5 pairs')   # not 16: its own PNGs are not frames
  second = _disk(folder)
  assert sorted(second) == sorted(first) and not _temporaries(folder)
  for path, data in first.items():
    if not path.endswith(MANIFEST):
      assert second[path] == data, path                             # identical results, byte for byte
  assert _manifest(folder)['status'] == 'complete'

  # ... and read as the input of a run elsewhere, the folder gives the same 6 frames
  code, stdout, _ = _main(capsys, '--checkpoint', ckpt, '--input', folder, '--output', tmp_path / 'elsewhere',
                          '--batch_size', 1, '--output_raw')
  assert code == 0 and stdout.startswith('6 frames, 5 pairs')
  for s in stems:
    assert (tmp_path / 'elsewhere' / f'{s}_depth.npy').read_bytes() == first[str(folder / f'{s}_depth.npy')]


def test_a_users_file_with_an_outputs_name_is_never_overwritten(capsys, ckpt, frames, tmp_path):
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'frame_003_depth.png').write_bytes(b'my own picture')
  (out / 'notes.txt').write_text('mine')
  before = _disk(frames, out)
  code, _, err = _main(capsys, '--checkpoint', ckpt, '--input', frames, '--output', out)
  assert code == 1
  assert _one_error(err) == (f'error: --output {out}: frame_003_depth.png already exist(s) and infer.py did not '
                             f'write it (not listed in its {MANIFEST}); expected no such file: infer.py '
                             'never replaces files it did not write, so move them away or choose another --output')
  assert _disk(frames, out) == before
  # --overwrite replaces results of ours only, never this file
  code, _, err = _main(capsys, '--checkpoint', ckpt, '--input', frames, '--output', out, '--overwrite')
  assert code == 1 and 'frame_003_depth.png already exist(s) and infer.py did not write it' in _one_error(err)
  assert _disk(frames, out) == before


def test_results_of_other_settings_are_replaced_only_with_overwrite(capsys, ckpt, tmp_path):
  folder = _frames(tmp_path / 'frames', 5)
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'notes.txt').write_text('mine')
  common = ('--checkpoint', ckpt, '--input', folder, '--output', out, '--output_raw', '--batch_size', 1)
  assert _main(capsys, *common)[0] == 0
  first = _disk(out)
  code, _, err = _main(capsys, *common, '--frame_shift', 2)
  assert code == 1
  assert _one_error(err) == (f'error: --output {out}: frame_002_depth.npy, frame_003_depth.npy, frame_004_depth.npy '
                             'hold(s) the results of an earlier run with other settings (--frame_shift 1 -> 2); pass '
                             '--overwrite to replace earlier results of infer.py (never other files), or choose '
                             'another --output')
  assert _disk(out) == first
  code, stdout, _ = _main(capsys, *common, '--frame_shift', 2, '--overwrite')
  assert code == 0 and stdout.startswith('5 frames, 3 pairs (shift 2)')
  after = _disk(out)
  assert after[str(out / 'notes.txt')] == b'mine' and sorted(after) == sorted(first)
  assert after[str(out / 'frame_001_depth.npy')] == first[str(out / 'frame_001_depth.npy')]  # not a target
  for i in (2, 3, 4):
    assert after[str(out / f'frame_{i:03d}_depth.npy')] != first[str(out / f'frame_{i:03d}_depth.npy')]
  manifest = _manifest(out)
  assert manifest['status'] == 'complete' and len(manifest['settings']) == 2   # frame_001's settings are kept
  assert manifest['files']['frame_001_depth.npy'] != manifest['files']['frame_002_depth.npy']
  # a changed frame is another input: its old results are not replaced silently either
  iio.imwrite(folder / 'frame_000.png', np.zeros((SIZE, SIZE, 3), np.uint8))
  code, _, err = _main(capsys, *common, '--frame_shift', 2)
  assert code == 1 and f'(input {folder} changed since)' in _one_error(err)


# --- no half-result that looks whole ----------------------------------------------------------------------------

@pytest.mark.parametrize('fault', ['corrupt', 'other size'])
def test_a_bad_frame_late_in_a_folder_stops_the_run_before_any_output(capsys, ckpt, tmp_path, fault):
  """Today: 24 result files and nothing saying the run failed."""
  folder = _frames(tmp_path / 'frames', 30)
  bad = folder / 'frame_027.png'
  if fault == 'corrupt':
    bad.write_bytes(bad.read_bytes()[:60])   # a truncated PNG, as a copy interrupted midway leaves it
    expected = f'error: {bad}: cannot read the image ('
  else:
    iio.imwrite(bad, np.zeros((SIZE, SIZE + 8, 3), np.uint8))
    expected = (f"error: {bad}: frame size 40x32 differs from {folder / 'frame_000.png'}'s 32x32; expected all "
                'frames of a folder to have one size')
  out = tmp_path / 'out'
  before = _disk(folder)
  code, stdout, err = _main(capsys, '--checkpoint', ckpt, '--input', folder, '--output', out, '--batch_size', 4)
  assert code == 1 and stdout == '' and _one_error(err).startswith(expected)
  assert not out.exists() and _disk(folder) == before


def test_a_write_failure_midway_marks_the_output_failed(capsys, ckpt, tmp_path, monkeypatch):
  """A full disk at the third file: the error is one line, the manifest says 'failed', no temporary is left."""
  folder = _frames(tmp_path / 'frames', 6)
  out = tmp_path / 'out'
  real_save, calls = np.save, []

  def full_disk(f, array, allow_pickle):
    calls.append(1)
    if len(calls) == 3:
      f.write(b'\x93NUMPY partial')
      raise OSError(28, 'No space left on device')
    real_save(f, array, allow_pickle=allow_pickle)
  monkeypatch.setattr(np, 'save', full_disk)
  code, stdout, err = _main(capsys, '--checkpoint', ckpt, '--input', folder, '--output', out, '--batch_size', 1,
                            '--output_raw')
  assert code == 1 and stdout == ''
  assert _one_error(err) == f'error: --output {out / "frame_003_depth.npy"}: cannot write it (No space left on device)'
  assert sorted(os.listdir(out)) == [MANIFEST, 'frame_001_depth.npy', 'frame_002_depth.npy']
  manifest = _manifest(out)
  assert manifest['status'] == 'failed' and manifest['error'] == _one_error(err)[len('error: '):]
  assert sorted(manifest['files']) == ['frame_001_depth.npy', 'frame_002_depth.npy']


def test_an_encoder_error_during_mp4_leaves_no_temporary(capsys, ckpt, tmp_path, monkeypatch):
  from imageio.plugins import pyav
  video = _video(tmp_path / 'clip.mp4', 8)
  out = tmp_path / 'out'
  real_write, calls = pyav.PyAVPlugin.write_frame, []

  def failing_encoder(self, frame, *args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
      import av
      raise av.error.ExternalError(-542398533, 'Generic error in an external library')
    return real_write(self, frame, *args, **kwargs)
  monkeypatch.setattr(pyav.PyAVPlugin, 'write_frame', failing_encoder)
  code, _, err = _main(capsys, '--checkpoint', ckpt, '--input', video, '--output', out, '--batch_size', 1,
                       '--output_raw', '--output_video', '--video_format', 'mp4')
  assert code == 1
  assert _one_error(err).startswith(f'error: --output {out / "depth.mp4"}: the mp4 encoder failed (ExternalError: ')
  assert not _temporaries(out) and not (out / 'depth.mp4').exists()
  manifest = _manifest(out)
  assert manifest['status'] == 'failed' and 'mp4 encoder failed' in manifest['error']
  assert sorted(manifest['files']) == sorted(n for n in os.listdir(out) if n != MANIFEST)


def test_sigint_during_mp4_exits_130_and_leaves_no_temporary(ckpt, tmp_path):
  video = _video(tmp_path / 'clip.mp4', 400)
  out = tmp_path / 'out'
  proc = _infer_process('--checkpoint', ckpt, '--input', video, '--output', out, '--batch_size', 1, '--output_raw',
                        '--output_video', '--video_format', 'mp4')
  deadline = time.time() + 120
  # until the first result is written and the mp4 is being streamed into its temporary
  while not (out.exists() and any(n.endswith('.npy') for n in os.listdir(out))
             and any(n.startswith('.depth.mp4.partial-') for n in os.listdir(out))):
    assert proc.poll() is None and time.time() < deadline, proc.communicate()
    time.sleep(0.02)
  proc.send_signal(signal.SIGINT)
  stdout, err = proc.communicate(timeout=60)
  assert proc.returncode == 130 and stdout == ''
  assert _one_error(err) == 'error: interrupted (Ctrl-C); temporary files were removed, finished outputs kept'
  assert not _temporaries(out) and not (out / 'depth.mp4').exists()
  manifest = _manifest(out)
  assert manifest['status'] == 'incomplete' and manifest['error'].startswith('interrupted (Ctrl-C) after ')
  npy = sorted(n for n in os.listdir(out) if n.endswith('.npy'))
  assert npy and sorted(manifest['files']) == npy and len(npy) < 399
  for n in npy:
    assert np.load(out / n).shape == (SIZE, SIZE)   # every file there is whole


def test_temporaries_of_a_killed_run_are_swept_by_the_next_run(capsys, ckpt, tmp_path):
  """After a SIGKILL: only our temporaries whose process is dead are removed; nothing else."""
  video = _video(tmp_path / 'clip.mp4', 5)
  out = tmp_path / 'out'
  out.mkdir()
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  alive = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  try:
    host = atomic.HOST
    stale = [f'.depth.mp4.partial-{host}-{dead.pid}-a1b2c3d4.mp4',
             f'.000001_depth.npy.partial-{host}-{dead.pid}-x_9.npy', f'.{MANIFEST}.partial-{host}-{dead.pid}-q.json']
    kept = [f'.depth.mp4.partial-{host}-{alive.pid}-a1b2c3d4.mp4',      # a live writer's
            f'.notes.txt.partial-{host}-{dead.pid}-a1b2c3d4.txt',       # not one of our output names
            f'.depth.mp4.partial-elsewhere{host}-{dead.pid}-a1.mp4',    # another host's (a shared disk)
            '.depth.mp4.tmp-12x.mp4', 'depth.mp4.partial-1.mp4']
    for name in stale + kept:
      (out / name).write_bytes(b'partial')
    code, stdout, _ = _main(capsys, '--checkpoint', ckpt, '--input', video, '--output', out, '--output_raw',
                            '--output_video', '--video_format', 'mp4', '--batch_size', 1)
    assert code == 0 and stdout.startswith('5 frames, 4 pairs')
    names = set(os.listdir(out))
    assert not names & set(stale) and set(kept) <= names
    assert names - set(kept) == {MANIFEST, 'depth.mp4'} | {f'{i:06d}_depth.npy' for i in range(1, 5)}
    assert _manifest(out)['status'] == 'complete'
    assert iio.imread(out / 'depth.mp4', plugin='pyav', index=None).shape == (4, SIZE, 2 * SIZE, 3)
  finally:
    alive.kill()
    alive.wait()


def test_a_video_with_too_few_frames_writes_nothing(capsys, ckpt, tmp_path):
  video = _video(tmp_path / 'clip.mp4', 2)
  out = tmp_path / 'out'
  code, _, err = _main(capsys, '--checkpoint', ckpt, '--input', video, '--output', out, '--frame_shift', 2)
  assert code == 1
  assert _one_error(err) == f'error: --input {video}: 2 frame(s); pairs at --frame_shift 2 need at least 3'
  assert not out.exists()


def test_a_users_file_named_like_a_video_output_is_checked_before_any_work(capsys, ckpt, tmp_path):
  video = _video(tmp_path / 'clip.mp4', 4)
  out = tmp_path / 'out'
  out.mkdir()
  (out / '000002_depth.npy').write_bytes(b'mine')
  code, _, err = _main(capsys, '--checkpoint', ckpt, '--input', video, '--output', out)
  assert code == 1 and '000002_depth.npy already exist(s) and infer.py did not write it' in _one_error(err)
  assert os.listdir(out) == ['000002_depth.npy'] and (out / '000002_depth.npy').read_bytes() == b'mine'
