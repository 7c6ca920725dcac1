"""Processes that end from outside: their workers die with them, SIGTERM ends a run as Ctrl-C does, a full disk is
one line (issue 21).

The entry points that start workers run as a user runs them, in a session of their own, and are signalled
mid-render: `python -m tfds_stillbox.render --jobs 2`, and the builder's generation as `tfds build` runs it (a
script file, so that multiprocessing sees a main script as under TFDS's command line, without TensorFlow's 12 s
import); grain's workers (`--config.worker_count` > 0) under a process that iterates the input pipeline and is
killed. Afterwards no process of that session may be left (zombies, which only wait for init to reap them, are
dead): not the workers, not the forkserver, not multiprocessing's resource tracker. train.py is sent SIGTERM after
its first checkpoint, its programs in the session's compilation cache (conftest's `tiny_run` compiled them). The
full disks are made in this process: Orbax's TensorStore writes fail with the error TensorStore 0.1.86 raised on a
full tmpfs (the mount this test cannot make unprivileged), and the renderer's writes go to /dev/full, where the
kernel's own ENOSPC names no file.
"""

import errno
import os
import re
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest
import tensorstore
from flax import nnx

from depthnet_jax.checkpoints import checkpointing
from depthnet_jax.checkpoints.train_state import TrainState
from depthnet_jax.common import processes
from depthnet_jax.testing import disk
from tfds_stillbox.render import cli as render_cli
from tfds_stillbox.render import export

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TERMINATED = f'error: {processes.TERMINATED_MESSAGE}'
# What a full disk under Orbax looked like (TensorStore's status, raised in Orbax's background threads).
TENSORSTORE_FULL = ('RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at local file "{0}/": Failed writing: '
                    '"{0}/d/5f0c": Failed to write 9883648 bytes to file 4: No space left on device '
                    "[os_error_code='28']")
# Orbax's other writes of a failed save fail later in threads nobody awaits (see test_checkpoint_faults.py).
pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')


# --- The process table ------------------------------------------------------------------------------------

