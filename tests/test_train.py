"""Training on `configs/test.py`: checkpoints, eval, exact resume after SIGKILL, 1 device vs 2 processes of 2
devices (and vs 4 devices of one process, in `make test-slow`), NaN stop, warm start, config errors (damaged
checkpoints on resume: tests/test_checkpoint_faults.py).

Most runs are in-process (`train_lib.train_and_evaluate`, what train.py runs; the reference run is conftest's
`tiny_run`). `train.py` runs as a user runs it where a process is the point: the run killed by SIGKILL, several
devices (JAX's device count is fixed when its backend starts, once per process), 2 processes, and the exit code and
stderr of a failed run (NaN stop, an unknown config field).

The many user errors of train.py are in test_train_faults.py; the ones here need a trained run or the dataset."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import TEST_XLA_FLAGS

from configs import test as test_config
from depthnet_jax.checkpoints import checkpointing
from depthnet_jax.checkpoints.train_state import TrainState
from depthnet_jax.common import cli
from depthnet_jax.data import input_pipeline
from depthnet_jax.model import models
from depthnet_jax.testing import network
from depthnet_jax.train import trainer as train_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_CONFIG = os.path.join(REPO, 'configs', 'test.py')
STEPS = 6


def _command(workdir, data_dir, *overrides):
  return [sys.executable, os.path.join(REPO, 'train.py'), '--config', TEST_CONFIG,
          '--workdir', str(workdir), f'--config.data_dir={data_dir}', *overrides]


def _env(devices=1):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = TEST_XLA_FLAGS + (f' --xla_force_host_platform_device_count={devices}' if devices > 1 else '')
  return env


def _train(workdir, data_dir, *overrides, devices=1, ok=True):
  result = subprocess.run(_command(workdir, data_dir, *overrides), env=_env(devices), capture_output=True,
                          text=True, timeout=600, cwd=REPO)
  if ok:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
  return result


def _run(workdir, data_dir, **overrides) -> dict[str, float]:
  """In-process what `train.py --config configs/test.py --workdir ... --config.<field>=<value>` runs; a nested field
  as `model__batch_norm=False`. Returns the last eval metrics; what it prints is the test's (capsys)."""
  config = test_config.get_config()
  config.update_from_flattened_dict({'data_dir': str(data_dir),
                                     **{k.replace('__', '.'): v for k, v in overrides.items()}})
  config.lock()   # as train.py's --config gives it
  return train_lib.train_and_evaluate(config, str(workdir), config_source=TEST_CONFIG)


def _params(checkpoint_dir):
  model = checkpointing.load_model(checkpoint_dir)
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in
          jax.tree_util.tree_leaves_with_path(model_state(model))}


def model_state(model):
  from flax import nnx
  return nnx.state(model).to_pure_dict()


def _final(workdir):
  return _params(os.path.join(workdir, 'checkpoints', str(STEPS)))


def _assert_same_evaluation(workdir, reference):
  """Training's last evaluation (full precision, as the best checkpoint records it) agrees with the reference
  run's: the pairs each process read were the right ones. The continuous metrics only: with parameters 1e-5 apart
  a pixel may cross a delta threshold."""
  def metrics(w):
    return checkpointing.read_model_config(os.path.join(w, 'best', str(STEPS)))['eval_metrics']
  ours, theirs = metrics(workdir), metrics(reference)
  assert set(ours) == set(train_lib.EVAL_METRICS)
  for k in ('depth_error', 'normalized_error', 'abs_rel', 'sq_rel', 'rmse', 'rmse_log'):
    assert ours[k] == pytest.approx(theirs[k], rel=1e-4), k


def _assert_close(a, b, atol):
  assert a.keys() == b.keys()
  worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
  assert worst <= atol, worst


@pytest.fixture(scope='module')
def straight(tiny_run):
  return tiny_run


def test_run_writes_checkpoints_events_and_progress(straight):
  workdir, out = straight
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3', '6']   # every 3 steps, latest 3 kept
  assert os.listdir(os.path.join(workdir, 'best')) == ['6']
  assert os.path.exists(os.path.join(workdir, 'config.json'))
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(workdir))
  assert f'step {STEPS}/{STEPS}' in out and 'steps/s' in out and 'ETA' in out
  assert 'eval at step 6: depth_error' in out
  # a training checkpoint is a model checkpoint too
  model = checkpointing.load_model(os.path.join(workdir, 'best', '6'))
  assert isinstance(model, models.DepthNet) and model.deterministic


