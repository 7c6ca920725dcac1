"""What `train.py` checks before any work starts: every config field's valid range, and the workdir and checkpoint
paths. A check creates nothing on disk; a failure is a `cli.UserError` naming the field, its value and the range.

Light on purpose (no JAX, no TensorFlow, no Orbax): train.py reports a bad config or path in about a second. The
ranges are stated once, in `_FIELD_CHECKS` below, and repeated in the comments of `configs/default.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
import os
import re
import socket
import sys
from typing import Any, Callable

from depthnet_jax.common import cli, folder_lock, memory
from depthnet_jax.model.spec import COMPUTE_DTYPES, CONV_IMPLS, LOSSES
from depthnet_jax.model.spec import FIELDS as MODEL_FIELDS

# The one definition of the choices of solver and lr_schedule (optim.py acts on them and imports them from here:
# optim.py itself imports JAX, which a check must not wait for).
SOLVERS = ('sgd', 'adam')
SCHEDULES = ('torch', '2017', 'constant')
EVAL_CHECKPOINTS = ('best', 'latest')
NUM_SCALES = 5
DATASET_BUILDER = 'tfds_stillbox'
MAX_SEED = 2**32 - 1
MAX_STEPS = 2**31 - 1        # TrainState.step is int32
WORKERS_PER_CORE = 4         # --config.worker_count: at most this many grain worker processes per core

# Short-lived files of a starting run (cli.check_writable_dir's probe, write_config's temporary file).
_TRANSIENT = ('.depthnet-write-probe-', '.config.json.partial-')


def _name(field: str) -> str:
  return f'--config.{field}'


def _fail(field: str, value: Any, expected: str) -> cli.UserError:
  return cli.UserError(f'{_name(field)}={value!r}: expected {expected}')


def _bool(field: str, value: Any) -> None:
  if not isinstance(value, bool):
    raise _fail(field, value, 'True or False')


def _string(field: str, value: Any, *, empty: bool = True) -> None:
  if not isinstance(value, str) or (not empty and not value.strip()):
    raise _fail(field, value, 'a string' if empty else 'a non-empty string')


def _int(minimum: int | None = None, maximum: int | None = None) -> Callable[[str, Any], None]:
  return lambda field, value: cli.check_int(_name(field), value, minimum, maximum)


def _float(low: float | None = None, high: float | None = None, **open_bounds) -> Callable[[str, Any], None]:
  return lambda field, value: cli.check_float(_name(field), value, low, high, **open_bounds)


def _choice(choices) -> Callable[[str, Any], None]:
  return lambda field, value: cli.check_choice(_name(field), value, choices)


def _dataset(field: str, value: Any) -> None:
  # 'tfds_stillbox/<config>' with an optional ':<version>'; any config name (JSON configs are built by name).
  if not isinstance(value, str) or not re.fullmatch(rf'{DATASET_BUILDER}/[^/:\s]+(:[0-9.]+)?', value):
    raise _fail(field, value, f"'{DATASET_BUILDER}/<config>' (built-in configs: {known_dataset_configs()})")


def known_dataset_configs() -> str:
  """The builder's own configs, for messages (imported only when a message needs them)."""
  try:
    from tfds_stillbox import tfds_stillbox_dataset_builder as builder
    return ', '.join(builder.Builder.builder_configs)
  except Exception:  # noqa: BLE001 - a message must not fail because the builder does not import
    return '64, 128, 256, 512, synth64, synth128, synth64_small, synth_tiny'


def _depth_activation(field: str, value: Any) -> None:
  if value is not None and not (isinstance(value, str) and value.lower() in ('elu', 'none')):
    raise _fail(field, value, "'elu' or 'none'")


# The fields of `config.model` (model_spec.ModelSpec's) and their valid values.
_MODEL_CHECKS: dict[str, Callable[[str, Any], None]] = {
    'batch_norm': _bool, 'depth_activation': _depth_activation, 'clamp': _bool, 'with_confidence': _bool}