def _session(sid: int) -> dict[int, str]:
  """pid -> command line of the live (not zombie) processes of session `sid`."""
  found = {}
  for name in os.listdir('/proc'):
    try:
      with open(f'/proc/{name}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
      with open(f'/proc/{name}/cmdline', 'rb') as f:
        command = f.read().replace(b'\0', b' ').decode(errors='replace')
    except (OSError, ValueError):
      continue
    if name.isdigit() and fields[0] != 'Z' and int(fields[3]) == sid:
      found[int(name)] = command
  return found


def _survivors(sid: int, within: float = 2.0) -> dict[int, str]:
  """The processes of the session still alive `within` seconds from now (none, as soon as they are gone)."""
  deadline = time.monotonic() + within
  while (left := _session(sid)) and time.monotonic() < deadline:
    time.sleep(0.05)
  return left


def _workers_started(process, sid: int, count: int = 2, timeout: float = 60.0) -> None:
  """Waits until `count` workers of the session hold their owner's pidfd (`processes.init_worker` has run)."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    assert process.poll() is None, process.communicate()
    holding = 0
    for pid in set(_session(sid)) - {process.pid}:
      try:
        holding += any(os.readlink(f'/proc/{pid}/fd/{fd}') == 'anon_inode:[pidfd]' for fd in os.listdir(
            f'/proc/{pid}/fd'))
      except OSError:
        pass
    if holding >= count:
      return
    time.sleep(0.05)
  raise AssertionError(f'{count} workers did not start in {timeout} s: {_session(sid)}')


def _start(args, **kwargs) -> subprocess.Popen:
  # A session of its own (the process group too): what it started is found by its session id, even once init
  # has adopted it. No preexec_fn: it would make subprocess fork this process, JAX's threads and all.
  return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True, env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu'),
                          **kwargs)


def _one_error_line(err: str) -> str:
  """The one `error:` line of a stderr (and no traceback); TFDS's progress bars (carriage returns, cursor moves)
  may come before it."""
  lines = [line for line in re.split(r'[\r\n]|\x1b\[A', err) if line.startswith('error:') or 'Traceback' in line]
  assert len(lines) == 1, err[-3000:]
  return lines[0]


def _tree(root) -> list[str]:
  return sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files)


# --- (a) The renderer and the builder, signalled mid-render ----------------------------------------------

def test_renderer_sigterm_stops_its_workers_and_leaves_nothing(tmp_path):
  out = tmp_path / 'out'
  process = _start([sys.executable, '-m', 'tfds_stillbox.render', '--out', str(out), '--resolution', '16',
                    '--frames', '4', '--scenes', '5000', '--jobs', '2'])
  _workers_started(process, process.pid)
  assert len(_session(process.pid)) == 5   # the renderer, the resource tracker, the forkserver, two workers
  process.send_signal(signal.SIGTERM)
  _, err = process.communicate(timeout=60)
  assert process.returncode == 143
  assert _one_error_line(err) == 'error: interrupted (SIGTERM); temporary files were removed, finished outputs kept'
  assert _survivors(process.pid) == {}
  assert disk.snapshot(tmp_path) == {}   # the .partial tree, the lock and the --out folder it had created removed


def test_builder_sigterm_and_sigkill_leave_no_process(tmp_path):
  """The builder's generation started as `tfds build` starts it, from a main script (as TFDS's `tfds` command):
  SIGTERM -> 143 after TFDS removed its temporary folder; SIGKILL -> its workers end with it all the same."""
  script = tmp_path / 'build.py'
  script.write_text(
      'import sys\n'
      'from tfds_stillbox import tfds_stillbox_dataset_builder as stillbox\n'
      "config = stillbox.StillBoxConfig(name='synth16_faults', source='synth', resolution=16, num_scenes=5000,\n"
      '                                 num_frames=4, jobs=2)\n'
      'stillbox.Builder(config=config, data_dir=sys.argv[1]).download_and_prepare()\n')
  runs = {sig: _start([sys.executable, str(script), str(tmp_path / sig.name)]) for sig in (signal.SIGTERM,
                                                                                            signal.SIGKILL)}
  for sig, process in runs.items():
    _workers_started(process, process.pid)
    process.send_signal(sig)
  errors = {}
  for sig, process in runs.items():
    _, errors[sig] = process.communicate(timeout=60)
    assert _survivors(process.pid) == {}, sig
  assert runs[signal.SIGTERM].returncode == 143, errors[signal.SIGTERM][-3000:]
  assert _one_error_line(errors[signal.SIGTERM]) == TERMINATED
  assert runs[signal.SIGKILL].returncode == -signal.SIGKILL
  # Nothing of the build (no version folder, `incomplete.*` folder, shard or lock): TFDS's own folders only.
  left = _tree(tmp_path / 'SIGTERM')
  assert [p for p in left if not p.startswith(('downloads', os.path.join('tfds_stillbox', '.config')))] == [
      'tfds_stillbox'], left


def test_grain_workers_die_with_a_killed_iterator(tmp_path):
  """The input pipeline with worker_count > 0 (training's and evaluation's `--config.worker_count`): SIGKILL of
  the process iterating it leaves none of grain's workers, nor the resource tracker (before: both lived on)."""
  script = tmp_path / 'iterate.py'
  script.write_text(
      'import grain\n'
      'from depthnet_jax.data import input_pipeline\n'
      "if __name__ == '__main__':   # grain spawns its workers: they import this file\n"
      '  for batch in input_pipeline.make_iterator(grain.MapDataset.range(10 ** 9).batch(2), worker_count=1):\n'
      '    pass\n')
  process = _start([sys.executable, str(script)])
  _workers_started(process, process.pid, count=1)
  process.kill()
  process.communicate(timeout=60)
  assert process.returncode == -signal.SIGKILL
  assert _survivors(process.pid) == {}