def test_tensorboard_events_hold_scalars_and_images(straight):
  from tensorboard.backend.event_processing import event_accumulator
  workdir, _ = straight
  events = event_accumulator.EventAccumulator(workdir, size_guidance={'images': 0, 'tensors': 0})
  events.Reload()
  tags = set(events.Tags()['tensors']) | set(events.Tags()['scalars'])
  for tag in ('train_loss', 'train_depth_error', 'train_learning_rate', 'train_steps_per_sec', 'eval_depth_error',
              'eval_abs_rel', 'eval_rmse', 'eval_delta1'):
    assert tag in tags, tags
  assert any('eval_examples' in t for t in set(events.Tags()['images']) | tags)


def test_eval_only_prints_the_metrics_of_the_best_checkpoint(straight, synth_tiny_dir, capsys):
  workdir, trained = straight
  _run(workdir, synth_tiny_dir, eval_only=True)
  out = capsys.readouterr().out
  lines = dict(line.split() for line in out.splitlines() if line.startswith('eval_'))
  assert set(lines) == {f'eval_{k}' for k in train_lib.EVAL_METRICS}
  logged = trained.split('eval at step 6: ')[1].splitlines()[0]
  assert f'depth_error {float(lines["eval_depth_error"]):.4g}' in logged
  assert len(lines['eval_depth_error']) > 8   # full precision


@pytest.mark.slow   # make test's budget (docs/testing.md)
def test_sigkill_and_resume_ends_with_the_same_parameters(straight, synth_tiny_dir, tmp_path, capsys):
  """train.py killed mid-run, then resumed (in-process: what a second `train.py` runs)."""
  workdir = tmp_path / 'killed'
  process = subprocess.Popen(_command(workdir, synth_tiny_dir, '--config.checkpoint_every_steps=1'), env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
  deadline = time.time() + 300
  while not os.path.isdir(workdir / 'checkpoints' / '2') and time.time() < deadline:
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  done = sorted(int(s) for s in os.listdir(workdir / 'checkpoints') if s.isdigit())
  assert done and max(done) < STEPS, done   # killed mid-run
  _run(workdir, synth_tiny_dir, checkpoint_every_steps=1)
  assert f'resuming from step {max(done)}' in capsys.readouterr().out
  _assert_close(_final(workdir), _final(straight[0]), atol=0)


# 4 devices in one process, and 2 processes of 2 devices below (a mesh of 4, each process's devices fed its rows):
# both in `make test-slow` (the 2 processes add 30 s to `make test`'s 5.3 minutes on an idle 2-core machine, too
# close to its 6). In `make test`, their parts are tested in one process: each process's rows of every batch
# (test_input_pipeline), the batch sizes a mesh takes (test_train_faults), the evaluation on a mesh
# (test_evaluate); and 2 processes of jax.distributed start together and both refuse a held workdir
# (test_faults_locks).
@pytest.mark.slow
def test_four_devices_give_the_parameters_of_one(straight, synth_tiny_dir, tmp_path):
  # train.py as a user runs it: the device count is set before JAX starts, for this process only.
  result = _train(tmp_path, synth_tiny_dir, devices=4)
  assert 'on 4 devices' in result.stdout
  _assert_close(_final(tmp_path), _final(straight[0]), atol=1e-5)
  _assert_same_evaluation(tmp_path, straight[0])


@pytest.mark.slow
def test_two_processes_of_two_devices_give_the_parameters_of_one(straight, synth_tiny_dir, tmp_path):
  """2 processes (jax.distributed on 127.0.0.1) of 2 devices each: a mesh of 4 devices across processes, each
  process reading its rows of every batch and feeding them to its own devices."""
  port = network.free_port()
  processes = [subprocess.Popen(
      _command(tmp_path, synth_tiny_dir, '--config.distributed=True', f'--config.coordinator_address=127.0.0.1:{port}',
               '--config.num_processes=2', f'--config.process_id={i}'),
      env=_env(devices=2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO) for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in processes]
  for p, (out, err) in zip(processes, outputs):
    assert p.returncode == 0, out[-2000:] + err[-5000:]
  assert 'on 4 devices (2 processes)' in outputs[0][0], outputs[0][0][-2000:]
  _assert_close(_final(tmp_path), _final(straight[0]), atol=1e-5)
  _assert_same_evaluation(tmp_path, straight[0])


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(synth_tiny_dir, tmp_path, capsys):
  # In-process through cli.run, as train.py's main runs the training (its `work` turns the error into a user
  # error): the exit code and the printed error line (that Orbax's threads are quiet when the interpreter exits
  # after an error: test_checkpoint_faults).
  def work():
    try:
      _run(tmp_path, synth_tiny_dir, learning_rate=1e30, checkpoint_every_steps=1)
    except train_lib.NonFiniteLossError as e:
      raise cli.UserError(cli.one_line(e)) from e
  code = cli.run(work)
  result = _Result(code, capsys.readouterr())
  assert result.returncode == 1
  assert 'not finite after step' in result.stderr or 'training loss is' in result.stderr, result.stderr[-3000:]
  assert 'step' in result.stderr and 'last good checkpoint is kept' in result.stderr
  _assert_one_error_line(result)   # and no Orbax thread noise: the pending save was finished, the managers closed
  kept = sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints') if s.isdigit())
  for step in kept:
    assert all(np.all(np.isfinite(v)) for v in _params(tmp_path / 'checkpoints' / str(step)).values())


def test_init_from_an_imported_pytorch_checkpoint(synth_tiny_dir, tmp_path, capsys):
  import torch

  from depthnet_jax.checkpoints import torch_import
  from depthnet_jax.testing import torch_reference
  torch.manual_seed(0)
  reference = torch_reference.randomize(torch_reference.TorchDepthNet(batch_norm=True, depth_activation='elu'), 3)
  path = tmp_path / 'DepthNet_elu_bn_64.pth.tar'
  torch_reference.save(torch_reference.checkpoint_dict(reference), path,
                       legacy=True)
  _run(tmp_path / 'run', synth_tiny_dir, init_from=str(path), num_train_steps=1, learning_rate=0.0)
  assert f'initialised parameters and batch statistics from {path}' in capsys.readouterr().out
  # lr 0 and SGD: the parameters after one step are the imported ones (BatchNorm statistics move on)
  trained = checkpointing.load_model(tmp_path / 'run' / 'checkpoints' / '1')
  imported = torch_import.load(str(path))
  from flax import nnx
  mine = nnx.state(trained, nnx.Param).to_pure_dict()
  theirs = nnx.state(imported, nnx.Param).to_pure_dict()
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), mine, theirs)


