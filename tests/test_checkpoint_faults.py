"""Damaged checkpoints are found, reported in one line and never used.

Every checkpoint carries the sha256 of each array, written at save time and checked at load. Faults are made as a
disk or a careless copy makes them, in the files Orbax really writes: a data file truncated, bytes changed inside
a data file at the same size (both kinds: Orbax compresses with zstd without a frame checksum, so bytes changed
in the middle of a frame decode into other values silently, while a changed frame header fails to decode), and
a missing file; for inference (`infer.py` as a user runs it) and for resuming training (in-process: what
`train.py` runs, and `TrainCheckpoints.restore_latest` for the other faults). Checkpoints written before checksums
existed still load.
"""

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from depthnet_jax.checkpoints import checkpointing, loading
from depthnet_jax.common import cli
from depthnet_jax.model import models
from depthnet_jax.model.spec import ModelSpec
from depthnet_jax.testing import random_models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZSTD_MAGIC = b'\x28\xb5\x2f\xfd'
OPTIONS = dict(batch_norm=True, depth_activation='elu', clamp=True, with_confidence=False)
# A failed Orbax read leaves its other reads failing in background threads; outside pytest checkpointing silences
# them (sys.unraisablehook), but pytest replaces that hook during each test and turns them into warnings.
pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')


def _random_model(seed: int = 0, options=OPTIONS) -> models.DepthNet:
  return random_models.random_depthnet(seed, **options)


def _arrays(tree) -> dict[str, np.ndarray]:
  return {path: np.asarray(x) for path, x in checkpointing.integrity.array_leaves(tree)}


def _model_arrays(model) -> dict[str, np.ndarray]:
  return _arrays(nnx.state(model).to_pure_dict())


def _data_file(checkpoint, item='model') -> str:
  """The largest OCDBT data file of an item: where its arrays' (compressed) bytes are."""
  files = [f for f in glob.glob(os.path.join(checkpoint, item, '**', 'd', '*'), recursive=True) if os.path.isfile(f)]
  return max(files, key=os.path.getsize)


def _xor(path, offset, count) -> None:
  """Changes `count` bytes at `offset` in place: the file keeps its size."""
  with open(path, 'r+b') as f:
    f.seek(offset)
    data = f.read(count)
    f.seek(offset)
    f.write(bytes(b ^ 0x5A for b in data))


def _raw_restore(checkpoint, item='model') -> dict[str, np.ndarray]:
  """An item as plain Orbax reads it, with no check of ours: what a fault did to the values (or the error)."""
  with open(os.path.join(checkpoint, 'model_config', 'metadata')) as f:
    config = json.load(f)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                        nnx.state(models.abstract_model(ModelSpec.from_mapping(config))).to_pure_dict())
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    restored = ckptr.restore(checkpoint, ocp.args.Composite(**{item: ocp.args.StandardRestore(target)}))
  return _arrays(restored[item])


def _flip_values(checkpoint) -> str:
  """Changes 16 bytes in the middle of the model's data file so that values change but still decode.

  Returns the one array ('model/<path>') whose values changed. Offsets are tried from the middle on until plain
  Orbax reads the file without error and exactly one array differs (a flip on a zstd block header would be a
  decode error instead: that kind is `_break_decoding`).
  """
  before = _raw_restore(checkpoint)
  path = _data_file(checkpoint)
  size = os.path.getsize(path)
  for attempt in range(12):
    offset = size // 2 + attempt * 40_009
    _xor(path, offset, 16)
    try:
      after = _raw_restore(checkpoint)
    except Exception:  # noqa: BLE001 - this spot breaks decoding; undo and try the next
      _xor(path, offset, 16)
      continue
    changed = [k for k in before if not np.array_equal(before[k], after[k], equal_nan=False)]
    if len(changed) == 1:
      assert os.path.getsize(path) == size
      return f'model/{changed[0]}'
    _xor(path, offset, 16)
  raise AssertionError(f'no offset of {path} changed exactly one array')


def _break_decoding(checkpoint) -> None:
  """Changes the first zstd frame header of the model's data file (same size): plain Orbax cannot decode it."""
  path = _data_file(checkpoint)
  with open(path, 'rb') as f:
    assert f.read(4) == ZSTD_MAGIC   # Orbax's default: zstd-compressed chunks in OCDBT data files
  _xor(path, 0, 4)
  with pytest.raises(Exception, match='ZSTD|Zstd|zstd'):
    _raw_restore(checkpoint)