assert tuple(_MODEL_CHECKS) == MODEL_FIELDS, 'train_checks._MODEL_CHECKS must follow model_spec.ModelSpec'


def _model(field: str, value: Any) -> None:
  if not hasattr(value, 'keys'):
    raise _fail(field, value, f'a section with the fields {", ".join(MODEL_FIELDS)}')
  for key in value.keys():
    if key not in _MODEL_CHECKS:
      raise cli.UserError(f'{_name(field)}.{key}: not a model option{did_you_mean(key, MODEL_FIELDS)} (the '
                          f'options are {", ".join(MODEL_FIELDS)})')
  for key, check in _MODEL_CHECKS.items():
    if key not in value.keys():
      raise cli.UserError(f'{_name(field)} has no option {key!r}: expected all of {", ".join(MODEL_FIELDS)}')
    check(f'{field}.{key}', value[key])


def upgrade_config(config) -> list[str]:
  """Moves the model options of a config written before the `model` section (`config.batch_norm`, ...) into
  `config.model`, in place; returns the fields moved (empty for a current config)."""
  moved = [k for k in MODEL_FIELDS if k in config.keys()]
  if not moved:
    return []
  import ml_collections  # only for a config of the old layout
  with config.unlocked() if hasattr(config, 'unlocked') else contextlib.nullcontext():
    if 'model' not in config.keys():
      config['model'] = ml_collections.ConfigDict()
    for key in moved:
      config['model'][key] = config[key]
      del config[key]
  return moved


def _multiscale_weights(field: str, value: Any) -> None:
  expected = f'{NUM_SCALES} numbers >= 0, finest scale first, e.g. (0.32, 0.08, 0.02, 0.01, 0.005)'
  if not isinstance(value, (tuple, list)) or len(value) != NUM_SCALES:
    raise _fail(field, value, expected)
  for w in value:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
      raise _fail(field, tuple(value), expected)


def _milestones(field: str, value: Any) -> None:
  expected = 'increasing integers >= 0 (epochs), e.g. (19, 30, 44, 53)'
  if not isinstance(value, (tuple, list)):
    raise _fail(field, value, expected)
  previous = -1
  for m in value:
    if isinstance(m, bool) or not isinstance(m, int) or m <= previous:
      raise _fail(field, tuple(value), expected)
    previous = m


def _num_train_steps(field: str, value: Any) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or not (value == -1 or 1 <= value <= MAX_STEPS):
    raise _fail(field, value, f'-1 (train num_epochs epochs) or an integer >= 1, at most {MAX_STEPS} (the step '
                'counter is a 32-bit integer)')


def _worker_count(field: str, value: Any) -> None:
  try:
    cli.check_int(_name(field), value, 0, max_workers())
  except cli.UserError:
    raise _fail(field, value, f'an integer >= 0, at most {max_workers()} ({WORKERS_PER_CORE} per core of this '
                'machine: each worker is a process with its own copy of the input pipeline)') from None


def max_workers() -> int:
  """The most grain worker processes a run may start: WORKERS_PER_CORE per core."""
  return WORKERS_PER_CORE * (os.cpu_count() or 1)


def _coordinator_address(field: str, value: Any) -> None:
  if not isinstance(value, str):
    raise _fail(field, value, "'' or 'host:port'")
  if value:
    host, _, port = value.rpartition(':')
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
      raise _fail(field, value, "'' (auto-detect the cluster) or 'host:port' with a port from 1 to 65535")


