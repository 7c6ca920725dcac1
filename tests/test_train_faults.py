"""train.py's user errors: every config field's range, the workdir and checkpoint paths, and the command line.

Each bad input is one `error:` line naming the flag or field, its value and what was expected, exit code 1, no
traceback, found before anything is written: the disk is as it was. Most cases run in-process
(`train_checks.validate_config`, `train_checks.check_paths`); a few run train.py as a user does.
"""

import os
import subprocess
import sys
import types

import pytest

from configs import default
from depthnet_jax.common import cli
from depthnet_jax.data import sharding
from depthnet_jax.model import conv
from depthnet_jax.train import checks as train_checks
from depthnet_jax.train import config_args, optim

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_CONFIG = os.path.join(REPO, 'configs', 'test.py')


def _config(**changes) -> dict:
  """configs/default.py as a dict with `changes`; a key 'model.x' changes the model section's option x."""
  config = default.get_config().to_dict()
  for key, value in changes.items():
    section, _, option = key.rpartition('.')
    (config[section] if section else config)[option] = value
  return config


def _snapshot(root) -> dict:
  """Every path under root with its size and contents' mtime: what a failed run must leave as it was."""
  found = {}
  for folder, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(folder, name)
      stat = os.stat(path)
      found[os.path.relpath(path, root)] = (stat.st_size if name in files else None, stat.st_mtime_ns)
  return found


# --- Config ranges, in-process ------------------------------------------------------------------------------

BAD_VALUES = [
    ('learning_rate', -1.0, 'a number >= 0'),
    ('learning_rate', float('nan'), 'a number >= 0'),
    ('batch_size', 0, 'an integer >= 1'),
    ('batch_size', 2.5, 'an integer >= 1'),
    ('eval_batch_size', 0, 'an integer >= 1'),
    ('num_epochs', 0, 'an integer >= 1'),
    ('num_train_steps', 0, '-1 (train num_epochs epochs) or an integer >= 1'),
    ('num_train_steps', -2, '-1 (train num_epochs epochs) or an integer >= 1'),
    ('shift', 0, 'an integer >= 1'),
    ('seed', -1, 'an integer from 0 to 4294967295'),
    ('seed', 2**32, 'an integer from 0 to 4294967295'),
    ('worker_count', -1, 'an integer >= 0'),
    ('loss', 'l1', "one of 'L1', 'SmoothL1', 'MSE'"),
    ('solver', 'SGD', "one of 'sgd', 'adam'"),
    ('lr_schedule', 'cosine', "one of 'torch', '2017', 'constant'"),
    ('eval_checkpoint', 'last', "one of 'best', 'latest'"),
    ('model.depth_activation', 'relu', "'elu' or 'none'"),
    ('multiscale_weights', (0.32, 0.08, 0.02, 0.01), '5 numbers >= 0'),
    ('multiscale_weights', (0.32, 0.08, 0.02, 0.01, -1.0), '5 numbers >= 0'),
    ('milestones', (5, 3), 'increasing integers >= 0'),
    ('milestones', (3, 3), 'increasing integers >= 0'),
    ('milestones', (-1, 2), 'increasing integers >= 0'),
    ('milestones', (1.5,), 'increasing integers >= 0'),
    ('gamma', 0.0, 'a number in (0, 1]'),
    ('gamma', 1.5, 'a number in (0, 1]'),
    ('momentum', -0.1, 'a number in [0, 1]'),
    ('dampening', 1.1, 'a number in [0, 1]'),
    ('beta1', 1.0, 'a number in [0, 1)'),
    ('beta2', -0.5, 'a number in [0, 1)'),
    ('weight_decay', -1e-4, 'a number >= 0'),
    ('log_every_steps', 0, 'an integer >= 1'),
    ('checkpoint_every_steps', 0, 'an integer >= 1'),
    ('keep_checkpoints', 0, 'an integer >= 1'),
    ('eval_every_epochs', 0.0, 'a number > 0'),
    ('num_eval_images', -1, 'an integer >= 0'),
    ('model.batch_norm', 1, 'True or False'),
    ('async_checkpointing', 'yes', 'True or False'),
    ('dataset', 'stillbox/synth64', "'tfds_stillbox/<config>' (built-in configs: 64, 128"),
    ('dataset', 'tfds_stillbox/', "'tfds_stillbox/<config>'"),
    ('train_split', '', 'a non-empty string'),
    ('num_processes', 0, 'an integer >= 1'),
    ('process_id', -1, 'an integer >= 0'),
    ('coordinator_address', 'localhost', "'host:port'"),
    ('coordinator_address', 'localhost:99999', 'a port from 1 to 65535'),
]