def _truncate(checkpoint) -> None:
  path = _data_file(checkpoint)
  os.truncate(path, os.path.getsize(path) // 2)


def _remove_data_file(checkpoint) -> None:
  os.remove(_data_file(checkpoint))


def _listing(root) -> dict[str, int]:
  return {os.path.relpath(os.path.join(d, f), root): os.path.getsize(os.path.join(d, f))
          for d, _, files in os.walk(root) for f in files}


# --- Model checkpoints, in-process -------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def model():
  return _random_model()


@pytest.fixture(scope='module')
def saved(model, tmp_path_factory):
  return checkpointing.save_model(tmp_path_factory.mktemp('saved') / 'ckpt', model)


def _copy(saved, tmp_path, name='ckpt'):
  return shutil.copytree(saved, tmp_path / name)


def test_checksums_are_written_from_the_saved_arrays_and_verified_at_load(model, saved):
  with open(os.path.join(saved, checkpointing.CHECKSUM_ITEM, 'metadata')) as f:
    record = json.load(f)
  arrays = _model_arrays(model)
  assert record['algorithm'] == 'sha256' and set(record['items']) == {'model'}
  assert record['items']['model'].keys() == arrays.keys()
  for path, a in arrays.items():
    assert record['items']['model'][path] == {
        'dtype': 'float32', 'shape': list(a.shape), 'sha256': hashlib.sha256(a.tobytes()).hexdigest()}, path
  assert checkpointing.read_model_config(saved)[checkpointing.CHECKSUM_KEY] == 'sha256'
  loaded = _model_arrays(checkpointing.load_model(saved))
  for path, a in arrays.items():
    np.testing.assert_array_equal(loaded[path], a)


def test_bytes_changed_at_the_same_size_are_a_checksum_mismatch_naming_the_array(saved, tmp_path):
  ckpt = _copy(saved, tmp_path)
  array = _flip_values(ckpt)   # plain Orbax would load other values without a word
  with pytest.raises(checkpointing.DamagedCheckpointError) as e:
    checkpointing.load_model(ckpt)
  assert str(e.value) == (f'checkpoint {ckpt} is damaged: array {array} does not match the checksum written when '
                          'it was saved')


@pytest.mark.parametrize('fault, expected', [
    (_break_decoding, r'is damaged or incomplete: array model/\S+ cannot be read \(FAILED_PRECONDITION: '
                      r'ZSTD_decompressStream\(\) failed'),
    (_truncate, r'is damaged or incomplete: array model/\S+ cannot be read \(OUT_OF_RANGE: '),
    (_remove_data_file, r'is damaged or incomplete: array model/\S+ cannot be read \('),
    (lambda c: os.remove(os.path.join(c, 'model', 'manifest.ocdbt')),
     r'is damaged or incomplete: file model/manifest.ocdbt is missing$'),
    (lambda c: open(os.path.join(c, 'model_config', 'metadata'), 'w').write('{"batch_norm": tr'),
     r'is damaged or incomplete: file model_config/metadata is not readable JSON \(Expecting value'),
    (lambda c: os.remove(os.path.join(c, 'model_config', 'metadata')),
     r'is damaged or incomplete: file model_config/metadata is missing$'),
    (lambda c: shutil.rmtree(os.path.join(c, 'checksums')),
     r'is damaged: checksums/ is missing \(its model_config says the arrays were saved with sha256 checksums\)$'),
], ids=['zstd-header', 'truncated', 'missing-data-file', 'missing-manifest', 'garbage-config', 'missing-config',
        'missing-checksums'])
def test_unreadable_checkpoint_is_one_line_naming_it_and_the_array_or_file(saved, tmp_path, fault, expected):
  ckpt = _copy(saved, tmp_path)
  fault(ckpt)
  before = _listing(ckpt)
  for read in (checkpointing.load_model, loading.load_any):
    with pytest.raises(checkpointing.DamagedCheckpointError) as e:
      read(ckpt)
    message = str(e.value)
    assert isinstance(e.value, cli.UserError) and cli.one_line(e.value) == message and '\n' not in message
    assert message.startswith(f'checkpoint {ckpt} ') and re.search(expected, message), message
    assert len(message) < 400, message
  assert _listing(ckpt) == before   # a read changes nothing


def test_checkpoint_without_checksums_still_loads_and_is_checked_for_finite_values(model, tmp_path):
  # Exactly what the previous version's save_model wrote: items model and model_config, no checksums.
  state = jax.tree.map(np.asarray, nnx.state(model).to_pure_dict())
  old = str(tmp_path / 'old')
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(old, ocp.args.Composite(model=ocp.args.StandardSave(state),
                                       model_config=ocp.args.JsonSave(dict(model.options(), note='old'))))
  loaded = _model_arrays(checkpointing.load_model(old))
  for path, a in _model_arrays(model).items():
    np.testing.assert_array_equal(loaded[path], a)
  state['conv3']['conv']['kernel'] = state['conv3']['conv']['kernel'].copy()
  state['conv3']['conv']['kernel'][0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
  nan = str(tmp_path / 'old_nan')
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(nan, ocp.args.Composite(model=ocp.args.StandardSave(state),
                                       model_config=ocp.args.JsonSave(model.options())))
  with pytest.raises(checkpointing.DamagedCheckpointError,
                     match=re.escape(f'checkpoint {nan} cannot be used: array model/conv3/conv/kernel holds 3 NaN '
                                     'or infinite value(s) of 73728')):
    checkpointing.load_model(nan)


def test_missing_or_foreign_paths_are_one_line(tmp_path):
  (tmp_path / 'notes.txt').write_text('x')
  cases = [(tmp_path / 'nope', f'checkpoint {tmp_path / "nope"} does not exist'),
           (tmp_path, f'{tmp_path} is neither a depthnet-jax checkpoint')]
  for path, expected in cases:
    with pytest.raises(checkpointing.CheckpointNotFoundError, match=re.escape(expected)) as e:
      loading.load_any(path)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, cli.UserError)
  (tmp_path / 'w' / 'checkpoints').mkdir(parents=True)
  with pytest.raises(checkpointing.CheckpointNotFoundError, match='holds no complete checkpoint'):
    loading.resolve_checkpoint(tmp_path / 'w')


# --- Inference: infer.py as a user runs it -----------------------------------------------------------------------

INFER_FAULTS = {'changed-bytes': _flip_values, 'zstd-header': _break_decoding, 'truncated': _truncate,
                'missing-data-file': _remove_data_file}


@pytest.fixture(scope='module')
def infer_runs(saved, tmp_path_factory):
  """{fault: (checkpoint, named array or None, listing before, output folder, CompletedProcess)}: all run at once."""
  from PIL import Image
  root = tmp_path_factory.mktemp('infer_faults')
  frames = root / 'frames'
  frames.mkdir()
  rng = np.random.default_rng(1)
  for i in range(3):
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(frames / f'frame_{i:03d}.png')
  runs = {}
  for name, fault in INFER_FAULTS.items():
    ckpt = shutil.copytree(saved, root / name)
    array = fault(ckpt)
    out = root / f'out_{name}'
    process = subprocess.Popen(
        [sys.executable, os.path.join(REPO, 'infer.py'), '--checkpoint', str(ckpt), '--input', str(frames),
         '--output', str(out)], env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu'), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs[name] = (ckpt, array, _listing(ckpt), out, process)
  done = {}
  for name, (ckpt, array, listing, out, process) in runs.items():
    stdout, stderr = process.communicate(timeout=300)
    done[name] = (ckpt, array, listing, out, subprocess.CompletedProcess(process.args, process.returncode, stdout,
                                                                          stderr))
  return done


@pytest.mark.parametrize('fault', list(INFER_FAULTS))
def test_infer_refuses_a_damaged_checkpoint_in_one_line_and_writes_nothing(infer_runs, fault):
  ckpt, array, listing, out, result = infer_runs[fault]
  assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  line = lines[0]
  assert line.startswith('error: '), line   # (infer.py may say which flag, e.g. 'error: --checkpoint: ...')
  if array:   # values changed: only the checksum can tell
    assert line.endswith(f'checkpoint {ckpt} is damaged: array {array} does not match the checksum written when '
                         'it was saved'), line
  else:
    assert re.search(rf'checkpoint {re.escape(str(ckpt))} is damaged or incomplete: array model/\S+ '
                     r'cannot be read \([A-Z_]+: .+\)$', line), line
  assert not os.path.exists(out)            # no output folder, no result
  assert _listing(ckpt) == listing          # the checkpoint is left as it was


# --- Resuming training ------------------------------------------------------------------------------------------

STEPS = 6


def _params(checkpoint):
  return _model_arrays(checkpointing.load_model(checkpoint))


def test_resume_sets_a_damaged_step_aside_and_continues_bit_identical(tiny_run, synth_tiny_dir, tmp_path, capfd):
  from configs import test as test_config
  from depthnet_jax.train import trainer as train_lib
  workdir = tmp_path / 'run'
  shutil.copytree(tiny_run[0], workdir)
  damaged = workdir / 'checkpoints' / str(STEPS)
  array = _flip_values(damaged)
  damaged_listing = _listing(damaged)
  config = test_config.get_config()
  config.data_dir = synth_tiny_dir
  config.lock()
  capfd.readouterr()
  train_lib.train_and_evaluate(config, str(workdir))   # in-process, what `train.py` runs again in the workdir
  result = capfd.readouterr()
  assert (f'WARNING: checkpoint {damaged} is damaged: array {array} does not match the checksum written when it '
          'was saved; falling back to the previous one') in result.out
  aside = [p for p in (workdir / 'unreadable').iterdir()]
  assert [p.name.split('-')[0] for p in aside] == [str(STEPS)] and f'moved it to {aside[0]}' in result.out
  assert _listing(aside[0]) == damaged_listing     # set aside whole, not deleted
  assert 'resuming from step 3' in result.out and 'Traceback' not in result.err
  final, straight = _params(damaged), _params(os.path.join(tiny_run[0], 'checkpoints', str(STEPS)))
  assert final.keys() == straight.keys()
  for path in final:
    np.testing.assert_array_equal(final[path], straight[path], err_msg=path)


@pytest.fixture(scope='module')
def template(synth_tiny_dir):
  """The train state `train.py` builds for configs/test.py: what `restore_latest` restores into."""
  from configs import test as test_config
  from depthnet_jax.train import trainer as train_lib
  config = test_config.get_config()
  config.data_dir = synth_tiny_dir
  # Numpy-random weights instead of nnx's initialisers (which compile one small program per shape: seconds);
  # everything else (optimizer state, step, RNG, shardings) is the trainer's own.
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(train_lib, 'create_model', lambda c: _random_model(c.seed, train_lib.model_spec(c).to_dict()))
    return train_lib.Trainer(config).initial_state()


def _copy_checkpoints(tiny_run, tmp_path):
  """A workdir holding a copy of the tiny run's `checkpoints/` (all that `restore_latest` reads)."""
  workdir = tmp_path / 'run'
  shutil.copytree(os.path.join(tiny_run[0], 'checkpoints'), workdir / 'checkpoints')
  return workdir


def _opt_state_flip(checkpoint):
  """Bytes changed at the same size in the middle of the optimizer state's data file."""
  path = _data_file(checkpoint, 'opt_state')
  _xor(path, os.path.getsize(path) // 2, 16)


@pytest.mark.parametrize('fault, expected', [
    (_truncate, r'is damaged or incomplete: array model/\S+ cannot be read \(OUT_OF_RANGE: '),
    (_remove_data_file, r'is damaged or incomplete: array model/\S+ cannot be read \('),
    (_break_decoding, r'is damaged or incomplete: array model/\S+ cannot be read \(FAILED_PRECONDITION: ZSTD'),
    (_opt_state_flip, r'is damaged( or incomplete)?: (array opt_state/\d+ does not match the checksum|'
                      r'array opt_state/\d+ cannot be read)'),
], ids=['truncated', 'missing-data-file', 'zstd-header', 'opt-state-bytes'])
def test_restore_latest_falls_back_past_any_fault(tiny_run, template, tmp_path, capsys, fault, expected):
  workdir = _copy_checkpoints(tiny_run, tmp_path)
  damaged = workdir / 'checkpoints' / str(STEPS)
  fault(damaged)
  with checkpointing.TrainCheckpoints(workdir, async_save=False) as ckpts:
    state = ckpts.restore_latest(template)
  out = capsys.readouterr().out
  warning = next(line for line in out.splitlines() if line.startswith('WARNING: '))
  assert warning.startswith(f'WARNING: checkpoint {damaged} ') and re.search(expected, warning), warning
  assert warning.endswith('; falling back to the previous one')
  assert int(state.step) == 3 and not damaged.exists()
  assert [p.name.split('-')[0] for p in (workdir / 'unreadable').iterdir()] == [str(STEPS)]
  step3 = _params(workdir / 'checkpoints' / '3')
  restored = _arrays(checkpointing._pure_model(state.params, state.batch_stats))
  for path, a in step3.items():
    np.testing.assert_array_equal(restored[path], a, err_msg=path)


def test_no_usable_step_is_one_line_and_every_step_is_set_aside(tiny_run, template, tmp_path, capsys):
  workdir = _copy_checkpoints(tiny_run, tmp_path)
  for step in (3, STEPS):
    _truncate(workdir / 'checkpoints' / str(step))
  with checkpointing.TrainCheckpoints(workdir, async_save=False) as ckpts:
    with pytest.raises(checkpointing.CheckpointError) as e:
      ckpts.restore_latest(template)
  assert str(e.value) == (f'no checkpoint in {workdir / "checkpoints"} is usable (steps 6, 3 are damaged; they '
                          f'were moved to {workdir / "unreadable"}): run again to start from scratch, or put back a '
                          'good one')
  assert sorted(p.name.split('-')[0] for p in (workdir / 'unreadable').iterdir()) == ['3', '6']
  assert 'no older checkpoint' in capsys.readouterr().out


def test_training_checkpoint_without_checksums_still_resumes(tiny_run, template, tmp_path, capsys):
  workdir = _copy_checkpoints(tiny_run, tmp_path)
  for step in (3, STEPS):   # as the previous version wrote them: no checksums item, no mention in model_config
    step_dir = workdir / 'checkpoints' / str(step)
    shutil.rmtree(step_dir / 'checksums')
    config_file = step_dir / 'model_config' / 'metadata'
    config = json.loads(config_file.read_text())
    del config[checkpointing.CHECKSUM_KEY]
    config_file.write_text(json.dumps(config))
  with checkpointing.TrainCheckpoints(workdir, async_save=False) as ckpts:
    state = ckpts.restore_latest(template)
  assert int(state.step) == STEPS and 'WARNING' not in capsys.readouterr().out


def test_checkpoints_of_another_model_are_refused_and_nothing_is_moved(tiny_run, template, tmp_path):
  workdir = _copy_checkpoints(tiny_run, tmp_path)
  config_file = workdir / 'checkpoints' / str(STEPS) / 'model_config' / 'metadata'
  config = json.loads(config_file.read_text())
  config['batch_norm'] = False   # as if the run had been started with another config
  config_file.write_text(json.dumps(config))
  before = _listing(workdir)
  with checkpointing.TrainCheckpoints(workdir, async_save=False) as ckpts:
    with pytest.raises(checkpointing.CheckpointError, match=re.escape(
        f'checkpoint {workdir / "checkpoints" / str(STEPS)} is of another model (batch_norm=False, ')):
      ckpts.restore_latest(template)
  assert _listing(workdir) == before


# --- TrainCheckpoints creates nothing when only read, and closes cleanly on any path ------------------------------

def test_reading_creates_no_directory(tmp_path):
  workdir = tmp_path / 'no_run_here'
  with checkpointing.TrainCheckpoints(workdir) as ckpts:
    assert ckpts.restore_latest(template={}) is None
    with pytest.raises(checkpointing.CheckpointNotFoundError, match='no best checkpoint in'):
      ckpts.path_of('best')
  assert not workdir.exists()


def test_saves_then_an_error_closes_cleanly_and_keeps_the_saves(tmp_path):
  """An error raised while an asynchronous save is in flight: the save completes, no thread complains at exit."""
  workdir = tmp_path / 'run'
  script = f'''
import numpy as np
from flax import nnx
from depthnet_jax.checkpoints import checkpointing
from depthnet_jax.checkpoints.train_state import TrainState
import test_checkpoint_faults as t
model = t._random_model(1)
_, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
with checkpointing.TrainCheckpoints({str(workdir)!r}) as ckpts:
  ckpts.save_best(1, TrainState(params, stats, None, None), model.options(), {{'depth_error': 1.0}})
  raise SystemExit(3)
'''
  result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, 'tests')]),
                                   JAX_PLATFORMS='cpu'))
  assert result.returncode == 3, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr and 'cannot schedule new futures' not in result.stderr, result.stderr
  assert os.listdir(workdir) == ['best'] and os.listdir(workdir / 'best') == ['1']
  loaded = _params(workdir / 'best' / '1')
  for path, a in _model_arrays(_random_model(1)).items():
    np.testing.assert_array_equal(loaded[path], a)