# Every field of configs/default.py and its valid range (the same text is in default.py's comments).
_FIELD_CHECKS: dict[str, Callable[[str, Any], None]] = {
    'dataset': _dataset,
    'data_dir': _string,
    'train_split': lambda f, v: _string(f, v, empty=False),
    'eval_split': lambda f, v: _string(f, v, empty=False),
    'shift': _int(1),
    'worker_count': _worker_count,
    'model': _model,
    'conv_impl': _choice(CONV_IMPLS),
    'compute_dtype': _choice(COMPUTE_DTYPES),
    'loss': _choice(LOSSES),
    'multiscale_weights': _multiscale_weights,
    'solver': _choice(SOLVERS),
    'learning_rate': _float(0),
    'momentum': _float(0, 1),
    'dampening': _float(0, 1),
    'weight_decay': _float(0),
    'beta1': _float(0, 1, high_open=True),
    'beta2': _float(0, 1, high_open=True),
    'lr_schedule': _choice(SCHEDULES),
    'milestones': _milestones,
    'gamma': _float(0, 1, low_open=True),
    'batch_size': _int(1),
    'num_epochs': _int(1),
    'num_train_steps': _num_train_steps,
    'seed': _int(0, MAX_SEED),
    'eval_batch_size': _int(1),
    'eval_every_epochs': _float(0, low_open=True),
    'num_eval_images': _int(0),
    'log_every_steps': _int(1),
    'checkpoint_every_steps': _int(1),
    'keep_checkpoints': _int(1),
    'async_checkpointing': _bool,
    'init_from': _string,
    'eval_only': _bool,
    'eval_checkpoint': _choice(EVAL_CHECKPOINTS),
    'distributed': _bool,
    'coordinator_address': _coordinator_address,
    'num_processes': _int(1),
    'process_id': _int(0),
}

FIELDS = tuple(_FIELD_CHECKS)


def validate_config(config, source: str = 'the config') -> None:
  """Checks every field of a training config against its valid range; raises `cli.UserError` on the first bad one.

  Args:
    config: a ConfigDict (or mapping) with the fields of configs/default.py.
    source: where the config came from (e.g. 'configs/test.py'), for the messages.
  """
  keys = list(config.keys())
  for key in keys:
    if key not in _FIELD_CHECKS:
      raise cli.UserError(f'{source} sets {key!r}, which is not a config field{did_you_mean(key, FIELDS)} '
                          '(the fields are those of configs/default.py)')
  for field, check in _FIELD_CHECKS.items():
    if field not in keys:
      raise cli.UserError(f'{source} has no field {field!r}: expected every field of configs/default.py '
                          '(start a config from configs.default.get_config())')
    check(field, config[field])
  # Fields that only mean something together.
  address, processes, process_id = config['coordinator_address'], config['num_processes'], config['process_id']
  if not address:
    for field, value, default in (('num_processes', processes, 1), ('process_id', process_id, 0)):
      if value != default:
        raise _fail(field, value, f'{default} unless --config.coordinator_address is set (the processes of a '
                    'cluster go with the address of its coordinator)')
  elif not config['distributed'] and 'JAX_COORDINATOR_ADDRESS' not in os.environ:
    raise cli.UserError(f'--config.coordinator_address={address!r} is set but --config.distributed=False: '
                        'expected --config.distributed=True with it')
  if not process_id < processes:
    raise _fail('process_id', process_id, f'an integer from 0 to {processes - 1} (--config.num_processes is '
                f'{processes})')