@pytest.mark.parametrize('field,value,expected', BAD_VALUES, ids=[f'{f}={v!r}' for f, v, _ in BAD_VALUES])
def test_a_value_out_of_range_names_the_field_the_value_and_the_range(field, value, expected):
  with pytest.raises(cli.UserError) as raised:
    train_checks.validate_config(_config(**{field: value}), 'configs/x.py')
  message = str(raised.value)
  shown = repr(tuple(value)) if isinstance(value, tuple) else repr(value)
  assert message.startswith(f'--config.{field}={shown}: expected '), message
  assert expected in message and '\n' not in message


def test_a_config_of_the_layout_before_the_model_section_still_loads():
  """Configs written before `config.model` held the options at the top level: they are moved, not refused."""
  import ml_collections
  old = _config()
  del old['model']
  old.update(batch_norm=False, depth_activation='none', clamp=True, with_confidence=False)
  config = ml_collections.ConfigDict(old)
  config.lock()
  assert train_checks.upgrade_config(config) == ['batch_norm', 'depth_activation', 'clamp', 'with_confidence']
  train_checks.validate_config(config, 'configs/old.py')
  assert config.model.to_dict() == dict(batch_norm=False, depth_activation='none', clamp=True, with_confidence=False)
  assert 'batch_norm' not in config and train_checks.upgrade_config(config) == []
  with pytest.raises(cli.UserError, match=r"--config.model.batch_nrm: not a model option \(did you mean batch_norm"):
    train_checks.validate_config(_config(**{'model.batch_nrm': True}), 'configs/x.py')


def test_zero_and_empty_are_values_like_any_other():
  # No truthiness: each of these is in its range and accepted as given.
  train_checks.validate_config(_config(learning_rate=0.0, num_eval_images=0, worker_count=0, seed=0, milestones=(),
                                       weight_decay=0.0, momentum=0.0, dampening=0.0, beta1=0.0, beta2=0.0,
                                       multiscale_weights=(0, 0, 0, 0, 0), init_from='',
                                       **{'model.depth_activation': 'none'}))
  train_checks.validate_config(_config(milestones=(0, 1), gamma=1.0, num_train_steps=1, shift=1))


def test_every_config_validates():
  for name in ('default', 'test', 'synth64', 'stillbox64', 'stillbox128', 'stillbox256', 'stillbox512'):
    module = __import__(f'configs.{name}', fromlist=['get_config'])
    train_checks.validate_config(module.get_config(), f'configs/{name}.py')
  assert sorted(train_checks.FIELDS) == sorted(default.get_config().keys())
  assert tuple(default.get_config().model.keys()) == tuple(sorted(train_checks.MODEL_FIELDS))
  from tfds_stillbox import tfds_stillbox_dataset_builder as builder
  assert train_checks.known_dataset_configs() == ', '.join(builder.Builder.builder_configs)


def test_every_choice_the_checks_accept_is_one_the_modules_build():
  """The choices are defined once (model/spec.py, train/checks.py; the modules import them): each one works."""
  config = default.get_config()
  for solver in train_checks.SOLVERS:
    optim.create_optimizer(solver, 0.1)
  for schedule in train_checks.SCHEDULES:
    config.lr_schedule = schedule
    assert callable(optim.make_schedule(config, steps_per_epoch=10))
  for impl in train_checks.CONV_IMPLS:
    assert conv.resolve_impl(impl) in ('xla', 'patches')


