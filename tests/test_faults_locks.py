"""One writer per folder (issue 21): every command that writes a folder or file holds it (`folder_lock`) for the
whole run, and a second command on it is refused at once: exit 1, one `error:` line naming the folder and the
holder's pid, the disk unchanged. A SIGKILLed holder blocks nobody; a normal run leaves no lock file; the unlink
race is retried; a TFDS build removes the `incomplete.*` folders a killed build left.

The holder is another process: a `python -c` that takes the lock with `folder_lock` (as every command does), or
a real renderer started and paused (SIGSTOP) once it holds its tree. The refused commands run in-process through
their `main(argv)` (the refusal comes before any JAX work); train.py runs as two `jax.distributed` processes, the
case where a refused process 0 must not leave its peer waiting.
"""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import TEST_XLA_FLAGS

from depthnet_jax.common import cli, folder_lock
from depthnet_jax.testing import disk, network, pickle_craft
from depthnet_jax.testing.config_files import load_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HOLD = ('import sys; from depthnet_jax.common import folder_lock; '
         'lock = folder_lock.acquire(sys.argv[1], "--test", beside=sys.argv[2] == "1"); '
         'print("held", flush=True); sys.stdin.read(); lock.release()')


# --- helpers ------------------------------------------------------------------------------------------------------