def check_data_sizes(config, *, pairs_per_epoch: int, height: int, width: int, processes: int = 1) -> None:
  """The fields that size memory and the step counter, checked against the data once its splits are open (before
  the model is built or anything written; `validate_config` checks what needs no data):

  - batch_size, eval_batch_size: this process's share of a batch (the batch / processes) times what a pair at
    height x width takes (`memory.TRAIN_BYTES_PER_PIXEL`, `EVAL_BYTES_PER_PIXEL`: the evaluation pads its last
    batch to the full size) must fit in the machine's memory;
  - the run's steps (num_train_steps, or num_epochs x the steps of an epoch of `pairs_per_epoch` pairs) at most
    MAX_STEPS.
  A `cli.UserError` naming the field, its value and the bound otherwise.
  """
  pixels, share = height * width, max(1, processes)
  for field, each in (('batch_size', memory.TRAIN_BYTES_PER_PIXEL), ('eval_batch_size', memory.EVAL_BYTES_PER_PIXEL)):
    value = config[field]
    what = f'a {"training" if field == "batch_size" else "evaluation"} pair at {width}x{height}'
    if share > 1:
      what += f' (1/{share} of it on each of the {share} processes)'
    memory.check_count(_name(field), value, -(-each * pixels // share), what)
  per_epoch = max(1, pairs_per_epoch // config['batch_size'])
  if config['num_train_steps'] <= 0 and config['num_epochs'] * per_epoch > MAX_STEPS:
    raise _fail('num_epochs', config['num_epochs'], f'at most {MAX_STEPS // per_epoch} ({per_epoch} steps an epoch; '
                'the step counter is a 32-bit integer)')


def did_you_mean(name: str, candidates) -> str:
  close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
  return f' (did you mean {", ".join(close)}?)' if close else ''


# --- Paths ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RunPaths:
  """What the checks found on disk, so the run does not look again."""
  workdir: str                      # absolute
  resuming: bool                    # workdir/checkpoints holds a step to resume from
  init_from: str | None = None      # absolute, when the run will warm-start from it


def checkpoint_steps(directory: str) -> list[int]:
  """Steps of a checkpoint manager's directory that hold a finished model checkpoint; a step that is a symbolic
  link is a `cli.UserError` naming it (never followed: the run's manager deletes old steps, and a link's target is
  not the run's to delete; `checkpoints.loading` refuses it the same way)."""
  if not os.path.isdir(directory):
    return []
  names = os.listdir(directory)
  links = sorted(s for s in names if s.isdigit() and os.path.islink(os.path.join(directory, s)))
  if links:
    link = os.path.join(directory, links[0])
    raise cli.UserError(f'{link}: a symbolic link (to {os.readlink(link)}); expected the step folders train.py '
                        'writes (copy the checkpoint in, or give its folder itself as --config.init_from)')
  return sorted(int(s) for s in names if s.isdigit() and os.path.isdir(os.path.join(directory, s, 'model_config')))


def is_training_workdir(path: str) -> bool:
  """True if `path` holds what train.py writes: checkpoints/ or best/, or a config.json with a training config."""
  if any(os.path.isdir(os.path.join(path, d)) for d in ('checkpoints', 'best')):
    return True
  try:
    with open(os.path.join(path, 'config.json')) as f:
      written = json.load(f)
  except (OSError, ValueError):
    return False
  return isinstance(written, dict) and {'dataset', 'batch_size', 'learning_rate'} <= set(written)


def check_paths(config, workdir: Any) -> RunPaths:
  """Checks the workdir (and eval_only's or init_from's checkpoint) before anything is created.

  - eval_only: the workdir must hold a best (or latest, per eval_checkpoint) checkpoint; nothing is written.
  - training: the workdir is a directory (or can be created) that we may write in, and is either empty, new, or a
    previous run's workdir (resumed); a non-empty folder of someone else's files is refused.
  - init_from (when not resuming): a .pth.tar file, a model checkpoint directory, or a training workdir with one.
  """
  if not isinstance(workdir, (str, os.PathLike)) or not os.fspath(workdir).strip():
    raise cli.UserError(f'--workdir={workdir!r}: expected a directory path')
  path = os.path.abspath(os.fspath(workdir))
  if config['eval_only']:
    which = config['eval_checkpoint']
    sub = 'best' if which == 'best' else 'checkpoints'
    if not os.path.isdir(path):
      raise cli.UserError(f'--config.eval_only=True: --workdir {path} '
                          f'{"is a file" if os.path.exists(path) else "does not exist"}; expected the workdir of a '
                          f'training run (with {sub}/<step>/)')
    if not checkpoint_steps(os.path.join(path, sub)):
      raise cli.UserError(
          f'--config.eval_only=True: no {which} checkpoint in --workdir {path} (expected {sub}/<step>/ there): '
          f'train first (python train.py --config ... --workdir {path})')
    return RunPaths(path, resuming=False)
  if os.path.isdir(path):  # before the write probe: a user's folder is refused untouched (its mtime too)
    # Our own passing files do not count: another process of the same run may be probing or writing config.json.
    entries = sorted(e for e in os.listdir(path) if not e.startswith(_TRANSIENT))
    if entries and not is_training_workdir(path):
      raise cli.UserError(
          f'--workdir {path}: holds files that are not a depthnet-jax training run ({cli.shown_names(entries)}); '
          'train.py writes config.json, checkpoints/, best/ and TensorBoard events there: expected a new or empty '
          'folder, or the workdir of a previous run to resume')
  cli.check_writable_dir(path, '--workdir')
  checkpoint_steps(os.path.join(path, 'best'))   # a linked step is refused here too: the run replaces its best
  resuming = bool(checkpoint_steps(os.path.join(path, 'checkpoints')))
  init_from = None
  if config['init_from'] and not resuming:
    init_from = check_init_from(config['init_from'])
  return RunPaths(path, resuming=resuming, init_from=init_from)


def check_init_from(value: str) -> str:
  """The absolute path of a warm-start checkpoint, if it is one (a .pth.tar, a checkpoint or a workdir)."""
  path = os.path.abspath(os.path.expanduser(value))
  name = f'--config.init_from={value!r}'
  expected = ('expected a PyTorch .pth.tar, a depthnet-jax checkpoint directory (with model_config/) or a '
              'training workdir (with best/<step>/ or checkpoints/<step>/)')
  if not os.path.exists(path):
    raise cli.UserError(f'{name}: {path} does not exist; {expected}')
  if os.path.isdir(path) and not (os.path.isdir(os.path.join(path, 'model_config'))
                                  or checkpoint_steps(os.path.join(path, 'best'))
                                  or checkpoint_steps(os.path.join(path, 'checkpoints'))):
    raise cli.UserError(f'{name}: {path} holds no checkpoint; {expected}')
  return _still_writing(value, path)


_NOTED: set[str] = set()   # notes printed by this process (train.py checks the paths twice)


def _still_writing(value: str, path: str) -> str:
  """`path`, or when it is (a step of) a training workdir that a run is still writing (`folder_lock`'s record of a
  live holder), the step it is read from now, fixed and named in a note on stderr: a later best would otherwise
  be taken silently, or a step deleted by the run's rotation while this one starts."""
  step_of = os.path.isdir(os.path.join(path, 'model_config'))
  run = os.path.dirname(os.path.dirname(path)) if step_of else path
  if step_of and not (os.path.basename(path).isdigit()
                      and os.path.basename(os.path.dirname(path)) in ('best', 'checkpoints')):
    return path
  holder = folder_lock.read_holder(run, beside=True)
  pid = holder.get('pid') if holder else None
  if not isinstance(pid, int) or (holder.get('host') == socket.gethostname() and not cli.pid_alive(pid)):
    return path   # no run holds it, or its holder is dead (a killed run leaves its lock file)
  if not step_of:
    sub = next(d for d in ('best', 'checkpoints') if checkpoint_steps(os.path.join(run, d)))
    path = os.path.join(run, sub, str(checkpoint_steps(os.path.join(run, sub))[-1]))   # best/: the newest is best
  note = (f'note: --config.init_from={value!r}: initialised from step {os.path.basename(path)} of {run}, a run still '
          f'writing ({folder_lock.describe(holder)}): {path} as it is now')
  if note not in _NOTED:
    _NOTED.add(note)
    print(note, file=sys.stderr, flush=True)
  return path