def test_fields_that_only_mean_something_together():
  cases = [
      (dict(coordinator_address='h:1234'), "--config.coordinator_address='h:1234' is set but "
                                           '--config.distributed=False'),
      (dict(num_processes=2), '--config.num_processes=2: expected 1 unless --config.coordinator_address is set'),
      (dict(distributed=True, coordinator_address='h:1234', num_processes=2, process_id=2),
       '--config.process_id=2: expected an integer from 0 to 1 (--config.num_processes is 2)'),
  ]
  for changes, expected in cases:
    with pytest.raises(cli.UserError, match=expected.replace('(', r'\(').replace(')', r'\)')):
      train_checks.validate_config(_config(**changes))
  train_checks.validate_config(_config(distributed=True, coordinator_address='127.0.0.1:1234', num_processes=2,
                                       process_id=1))


def test_a_config_file_with_a_field_too_many_or_too_few():
  config = _config(learning_rat=0.1)
  with pytest.raises(cli.UserError, match=r"configs/mine.py sets 'learning_rat', which is not a config field "
                                          r'\(did you mean learning_rate\?\)'):
    train_checks.validate_config(config, 'configs/mine.py')
  config = _config()
  del config['seed']
  with pytest.raises(cli.UserError, match="configs/mine.py has no field 'seed'"):
    train_checks.validate_config(config, 'configs/mine.py')


def test_a_batch_that_does_not_split_over_the_devices():
  four = types.SimpleNamespace(size=4)   # check_batch_size reads only the mesh's size
  with pytest.raises(cli.UserError) as raised:
    sharding.check_batch_size(6, four, '--config.batch_size')
  assert str(raised.value).startswith('--config.batch_size=6: expected a multiple of the number of devices, 4 '
                                      '(4 devices in 1 process; e.g. 4)'), raised.value
  with pytest.raises(cli.UserError, match=r'--config.eval_batch_size=3: expected a multiple of the number of '):
    sharding.check_batch_size(3, four, '--config.eval_batch_size')
  sharding.check_batch_size(8, four)


# --- Paths, in-process: nothing is created ------------------------------------------------------------------

def test_workdir_that_is_a_file_or_under_a_file(tmp_path):
  (tmp_path / 'file').write_text('mine')
  before = _snapshot(tmp_path)
  with pytest.raises(cli.UserError, match='--workdir .*/file: is a file, expected a directory'):
    train_checks.check_paths(_config(), str(tmp_path / 'file'))
  with pytest.raises(cli.UserError, match='/file is a file, so the directory cannot be created there'):
    train_checks.check_paths(_config(), str(tmp_path / 'file' / 'run'))
  assert _snapshot(tmp_path) == before


def test_unwritable_workdir(tmp_path):
  # /proc refuses new files even to root (permission bits say nothing for root)
  with pytest.raises(cli.UserError, match='--workdir /proc/depthnet-run: cannot write in /proc'):
    train_checks.check_paths(_config(), '/proc/depthnet-run')


def test_a_users_non_empty_folder_is_refused_and_our_own_workdir_resumes(tmp_path):
  user = tmp_path / 'user'
  user.mkdir()
  (user / 'notes.txt').write_text('mine')
  (user / 'data').mkdir()
  before = _snapshot(tmp_path)
  with pytest.raises(cli.UserError) as raised:
    train_checks.check_paths(_config(), str(user))
  assert 'holds files that are not a depthnet-jax training run (data, notes.txt)' in str(raised.value)
  assert 'expected a new or empty folder, or the workdir of a previous run' in str(raised.value)
  assert _snapshot(tmp_path) == before
  # a config.json that is not one of ours does not make the folder ours
  (user / 'config.json').write_text('{"name": "my project"}')
  with pytest.raises(cli.UserError, match='not a depthnet-jax training run'):
    train_checks.check_paths(_config(), str(user))
  # empty, new, or a previous run's workdir (its config.json, its checkpoints/): accepted
  (tmp_path / 'empty').mkdir()
  assert not train_checks.check_paths(_config(), str(tmp_path / 'empty')).resuming
  assert train_checks.check_paths(_config(), str(tmp_path / 'new' / 'run')).workdir == str(tmp_path / 'new' / 'run')
  assert not os.path.exists(tmp_path / 'new')
  ours = tmp_path / 'ours'
  ours.mkdir()
  (ours / 'config.json').write_text(default.get_config().to_json())
  (ours / 'events.out.tfevents.1.host').write_bytes(b'')
  assert not train_checks.check_paths(_config(), str(ours)).resuming
  (ours / 'checkpoints' / '3' / 'model_config').mkdir(parents=True)
  assert train_checks.check_paths(_config(), str(ours)).resuming