@pytest.fixture
def holder():
  """`holder(path, beside=False)`: a process that holds the lock of `path` until the test ends (or `.stdin` is
  closed: it releases and exits); its Popen."""
  started = []

  def start(path, beside=False):
    process = subprocess.Popen([sys.executable, '-c', _HOLD, str(path), '1' if beside else '0'], cwd=REPO,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    started.append(process)
    assert process.stdout.readline() == 'held\n'
    return process

  yield start
  for process in started:
    process.kill()
    process.wait()


def _call(main, argv) -> tuple[int, str, str]:
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = main([str(a) for a in argv])
  return code, out.getvalue(), err.getvalue()


def _refused(result, flag, path, pid, *, where='there') -> str:
  """Exit 1 and one `error:` line, nothing else on stderr, naming the flag, the path and the holder's pid."""
  code, _, err = result
  assert code == 1, err
  assert err.count('\n') == 1 and err.startswith('error: '), err
  line = err.strip()
  assert line.startswith(f'error: {flag} {path}: another command (pid {pid}, '), line
  assert f') is writing {where}' in line and 'no other command is writing' in line, line
  return line


def _frames(folder, n=3):
  folder.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for i in range(n):
    iio.imwrite(folder / f'frame_{i:03d}.png', rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
  return folder


# --- the lock itself ------------------------------------------------------------------------------------------------

def test_a_held_folder_is_refused_and_a_released_one_leaves_nothing(tmp_path, holder):
  folder = tmp_path / 'out'
  process = holder(folder)
  record = folder_lock.read_holder(folder)
  assert record['pid'] == process.pid and record['command'].startswith('-c ')
  with pytest.raises(folder_lock.HeldError) as refused:
    folder_lock.acquire(folder, '--output')
  assert refused.value.holder['pid'] == process.pid
  assert f'--output {folder}: another command (pid {process.pid}, -c ' in str(refused.value)
  process.stdin.close()   # the holder releases: its lock file, and the folder it created, go
  assert process.wait(timeout=30) == 0
  assert os.listdir(tmp_path) == []
  with folder_lock.hold(tmp_path / 'new' / 'out.json', '--json', beside=True) as lock:
    assert lock.path == str(tmp_path / 'new' / '.out.json.lock') and json.load(open(lock.path))['pid'] == os.getpid()
  assert os.listdir(tmp_path) == []


def test_a_killed_holder_blocks_nobody_and_the_next_holder_removes_its_file(tmp_path, holder):
  folder = tmp_path / 'out'
  process = holder(folder)
  process.kill()   # SIGKILL: nothing of the holder runs, the kernel drops its lock
  process.wait()
  assert os.listdir(folder) == [folder_lock.LOCK_NAME]   # left behind, unlocked, naming the dead holder
  assert folder_lock.read_holder(folder)['pid'] == process.pid
  with folder_lock.hold(folder, '--output') as lock:   # taken at once, and written anew
    assert lock.held and folder_lock.read_holder(folder)['pid'] == os.getpid()
  assert os.listdir(folder) == []   # removed on the way out (the folder the dead holder created stays)


def test_the_unlink_race_is_retried(tmp_path, monkeypatch):
  """A second command opens the lock file, the holder removes it and exits before the second locks it, and a
  third creates and locks a new one: the second holds a lock on a file no path names, unless it checks."""
  first = folder_lock.acquire(tmp_path, '--output')
  third, real_flock = [], folder_lock._flock

  def flock(fd):   # the second's flock, after its open: the holder leaves, a third command takes a new file
    if not third:
      third.append(None)
      first.release()
      third[0] = folder_lock.acquire(tmp_path, '--output')
    real_flock(fd)

  monkeypatch.setattr(folder_lock, '_flock', flock)
  with pytest.raises(folder_lock.HeldError, match=f'pid {os.getpid()}'):
    folder_lock.acquire(tmp_path, '--output')   # the orphan's lock is dropped, the third one's file refuses it
  monkeypatch.setattr(folder_lock, '_flock', real_flock)
  assert third[0].held and folder_lock._same_file(third[0]._fd, third[0].path)
  third[0].release()
  first = folder_lock.acquire(tmp_path, '--output')   # the holder leaves between open and flock: taken anew
  monkeypatch.setattr(folder_lock, '_flock', lambda fd: (first.release(), real_flock(fd)))
  second = folder_lock.acquire(tmp_path, '--output')
  assert folder_lock._same_file(second._fd, second.path)
  second.release()
  assert os.listdir(tmp_path) == []


# --- the commands -------------------------------------------------------------------------------------------------

def _render(out, *args):
  from tfds_stillbox.render import cli as render_cli
  return _call(render_cli.main, ['--out', out, '--resolution', 16, '--frames', 2, *args])


def test_renderer_is_refused_while_one_runs_and_a_killed_one_blocks_nobody(tmp_path):
  out = tmp_path / 'trees'
  first = subprocess.Popen([sys.executable, '-m', 'tfds_stillbox.render', '--out', str(out), '--resolution', '16',
                            '--frames', '2', '--scenes', '100000'], cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + 60
    while (folder_lock.read_holder(out / '16', beside=True) or {}).get('pid') != first.pid:
      assert first.poll() is None and time.monotonic() < deadline
      time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)   # paused while it writes its tree
    before = disk.snapshot(tmp_path)
    line = _refused(_render(out, '--scenes', 1), '--out', out / '16', first.pid, where='it')
    assert 'tfds_stillbox.render --out' in line
    assert disk.snapshot(tmp_path) == before
  finally:
    first.kill()
    first.wait()
  assert os.path.exists(out / '.16.lock')   # left by the killed renderer, unlocked: the next run takes it
  code, printed, err = _render(out, '--scenes', 1)
  assert code == 0 and 'wrote 1 scenes' in printed, err
  assert sorted(os.listdir(out)) == ['16']   # no lock file; the killed run's temporary folder swept
  with open(out / '16' / '0' / 'metadata.json') as f:
    assert len(json.load(f)['scenes']) == 1


def test_infer_is_refused_while_another_writes_the_output(tmp_path, holder, random_checkpoint):
  infer = load_module(os.path.join(REPO, 'infer.py'), 'infer_for_locks')
  frames = _frames(tmp_path / 'frames')
  output = tmp_path / 'depth'
  process = holder(output)
  before = disk.snapshot(tmp_path)
  result = _call(infer.main, ['--checkpoint', random_checkpoint, '--input', frames, '--output', output,
                              '--displacement', 0.2])
  _refused(result, '--output', output, process.pid)
  assert disk.snapshot(tmp_path) == before


def test_evaluate_is_refused_while_another_writes_its_json(tmp_path, holder, random_checkpoint):
  from depthnet_jax.evaluation import command
  tree = tmp_path / 'tree'
  assert _render(tree, '--scenes', 1, '--frames', 4)[0] == 0
  process = holder(tmp_path / 'metrics.json', beside=True)
  before = disk.snapshot(tmp_path)
  result = _call(command.main, ['--checkpoint', random_checkpoint, '--stillbox_tree', tree / '16', '--shift', 1,
                                '--json', tmp_path / 'metrics.json'])
  _refused(result, '--json', tmp_path / 'metrics.json', process.pid, where='it')
  assert disk.snapshot(tmp_path) == before
  process = holder(tmp_path / 'errors.png', beside=True)   # --plot likewise, --json free: neither is written
  before = disk.snapshot(tmp_path)
  result = _call(command.main, ['--checkpoint', random_checkpoint, '--stillbox_tree', tree / '16', '--shift', 1,
                                '--json', tmp_path / 'other.json', '--plot', tmp_path / 'errors.png'])
  _refused(result, '--plot', tmp_path / 'errors.png', process.pid, where='it')
  assert disk.snapshot(tmp_path) == before


def test_torch_import_is_refused_while_another_writes_out_dir(tmp_path, holder):
  from depthnet_jax.checkpoints import import_command
  source = tmp_path / 'DepthNet.pth.tar'   # a zip-format torch file, as torch.save writes it
  source.write_bytes(pickle_craft.zip_file(pickle_craft.dumps({'epoch': 1, 'state_dict': {}}), {}))
  process = holder(tmp_path / 'imported', beside=True)
  before = disk.snapshot(tmp_path)
  result = _call(import_command.main, [source, tmp_path / 'imported'])
  _refused(result, 'OUT_DIR', tmp_path / 'imported', process.pid, where='it')
  assert disk.snapshot(tmp_path) == before


def _tiny_builder(data_dir):
  from tfds_stillbox import tfds_stillbox_dataset_builder as stillbox
  config = stillbox.StillBoxConfig(name='locks', source='synth', resolution=8, num_scenes=2, num_frames=2, jobs=1)
  return stillbox.Builder(config=config, data_dir=str(data_dir))


def test_tfds_build_is_refused_while_one_runs_and_removes_a_killed_ones_folders(tmp_path, holder, capsys,
                                                                                monkeypatch):
  from tensorflow_datasets.core.utils import file_utils

  from tfds_stillbox import tfds_stillbox_dataset_builder as stillbox
  builder = _tiny_builder(tmp_path)
  version = str(builder.data_path)
  process = holder(version, beside=True)
  before = disk.snapshot(tmp_path)
  with pytest.raises(folder_lock.HeldError) as refused:
    builder.download_and_prepare()
  assert str(refused.value).startswith(f'--data_dir {version}: another command (pid {process.pid}, ')
  assert disk.snapshot(tmp_path) == before
  # under the `tfds build` command (whose own handling of an exception is a traceback): one line and exit code 1
  capsys.readouterr()
  with monkeypatch.context() as patch:
    patch.setattr(stillbox, '_under_tfds_cli', lambda: True)
    with pytest.raises(SystemExit) as exited:
      _tiny_builder(tmp_path).download_and_prepare()
  assert exited.value.code == 1
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith(f'error: --data_dir {version}: another command (pid '
                                                  f'{process.pid}, '), err
  assert disk.snapshot(tmp_path) == before
  process.stdin.close()
  process.wait(timeout=30)
  # What a killed build leaves: TFDS's own incomplete folder (named as TFDS names it) with a shard in it.
  left = [file_utils._get_incomplete_dir(version).rstrip('/') for _ in range(2)]
  for folder in left:
    os.makedirs(folder)
    open(os.path.join(folder, 'locks-train.array_record-00000-of-00001'), 'wb').close()
  _tiny_builder(tmp_path).download_and_prepare()
  err = capsys.readouterr().err
  assert f'removed 2 temporary folders of an interrupted build: {", ".join(sorted(left))}' in err, err
  assert sorted(os.listdir(os.path.dirname(version))) == ['1.0.0']   # no incomplete.*, no lock file


def _locked_test_config(data_dir):
  from configs import test as test_config
  config = test_config.get_config()
  config.data_dir = str(data_dir)
  config.lock()
  return config


def test_train_is_refused_in_process_while_another_run_holds_the_workdir(tmp_path, holder):
  from depthnet_jax.train import trainer as train_lib
  workdir = tmp_path / 'run'
  process = holder(workdir, beside=True)
  before = disk.snapshot(tmp_path)
  with pytest.raises(folder_lock.HeldError) as refused:
    train_lib.train_and_evaluate(_locked_test_config(tmp_path / 'data'), str(workdir))
  assert str(refused.value).startswith(f'--workdir {workdir}: another command (pid {process.pid}, ')
  assert disk.snapshot(tmp_path) == before


def test_two_process_train_py_is_refused_in_both_processes(tmp_path, holder):
  """A refused process 0 tells its peer, which stops with it instead of waiting for a process 0 that left."""
  workdir = tmp_path / 'run'
  process = holder(workdir, beside=True)
  before = disk.snapshot(tmp_path)
  port = network.free_port()
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu', XLA_FLAGS=TEST_XLA_FLAGS)
  runs = [subprocess.Popen(
      [sys.executable, os.path.join(REPO, 'train.py'), '--config', os.path.join(REPO, 'configs', 'test.py'),
       '--workdir', str(workdir), f'--config.data_dir={tmp_path / "data"}', '--config.distributed=True',
       f'--config.coordinator_address=127.0.0.1:{port}', '--config.num_processes=2', f'--config.process_id={i}'],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO) for i in range(2)]
  outputs = [run.communicate(timeout=120) for run in runs]
  for i, (run, (_, err)) in enumerate(zip(runs, outputs)):
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert run.returncode == 1 and len(lines) == 1 and 'Traceback' not in err, err[-3000:]
    assert lines[0].startswith(f'error: --workdir {workdir}: another command (pid {process.pid}'), lines[0]
    assert ('(found by process 0 of this run)' in lines[0]) == (i == 1), lines[0]
  assert disk.snapshot(tmp_path) == before
  assert cli.pid_alive(process.pid)   # the holder, untouched