def test_init_from_with_other_model_options_is_refused(straight, synth_tiny_dir, tmp_path, capsys):
  # In-process through cli.run, as train.py's main runs the training: the exit code and the printed error line.
  code = cli.run(lambda: _run(tmp_path / 'run', synth_tiny_dir, init_from=straight[0], model__batch_norm=False))
  line = _assert_one_error_line(_Result(code, capsys.readouterr()))
  assert line.startswith(f"error: --config.init_from='{straight[0]}': ") and 'other model options' in line, line
  assert not os.path.exists(tmp_path / 'run')   # refused before the workdir is created


def test_best_checkpoint_is_the_lowest_eval_error(tmp_path):
  from flax import nnx
  model = models.DepthNet(rngs=nnx.Rngs(0))
  _, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  state = TrainState(params, stats, None, None)
  ckpts = checkpointing.TrainCheckpoints(tmp_path, async_save=False)
  for step, error in ((1, 5.0), (2, 3.0), (3, 4.0)):
    ckpts.save_best(step, state, model.options(), {'depth_error': error})
  assert ckpts.path_of('best').endswith(os.sep + '2')
  assert checkpointing.read_model_config(ckpts.path_of('best'))['eval_metrics'] == {'depth_error': 3.0}
  ckpts.close()


def test_unknown_config_field_and_missing_dataset_say_what_to_do(tmp_path, capsys):
  result = _train(tmp_path, tmp_path, '--config.no_such_field=1', ok=False)   # train.py's flag parsing
  assert _assert_one_error_line(result).startswith('error: --config.no_such_field: no such config field in ')
  # In-process through cli.run, with the error train.py's main reports for a dataset that is not built.
  code = cli.run(lambda: _run(tmp_path, tmp_path / 'empty'), user_errors=(input_pipeline.DatasetNotBuiltError,))
  line = _assert_one_error_line(_Result(code, capsys.readouterr()))
  assert line.startswith("error: --config.dataset: dataset 'tfds_stillbox/synth_tiny' is not built"), line
  assert 'tfds build tfds_stillbox --config synth_tiny' in line
  assert os.listdir(tmp_path) == []   # neither the workdir's files nor the data_dir were created


class _Result:
  """The exit code and captured output of an in-process `cli.run`, shaped as a CompletedProcess."""

  def __init__(self, returncode, captured):
    self.returncode, self.stdout, self.stderr = returncode, captured.out, captured.err


def _assert_one_error_line(result) -> str:
  """A user error: exit 1, one `error:` line, no traceback, no Orbax background-thread noise."""
  assert result.returncode == 1, result.stderr[-3000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert len(lines) == 1, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr and 'cannot schedule new futures' not in result.stderr, result.stderr
  return lines[0]