def test_eval_only_and_init_from_on_a_wrong_path_create_nothing(tmp_path):
  before = _snapshot(tmp_path)
  with pytest.raises(cli.UserError, match=r'--config.eval_only=True: --workdir .*/nothere does not exist; '
                                          r'expected the workdir of a training run \(with best/<step>/\)'):
    train_checks.check_paths(_config(eval_only=True), str(tmp_path / 'nothere'))
  (tmp_path / 'run' / 'best').mkdir(parents=True)
  before = _snapshot(tmp_path)
  with pytest.raises(cli.UserError, match=r'no latest checkpoint in --workdir .*/run \(expected checkpoints/<step>/'):
    train_checks.check_paths(_config(eval_only=True, eval_checkpoint='latest'), str(tmp_path / 'run'))
  with pytest.raises(cli.UserError, match='no best checkpoint in --workdir'):
    train_checks.check_paths(_config(eval_only=True), str(tmp_path / 'run'))
  with pytest.raises(cli.UserError, match=r"--config.init_from='.*/nosuch': .*/nosuch does not exist; expected a "
                                          r'PyTorch .pth.tar, a depthnet-jax checkpoint directory'):
    train_checks.check_paths(_config(init_from=str(tmp_path / 'nosuch')), str(tmp_path / 'new'))
  with pytest.raises(cli.UserError, match=r"--config.init_from='.*/run': .*/run holds no checkpoint"):
    train_checks.check_paths(_config(init_from=str(tmp_path / 'run')), str(tmp_path / 'new'))
  assert _snapshot(tmp_path) == before
  assert not os.path.exists(tmp_path / 'nothere') and not os.path.exists(tmp_path / 'new')