def test_sigterm_in_the_consumer_of_a_pool_still_ends_with_one_line():
  """Under `tfds build` the renderer's pool is a generator: SIGTERM may land in its consumer (TFDS's writer), where
  no `except` of the generator sees it. The line is printed at exit all the same, after the clean-ups, and 143."""
  code = ('import os, signal, sys\n'
          'from depthnet_jax.common import processes\n'
          'def scenes():\n'
          '  with processes.sigterm_as_interrupt(say_at_exit=True):\n'
          '    try:\n'
          '      yield from range(10)\n'
          '    finally:\n'
          "      print('pool shut down', file=sys.stderr, flush=True)\n"
          'for scene in scenes():\n'
          '  if scene == 2:\n'
          '    os.kill(os.getpid(), signal.SIGTERM)   # handled here, in the consumer\n'
          "print('not reached', flush=True)\n")
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=REPO))
  assert result.returncode == 143, result.stderr
  assert result.stdout == ''
  assert result.stderr == f'pool shut down\n\n{TERMINATED}\n'


# --- (b) train.py, SIGTERM after its first checkpoint ---------------------------------------------------

@pytest.mark.slow   # make test's budget (docs/testing.md)
def test_train_sigterm_ends_like_ctrl_c_with_143(synth_tiny_dir, tiny_run, tmp_path):
  """Sent as the first checkpoint is being written: that save finished, one line, 143; the latest checkpoint loads,
  and nothing but the run's own files is left (no lock, no temporary). `tiny_run`: the programs compiled."""
  workdir = tmp_path / 'run'
  process = _start([sys.executable, os.path.join(REPO, 'train.py'), '--config', os.path.join(REPO, 'configs',
                    'test.py'), '--workdir', str(workdir), f'--config.data_dir={synth_tiny_dir}',
                    '--config.checkpoint_every_steps=1'])
  deadline = time.monotonic() + 300
  while not (workdir / 'checkpoints').is_dir() or not os.listdir(workdir / 'checkpoints'):
    assert process.poll() is None and time.monotonic() < deadline, process.communicate()
    time.sleep(0.02)
  process.send_signal(signal.SIGTERM)   # the first save in flight: `1.orbax-checkpoint-tmp` (or, just, `1`)
  out, err = process.communicate(timeout=120)
  assert process.returncode == 143, err[-3000:]
  assert _one_error_line(err) == TERMINATED
  assert _survivors(process.pid) == {}
  steps = sorted(int(n) for n in os.listdir(workdir / 'checkpoints') if n.isdigit())
  assert steps and steps[0] == 1 and max(steps) < 6, out   # the save in flight finished; stopped mid-run
  assert os.listdir(tmp_path) == ['run']
  left = {p for p in _tree(workdir) if not p.startswith(os.path.join('checkpoints', ''))}
  assert {p for p in left if not p.startswith('events.out.tfevents.')} == {'checkpoints', 'config.json'}, left
  assert set(os.listdir(workdir / 'checkpoints')) == {str(s) for s in steps}   # no orbax-checkpoint-tmp
  checkpointing.load_model(workdir / 'checkpoints' / str(max(steps)))   # whole: checksums and finite values


# --- (c) Full disks ---------------------------------------------------------------------------------------

def _tiny_state(step: int) -> TrainState:
  params = nnx.State({'w': nnx.Param(np.arange(6, dtype=np.float32) * step)})
  stats = nnx.State({'mean': nnx.BatchStat(np.ones(2, np.float32))})
  return TrainState(params, stats, {'momentum': np.zeros(6, np.float32)}, jnp.asarray(step, jnp.int32))