def test_train_and_evaluate_checks_before_anything(tmp_path):
  from depthnet_jax.train import trainer as train_lib
  with pytest.raises(cli.UserError, match=r'--config.learning_rate=-1.0: expected a number >= 0'):
    train_lib.train_and_evaluate(_locked(learning_rate=-1.0), str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def _locked(**changes):
  config = default.get_config()
  config.update(changes)
  config.lock()
  return config


# --- The command line's --config and overrides, in-process (before ml_collections reads them) ------------------

CONFIG_FILES = {'syntax.py': 'def get_config(:\n', 'no_function.py': 'X = 1\n',
                'returns_none.py': 'def get_config():\n  return None\n',
                'raises.py': 'def get_config():\n  raise RuntimeError("no GPU here")\n'}
COMMAND_LINES = [
    (['--config', 'configs/nope.py'], '--config configs/nope.py: no such file; expected a config file such as '
                                      'configs/default.py'),
    (['--config', 'configs'], '--config configs: is a directory; expected a config file such as'),
    (['--config='], "--config='': expected a config file such as configs/default.py"),
    (['--config', '{tmp}/syntax.py'], '--config {tmp}/syntax.py: the config file fails: SyntaxError: invalid syntax'),
    (['--config', '{tmp}/no_function.py'], '--config {tmp}/no_function.py: defines no get_config(); expected a '
                                           'function get_config() that returns a ConfigDict'),
    (['--config', '{tmp}/returns_none.py'], '--config {tmp}/returns_none.py: get_config() returned NoneType, '
                                            'expected a ConfigDict'),
    (['--config', '{tmp}/raises.py'], '--config {tmp}/raises.py: the config file fails: RuntimeError: no GPU here'),
    (['--config', TEST_CONFIG, '--config', TEST_CONFIG], f'--config is given 2 times ({TEST_CONFIG}, {TEST_CONFIG})'),
    (['--config.batch_size=1', '--config', TEST_CONFIG], '--config.batch_size=1: comes before --config'),
    (['--config.batch_size=1'], '--config.batch_size=1: there is no --config to override'),
    (['--config', TEST_CONFIG, '--config.batch_norm=False'], '--config.batch_norm: no such config field in '
                                                             f'{TEST_CONFIG} (the model options are under model: '
                                                             '--config.model.batch_norm)'),
    (['--config', TEST_CONFIG, '--config.model.batch_nrm=1'], '--config.model.batch_nrm: no such config field in '
                                                              f'{TEST_CONFIG} (did you mean batch_norm?)'),
    (['--config', TEST_CONFIG, '--config.batch_size=1.5'], '--config.batch_size=1.5: expected an integer'),
    (['--config', TEST_CONFIG, '--config.batch_size', 'x'], '--config.batch_size=x: expected an integer'),
    (['--config', TEST_CONFIG, '--config.batch_size'], '--config.batch_size: no value; expected '
                                                       '--config.batch_size=<an integer>'),
    (['--config', TEST_CONFIG, '--config.learning_rate=fast'], '--config.learning_rate=fast: expected a number'),
    (['--config', TEST_CONFIG, '--config.model.clamp=maybe'], '--config.model.clamp=maybe: expected True or False'),
    (['--config', TEST_CONFIG, '--noconfig.batch_size'], '--noconfig.batch_size: --no only turns a True/False field '
                                                         'off; expected --config.batch_size=<value>'),
    (['--config', TEST_CONFIG, '--config.milestones=(1, 2'], "--config.milestones=(1, 2: expected a tuple such as "),
    (['--config', TEST_CONFIG, '--config.model=3'], '--config.model=3: expected a dict such as'),
]


@pytest.mark.parametrize('args,expected', COMMAND_LINES, ids=[' '.join(a) for a, _ in COMMAND_LINES])
def test_a_bad_config_file_or_override_names_the_flag_the_value_and_what_was_expected(args, expected, tmp_path):
  for name, text in CONFIG_FILES.items():
    (tmp_path / name).write_text(text)
  with pytest.raises(cli.UserError) as raised:
    config_args.check_command_line(['--workdir', str(tmp_path / 'run')] + [a.format(tmp=tmp_path) for a in args])
  assert str(raised.value).startswith(expected.format(tmp=tmp_path)), raised.value


def test_overrides_in_every_form_absl_reads_pass(tmp_path):
  (tmp_path / 'sized.py').write_text(f'import runpy\ndef get_config(size):\n  c = runpy.run_path({TEST_CONFIG!r})'
                                     "['get_config']()\n  c.batch_size = int(size)\n  return c\n")
  config_args.check_command_line([
      '--config', f'{tmp_path}/sized.py:4', '--workdir', 'x', '--config.batch_size', '2', '-config.seed=0x10',
      '--config.eval_only', '--noconfig.async_checkpointing', '--config.model.depth_activation=none',
      '--config.milestones=(1, 2)', '--config.milestones=3', '--config.multiscale_weights=1,2,3,4,5',
      "--config.model={'batch_norm': True}", '--config.learning_rate=1e-3', '--', '--config.nothing=1'])
  assert config_args.load_config(f'{tmp_path}/sized.py:4').batch_size == 4


# --- train.py as a user runs it -------------------------------------------------------------------------------

def _train_py(*args, cwd=REPO):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  env.pop('DEPTHNET_DEBUG', None)
  return subprocess.run([sys.executable, os.path.join(REPO, 'train.py'), *args], env=env, capture_output=True,
                        text=True, timeout=120, cwd=cwd)


def _one_error_line(result) -> str:
  assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
  lines = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert len(lines) == 1, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr and 'cannot schedule new futures' not in result.stderr, result.stderr
  return lines[0]


@pytest.mark.parametrize('override,expected', [
    ('--config.learning_rate=-1', 'error: --config.learning_rate=-1.0: expected a number >= 0'),
    ('--config.batch_size=0', 'error: --config.batch_size=0: expected an integer >= 1'),
    ('--config.learnin_rate=0.1', f'error: --config.learnin_rate: no such config field in {TEST_CONFIG} '
                                  '(did you mean learning_rate?)'),
    ('--config.batch_size=abc', 'error: --config.batch_size=abc: expected an integer'),
], ids=['negative-lr', 'batch-0', 'typo', 'type'])
def test_a_bad_config_value_is_one_line_and_nothing_is_written(override, expected, tmp_path):
  result = _train_py('--config', TEST_CONFIG, '--workdir', str(tmp_path / 'run'), override)
  assert _one_error_line(result).startswith(expected)
  assert not os.path.exists(tmp_path / 'run')


def test_a_missing_config_file(tmp_path):
  line = _one_error_line(_train_py('--config', 'configs/nope.py', '--workdir', str(tmp_path / 'run')))
  assert line.startswith('error: --config configs/nope.py: no such file; expected a config file such as '
                         'configs/default.py'), line
  assert 'configs/synth64.py' in line and not os.path.exists(tmp_path / 'run')


def test_workdir_that_is_a_file(tmp_path):
  (tmp_path / 'run').write_text('mine')
  line = _one_error_line(_train_py('--config', TEST_CONFIG, '--workdir', str(tmp_path / 'run')))
  assert line == f'error: --workdir {tmp_path / "run"}: is a file, expected a directory (or a path that does not ' \
                 'exist yet)'
  assert (tmp_path / 'run').read_text() == 'mine'


def test_eval_only_on_an_empty_path_creates_nothing(tmp_path):
  line = _one_error_line(_train_py('--config', TEST_CONFIG, '--workdir', str(tmp_path / 'nothere'),
                                   '--config.eval_only=True'))
  assert f'--workdir {tmp_path / "nothere"} does not exist' in line
  assert os.listdir(tmp_path) == []


def test_a_users_folder_is_refused_and_untouched(tmp_path):
  (tmp_path / 'notes.txt').write_text('mine')
  before = _snapshot(tmp_path)
  line = _one_error_line(_train_py('--config', TEST_CONFIG, '--workdir', str(tmp_path)))
  assert f'--workdir {tmp_path}: holds files that are not a depthnet-jax training run (notes.txt)' in line
  assert _snapshot(tmp_path) == before and (tmp_path / 'notes.txt').read_text() == 'mine'


def test_a_mistyped_dataset_names_the_field_and_the_known_configs(tmp_path):
  data_dir = tmp_path / 'data'
  line = _one_error_line(_train_py('--config', TEST_CONFIG, '--workdir', str(tmp_path / 'run'),
                                   '--config.dataset=tfds_stillbox/synth64_smal', f'--config.data_dir={data_dir}'))
  assert line.startswith(f"error: --config.dataset: dataset 'tfds_stillbox/synth64_smal' is not built under "
                         f"data_dir {data_dir}, and 'synth64_smal' is not a built-in config (did you mean "
                         'synth64_small'), line
  assert 'synth_tiny' in line and 'tfds build tfds_stillbox --config <name>' in line
  assert os.listdir(tmp_path) == []


def test_debug_shows_the_traceback_above_the_one_line(tmp_path):
  result = _train_py('--config', TEST_CONFIG, '--workdir', str(tmp_path / 'run'), '--config.batch_size=0', '--debug')
  assert result.returncode == 1 and 'Traceback' in result.stderr
  assert result.stderr.strip().splitlines()[-1] == 'error: --config.batch_size=0: expected an integer >= 1'