@pytest.mark.parametrize('async_save', [False, True])
def test_a_full_disk_in_a_checkpoint_save_is_one_line_and_keeps_the_earlier_ones(tmp_path, monkeypatch, capfd,
                                                                                  async_save):
  workdir = tmp_path / 'run'
  ckpts = checkpointing.TrainCheckpoints(workdir, async_save=async_save)
  ckpts.save(1, _tiny_state(1), {'source': 'test'}, {'next_step': 1})
  ckpts.latest.wait_until_finished()
  before = disk.snapshot(workdir)
  size = processes.format_bytes(processes.folder_size(workdir / 'checkpoints' / '1'))
  real_open = tensorstore.open

  def full_disk(*args, **kwargs):   # every array write of the next saves: TensorStore's error on a full disk
    if not kwargs.get('create'):
      return real_open(*args, **kwargs)

    async def fail():
      raise ValueError(TENSORSTORE_FULL.format(workdir / 'checkpoints' / '2.orbax-checkpoint-tmp' / 'model'))
    return fail()

  monkeypatch.setattr(tensorstore, 'open', full_disk)
  with pytest.raises(checkpointing.CheckpointError) as raised:
    with ckpts:   # asynchronous: the failure surfaces at the next save or at close
      for step in (2, 3):
        ckpts.save(step, _tiny_state(step), {'source': 'test'}, {'next_step': step})
  message = str(raised.value)
  assert re.fullmatch(
      rf'saving a checkpoint in {re.escape(str(workdir))} failed: the disk is full \(\d+(\.\d)? (bytes|[KMGT]iB) '
      rf'free on its file system; a checkpoint takes {re.escape(size)}\); the unfinished checkpoint was removed '
      'and the earlier ones kept: free some space, then run again to resume', message), message
  assert processes.disk_full(raised.value.__cause__)
  assert disk.snapshot(workdir) == before   # checkpoint 1 byte for byte; no step 2 or 3, no temporary
  err = capfd.readouterr().err
  assert 'Traceback' not in err and 'No space left' not in err, err[-3000:]


def test_the_first_save_of_one_manager_spares_the_others_save_in_flight(tmp_path):
  """Each manager's first save removes the temporaries a killed run left in its own folder only: the best
  checkpoint's save, asynchronous, was still writing `best/1.orbax-checkpoint-tmp` when the latest's first save
  began (a run evaluating and checkpointing at step 1 failed with Orbax's FileNotFoundError)."""
  workdir = tmp_path / 'run'
  with checkpointing.TrainCheckpoints(workdir, async_save=True) as ckpts:
    ckpts.save_best(1, _tiny_state(1), {'source': 'test'}, {'depth_error': 1.0})
    ckpts.save(1, _tiny_state(1), {'source': 'test'}, {'next_step': 1})
  assert os.listdir(workdir / 'best') == ['1'] and os.listdir(workdir / 'checkpoints') == ['1']


def test_a_full_disk_while_rendering_names_the_file_and_leaves_nothing(tmp_path, monkeypatch, capsys):
  if not os.path.exists('/dev/full'):
    pytest.skip('no /dev/full here')
  real_save = np.save

  def save(path, array, **kwargs):   # the second scene's depth goes to a full disk: the kernel's ENOSPC
    if os.path.basename(path) == 'D_0001_00.npy':
      with open('/dev/full', 'wb') as f:
        real_save(f, array, **kwargs)
    real_save(path, array, **kwargs)

  monkeypatch.setattr(export.np, 'save', save)
  user = tmp_path / 'user'
  user.mkdir()
  (user / 'notes.txt').write_text('mine')
  before = disk.snapshot(user)
  code = render_cli.main(['--out', str(user / 'out'), '--resolution', '16', '--frames', '2', '--scenes', '2'])
  _, err = capsys.readouterr()
  assert code == 1
  line = _one_error_line(err)
  match = re.fullmatch(r"error: \[Errno 28\] No space left on device \(\d+(\.\d)? (bytes|[KMGT]iB) free on its "
                       r"file system\): '(.+)'", line)
  assert match, line
  path = match.group(3)
  assert path.startswith(str(user / 'out' / '.16.partial-')) and path.endswith(os.path.join('0', 'D_0001_00.npy'))
  assert disk.snapshot(user) == before   # no tree, no temporary, not the --out folder it had created


def test_what_counts_as_a_full_disk():
  assert processes.disk_full(OSError(errno.ENOSPC, 'No space left on device'))
  assert processes.disk_full(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), 'f'))
  assert processes.disk_full(ValueError(TENSORSTORE_FULL.format('/x')))
  try:
    try:
      raise OSError(errno.ENOSPC, 'No space left on device')
    except OSError as e:
      raise RuntimeError('saving failed') from e
  except RuntimeError as wrapped:
    assert processes.disk_full(wrapped)
  assert not processes.disk_full(OSError(errno.EACCES, 'Permission denied'))
  assert not processes.disk_full(ValueError("NOT_FOUND: Error reading local file [os_error_code='2']"))
