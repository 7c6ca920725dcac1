"""Every file the project reads is checked, and found wrong early (issue 21, part 3).

- A built split's ArrayRecord shards (conftest's `synth_tiny_dir` copied, then a shard deleted, truncated or
  byte-flipped, or dataset_info.json's shard length edited): refused when the split is opened, by
  `input_pipeline.open_source`, the evaluate command and training, before any work; a record damaged inside an
  intact file is one line naming the file and the record when it is read, in a grain worker too, and a training
  run that meets it stops with its last checkpoints kept.
- TensorBoard event files (written by clu's metric writer, as training writes them): both TFRecord checksums are
  verified, a damaged record is one line naming the file and its offset, a record cut short at the end is where
  a running training's file ends.
- Metadata values: a Still Box tree's speed and time step, its depth maps, a checkpoint's recorded image size, FOV
  and displacement; zero speed is skipped and counted; another image size than the checkpoint's is a note.

Each refusal asserts the exception or exit code, the message (file, field, what was expected) and the disk after.
"""

import json
import math
import os
import re
import shutil
import struct

import numpy as np
import pytest

from depthnet_jax.common import cli, crc32c
from depthnet_jax.data import input_pipeline, shards, tree_source
from tfds_stillbox import tree

TRAIN_SHARD = 'tfds_stillbox-train.array_record-00000-of-00001'
VALIDATION_SHARD = 'tfds_stillbox-validation.array_record-00000-of-00001'


def _snapshot(root) -> dict:
  """Every path under root, with each file's size and mtime: what a refusal must leave as it was (a folder's own
  mtime aside: a command's lock file comes and goes in it)."""
  found = {}
  for folder, dirs, files in os.walk(root):
    for name in dirs:
      found[os.path.relpath(os.path.join(folder, name), root)] = None
    for name in files:
      stat = os.stat(os.path.join(folder, name))
      found[os.path.relpath(os.path.join(folder, name), root)] = (stat.st_size, stat.st_mtime_ns)
  return found


def _one_error_line(err: str) -> str:
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), err
  return lines[0]


# --- Dataset shards ----------------------------------------------------------------------------------------------

@pytest.fixture
def data_dir(synth_tiny_dir, tmp_path):
  """A copy of the built synth_tiny dataset: (data_dir, the folder of its shards)."""
  root = tmp_path / 'data'
  shutil.copytree(synth_tiny_dir, root)
  return str(root), str(root / 'tfds_stillbox' / 'synth_tiny' / '1.0.0')


def _edit_shard_length(version_dir, split, length):
  path = os.path.join(version_dir, 'dataset_info.json')
  with open(path) as f:
    info = json.load(f)
  (entry,) = [s for s in info['splits'] if s['name'] == split]
  entry['shardLengths'] = [str(length)]
  with open(path, 'w') as f:
    json.dump(info, f)


def _first_damaged_record(path) -> int | None:
  """The first record of an ArrayRecord file that cannot be read (None: all can)."""
  from array_record.python import array_record_module
  reader = array_record_module.ArrayRecordReader(path, options='readahead_buffer_size:0')
  try:
    for k in range(reader.num_records()):
      try:
        reader.seek(k)
        reader.read()
      except RuntimeError:
        return k
    return None
  finally:
    try:
      reader.close()
    except RuntimeError:
      pass


def _flip_byte_of_record(path, index):
  """Flips one byte inside record `index` of an ArrayRecord file (each record is a chunk of its own): the offset
  found by bisection on which record a flip damages."""
  original = open(path, 'rb').read()

  def damaged_by_flip_at(offset):
    data = bytearray(original)
    data[offset] ^= 0xFF
    with open(path, 'wb') as f:
      f.write(data)
    found = _first_damaged_record(path)
    return math.inf if found is None else found

  def first_offset_damaging(at_least):
    low, high = 64, len(original) - 1   # past the file signature chunk
    while low < high:
      mid = (low + high) // 2
      if damaged_by_flip_at(mid) >= at_least:
        high = mid
      else:
        low = mid + 1
    return low
  start, end = first_offset_damaging(index), first_offset_damaging(index + 1)
  middle = (start + end) // 2
  assert damaged_by_flip_at(middle) == index, (start, end)
  return middle


@pytest.mark.parametrize('damage, split, expected', [
    ('delete', 'train', 'does not exist; expected shard 1 of 1 of split \'train\', 10 records as'),
    ('delete', 'validation', 'does not exist; expected shard 1 of 1 of split \'validation\', 2 records as'),
    ('truncate', 'train', 'not a readable ArrayRecord file (truncated or damaged: '),
    ('empty', 'validation', 'not a readable ArrayRecord file (truncated or damaged: '),
    ('length 11', 'train', 'holds 10 records, but {info} lists 11 for it (shardLengths of split \'train\'); '
                           'expected the two to agree'),
    ('length 5', 'train', 'holds 10 records, but {info} lists 5 for it'),
])
def test_a_shard_missing_truncated_or_of_another_length_is_refused_when_the_split_opens(data_dir, damage, split,
                                                                                         expected):
  root, version_dir = data_dir
  shard = os.path.join(version_dir, TRAIN_SHARD if split == 'train' else VALIDATION_SHARD)
  if damage == 'delete':
    os.remove(shard)
  elif damage == 'truncate':
    os.truncate(shard, os.path.getsize(shard) - 1000)
  elif damage == 'empty':
    os.truncate(shard, 0)
  else:
    _edit_shard_length(version_dir, split, int(damage.split()[1]))
  before = _snapshot(root)
  with pytest.raises(shards.ShardError) as raised:
    input_pipeline.open_source('tfds_stillbox/synth_tiny', split, root)
  message = str(raised.value)
  assert message.startswith(f'{shard}: ') and '\n' not in message, message
  assert expected.format(info=os.path.join(version_dir, 'dataset_info.json')) in message, message
  assert _snapshot(root) == before   # opening writes nothing


def test_the_evaluate_command_refuses_a_missing_shard_before_the_checkpoint_is_read(data_dir, tmp_path, capsys):
  from depthnet_jax.evaluation import command
  root, version_dir = data_dir
  os.remove(os.path.join(version_dir, VALIDATION_SHARD))
  not_a_checkpoint = tmp_path / 'ckpt'   # the data is checked first: the checkpoint is never read
  not_a_checkpoint.mkdir()
  out = tmp_path / 'out'
  out.mkdir()
  before = _snapshot(tmp_path)
  # In-process commands here run with the session's compilation cache: `--no_compilation_cache` would turn JAX's
  # cache off for the rest of this process (the tests after it in this pytest worker would compile everything).
  code = command.main(['--checkpoint', str(not_a_checkpoint), '--dataset', 'tfds_stillbox/synth_tiny',
                       '--data_dir', root, '--json', str(out / 'eval.json')])
  line = _one_error_line(capsys.readouterr().err)
  assert code == 1
  assert line.startswith(f'error: {os.path.join(version_dir, VALIDATION_SHARD)}: does not exist; expected shard 1 '
                         "of 1 of split 'validation'"), line
  assert _snapshot(tmp_path) == before   # no --json, no lock or temporary left


def test_training_refuses_a_missing_validation_shard_before_anything_is_written(data_dir, tmp_path):
  from configs import test as test_config
  from depthnet_jax.train import trainer as train_lib
  root, version_dir = data_dir
  os.remove(os.path.join(version_dir, VALIDATION_SHARD))
  config = test_config.get_config()
  config.data_dir = root
  config.lock()
  before = _snapshot(tmp_path)
  shard = os.path.join(version_dir, VALIDATION_SHARD)
  with pytest.raises(shards.ShardError, match=f'^{re.escape(shard)}: does not exist'):
    train_lib.train_and_evaluate(config, str(tmp_path / 'run'), config_source='configs/test.py')
  assert _snapshot(tmp_path) == before   # no workdir, no config.json, no lock


def test_a_damaged_record_names_the_file_and_the_record_in_this_process_and_from_a_grain_worker(data_dir):
  root, version_dir = data_dir
  shard = os.path.join(version_dir, TRAIN_SHARD)
  _flip_byte_of_record(shard, 4)
  source = input_pipeline.open_source('tfds_stillbox/synth_tiny', 'train', root)   # the footer is intact
  assert len(source) == 10 and len(source[3]['frames']) == 6
  expected = (f"{shard}: record 4 (scene 4 of split 'train') cannot be read (Corrupted Riegeli/records file: "
              'chunk data hash mismatch')
  with pytest.raises(shards.DamagedRecordError) as raised:
    source[4]
  assert str(raised.value).startswith(expected) and str(raised.value).endswith(
      'expected an intact ArrayRecord record (restore the file or rebuild the dataset)'), raised.value
  # a grain worker's error reaches the parent as the same one line (grain pickles it across)
  source = input_pipeline.open_source('tfds_stillbox/synth_tiny', 'train[3:5]', root)
  it = input_pipeline.make_iterator(input_pipeline.eval_dataset(source, global_batch_size=3), worker_count=1)
  assert next(it)['mask'].sum() == 3   # scene 0 (record 3): its 3 pairs
  with pytest.raises(shards.DamagedRecordError) as raised:
    next(it)
  assert str(raised.value).startswith(f"{shard}: record 4 (scene 1 of split 'train[3:5]') cannot be read"), \
      raised.value
  it.close()


def test_training_stops_at_a_damaged_record_with_one_line_and_keeps_its_checkpoints(tiny_run, data_dir, tmp_path,
                                                                                  capsys):
  """A record damaged inside an intact shard, read for the first time after the first step of configs/test.py's
  run (a checkpoint every step): `cli.run` as train.py runs it gives exit code 1 and one line naming the file and
  the record; the checkpoints of the steps before are there, whole, and load.

  In-process, after conftest's `tiny_run` (made once per test run for other modules too): its run of the same
  config left every program this one compiles in the session's compilation cache, so that this run costs its two
  or three steps and saves (~5 s), not a compile of DepthNet's train step (~25 s on 2 cores)."""
  from configs import test as test_config
  from depthnet_jax.checkpoints import checkpointing
  from depthnet_jax.train import trainer as train_lib
  root, version_dir = data_dir
  config = test_config.get_config()
  config.update(data_dir=root, checkpoint_every_steps=1)
  config.lock()
  # the scenes each step reads: the pipeline's own order (a function of the seed)
  source = input_pipeline.open_source(config.dataset, 'train', root)
  steps = input_pipeline.steps_per_epoch(len(source), input_pipeline.frames_per_scene(source), config.batch_size)
  sample = input_pipeline.TrainSample(source, seed=config.seed, shift=config.shift,
                                      layout=input_pipeline.Layout(config.batch_size), steps_per_epoch=steps)
  first_step = {}
  for position, scene in enumerate(sample._order(0)):
    first_step.setdefault(int(scene), position // config.batch_size)
  # the scene read first after step 1 and its checkpoint (not record 0: it is read at start-up)
  scene = min((s for s in first_step if s != 0 and first_step[s] >= 1), key=lambda s: (first_step[s], s))
  shard = os.path.join(version_dir, TRAIN_SHARD)
  _flip_byte_of_record(shard, scene)
  workdir = tmp_path / 'run'
  code = cli.run(lambda: train_lib.train_and_evaluate(config, str(workdir), config_source='configs/test.py'))
  line = _one_error_line(capsys.readouterr().err)
  assert code == 1
  assert line.startswith(f"error: {shard}: record {scene} (scene {scene} of split 'train') cannot be read"), line
  kept = sorted(int(s) for s in os.listdir(workdir / 'checkpoints') if s.isdigit())
  assert kept and kept[-1] <= first_step[scene], (kept, first_step[scene])   # saved before the damaged step
  assert not [n for n in os.listdir(workdir / 'checkpoints') if not n.isdigit()]   # no temporary left
  config_item = checkpointing.read_model_config(workdir / 'checkpoints' / str(kept[-1]))
  assert config_item['image_size'] == [32, 32]
  checkpointing.load_model(workdir / 'checkpoints' / str(kept[-1]))   # whole: every array against its checksum


# --- TensorBoard event files -------------------------------------------------------------------------------------

def test_crc32c_is_castagnolis_on_both_paths():
  from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
  assert crc32c.value(b'123456789') == 0xE3069283   # CRC-32C's check value
  rng = np.random.default_rng(0)
  for n in (0, 1, 3, 4, 100, crc32c._NUMPY_FROM - 1, crc32c._NUMPY_FROM, 100003):
    data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    assert crc32c.masked(data) == masked_crc32c(data), n   # TensorBoard's own (byte by byte)
  data = rng.integers(0, 256, 300, dtype=np.uint8)
  windows = crc32c.masked_windows(data, 8)
  assert [int(x) for x in windows[:50]] == [crc32c.masked(data[i:i + 8].tobytes()) for i in range(50)]


@pytest.fixture(scope='module')
def event_file(tmp_path_factory):
  """(the file, its bytes, the byte offset of each record): 5 steps of 3 scalars and an image, written by clu's
  metric writer as training writes them."""
  from clu import metric_writers
  folder = tmp_path_factory.mktemp('events')
  writer = metric_writers.create_default_writer(str(folder))
  for step in range(1, 6):
    writer.write_scalars(step, {'train_loss': 10.0 / step, 'train_depth_error': 5.0 / step, 'eval_rmse': 1.0 * step})
    writer.write_images(step, {'eval_examples': np.full((1, 8, 32, 3), 40 * step, np.uint8)})
  writer.close()
  (name,) = os.listdir(folder)
  path = str(folder / name)
  data = open(path, 'rb').read()
  offsets, offset = [], 0
  while offset < len(data):
    offsets.append(offset)
    offset += 16 + struct.unpack_from('<Q', data, offset)[0]
  return path, data, offsets


def _workdir_with(tmp_path, event_file, data: bytes):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  path = workdir / os.path.basename(event_file[0])
  path.write_bytes(data)
  return str(workdir), str(path)


def test_an_intact_event_file_and_one_still_being_written_read_to_their_last_whole_record(event_file, tmp_path):
  from depthnet_jax.evaluation import run_log
  _, data, offsets = event_file
  workdir, path = _workdir_with(tmp_path, event_file, data)
  scalars = run_log.read_scalars(workdir)
  assert scalars['train_loss'] == [(s, pytest.approx(10.0 / s)) for s in range(1, 6)]
  assert 'eval_examples' not in scalars
  # the file of a running training: cut anywhere in its last record (header, data, checksum), it ends before it
  for record in (offsets[-1], offsets[len(offsets) // 2]):
    with open(path, 'wb') as f:
      f.write(data[:record])
    before_it = run_log.read_scalars(workdir)
    assert before_it['train_loss'][:2] == scalars['train_loss'][:2]
    end = offsets[offsets.index(record) + 1] if record != offsets[-1] else len(data)
    for cut in (record + 3, record + 12, record + 20, end - 1):
      with open(path, 'wb') as f:
        f.write(data[:cut])
      assert run_log.read_scalars(workdir) == before_it, cut
  # blocks a crash left as zeros at the end: also where the file ends
  with open(path, 'wb') as f:
    f.write(data + b'\0' * 4096)
  assert run_log.read_scalars(workdir) == scalars


@pytest.mark.parametrize('where, field', [('length', 'length'), ('length checksum', 'length'), ('data', 'data'),
                                          ('data checksum', 'data')])
def test_a_damaged_record_is_one_line_naming_the_file_and_the_offset(event_file, tmp_path, where, field):
  from depthnet_jax.evaluation import run_log
  _, data, offsets = event_file
  record = offsets[3]   # a scalar event in the middle of the file
  length = struct.unpack_from('<Q', data, record)[0]
  at = {'length': record, 'length checksum': record + 9, 'data': record + 12 + length // 2,
        'data checksum': record + 12 + length + 1}[where]
  damaged = bytearray(data)
  damaged[at] ^= 0x04
  workdir, path = _workdir_with(tmp_path, event_file, bytes(damaged))
  before = _snapshot(workdir)
  with pytest.raises(run_log.RunLogError) as raised:
    run_log.read_scalars(workdir)
  assert str(raised.value).startswith(f'{path}: not a readable TensorBoard event file: the record at byte {record} '
                                      f'fails the checksum of its {field} (stored masked CRC-32C '), raised.value
  assert 'expected an intact TFRecord frame' in str(raised.value)
  assert _snapshot(workdir) == before


def test_the_learning_curve_script_refuses_a_damaged_event_file(event_file, tmp_path, capsys):
  import importlib.util
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  spec = importlib.util.spec_from_file_location('learning_curve', os.path.join(repo, 'scripts', 'learning_curve.py'))
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  _, data, offsets = event_file
  damaged = bytearray(data)
  damaged[offsets[2] + 14] ^= 0x01
  workdir, path = _workdir_with(tmp_path, event_file, bytes(damaged))
  out = tmp_path / 'curve.png'
  assert script.main(['--workdir', workdir, '--out', str(out)]) == 1
  line = _one_error_line(capsys.readouterr().err)
  assert line.startswith(f'error: {path}: not a readable TensorBoard event file: the record at byte {offsets[2]}')
  assert sorted(os.listdir(tmp_path)) == ['run']   # no picture, no temporary


# --- Metadata: Still Box trees -----------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def rendered_tree(tmp_path_factory):
  """A rendered Still Box tree: 2 scenes of 5 frames at 32x32 (2 pairs each at shift 3)."""
  from tfds_stillbox.render import export
  return export.export(str(tmp_path_factory.mktemp('tree')), 32, 2, seed=3, num_frames=5)


@pytest.fixture
def tree_copy(rendered_tree, tmp_path):
  root = tmp_path / 'tree'
  shutil.copytree(rendered_tree, root)
  return str(root)


def _edit_scene(root, index, **fields):
  path = os.path.join(root, '0', 'metadata.json')
  with open(path) as f:
    metadata = json.load(f)
  metadata['scenes'][index].update(fields)
  with open(path, 'w') as f:
    json.dump(metadata, f)   # NaN and Infinity as Python's json writes them
  return path


@pytest.mark.parametrize('field, value, expected', [
    ('speed', [float('nan'), 0.0, 1.0], "'speed' [nan, 0.0, 1.0]: expected 3 finite numbers"),
    ('speed', [0.0, float('inf'), 1.0], "'speed' [0.0, inf, 1.0]: expected 3 finite numbers"),
    ('speed', ['fast', 0, 1], "'speed' ['fast', 0, 1]: expected 3 finite numbers"),
    ('time_step', 0, "'time_step' 0: expected a finite number of seconds > 0"),
    ('time_step', -0.1, "'time_step' -0.1: expected a finite number of seconds > 0"),
    ('time_step', float('nan'), "'time_step' nan: expected a finite number of seconds > 0"),
])
def test_a_tree_with_an_impossible_speed_or_time_step_is_refused_naming_the_file_and_field(tree_copy, field, value,
                                                                                         expected):
  metadata = _edit_scene(tree_copy, 1, **{field: value})
  before = _snapshot(tree_copy)
  with pytest.raises(cli.UserError) as raised:
    tree_source.open_tree(tree_copy)
  assert str(raised.value).startswith(f'--stillbox_tree {tree_copy}: not a Still Box tree: {metadata}: scenes[1]: '
                                      f'{expected}'), raised.value
  assert _snapshot(tree_copy) == before


@pytest.mark.parametrize('value, shown', [(-2.5, 'values below 0 (min -2.5 m); expected depths >= 0 m'),
                                          (float('nan'), 'with non-finite values')])
def test_a_negative_or_nan_depth_is_refused_naming_the_npy_file(tree_copy, value, shown):
  with open(os.path.join(tree_copy, '0', 'metadata.json')) as f:
    name = json.load(f)['scenes'][1]['depth'][2]
  path = os.path.join(tree_copy, '0', name)
  depth = np.load(path)
  depth[3, 4] = value
  np.save(path, depth)
  source = tree_source.open_tree(tree_copy)   # scene 0 is read at opening; scene 1 when it is read
  assert source[0]['id'] == '0/0'
  with pytest.raises(tree.StillBoxFormatError) as raised:
    source[1]
  assert str(raised.value).startswith(f'{path}: ') and shown in str(raised.value), raised.value


def test_zero_speed_pairs_are_skipped_and_counted_not_averaged_in(tree_copy, tmp_path):
  from flax import nnx

  from depthnet_jax.evaluation import evaluate, report
  from depthnet_jax.model import models
  moving = tmp_path / 'moving'   # the same tree without the scene that stands still
  shutil.copytree(tree_copy, moving)
  with open(moving / '0' / 'metadata.json') as f:
    metadata = json.load(f)
  metadata['scenes'] = metadata['scenes'][:1]
  (moving / '0' / 'metadata.json').write_text(json.dumps(metadata))
  _edit_scene(tree_copy, 1, speed=[0.0, 0.0, 0.0])
  model = nnx.split(models.ConstantDepth(17.5), nnx.Param, nnx.BatchStat)
  for protocol in ('original', 'followup'):
    still = evaluate.evaluate(*model, tree_source.open_tree(tree_copy), protocol=protocol, batch_size=4)
    alone = evaluate.evaluate(*model, tree_source.open_tree(str(moving)), protocol=protocol, batch_size=4)
    assert (still.pairs, still.skipped, still.images) == (4, 2, alone.images) and alone.skipped == 0
    assert still.metrics == pytest.approx(alone.metrics, rel=1e-6) and still.pixels == alone.pixels
    assert still.displacement == alone.displacement == (0.3, 0.3)
    text = report.report(still, 'ckpt', tree_copy, 3)
    assert '# 2 pairs skipped: their camera did not move (speed 0)' in text
    assert report.to_json(still, checkpoint={}, data={}, shift=3)['skipped_pairs'] == 2


def test_a_tree_whose_every_camera_stands_still_is_one_error_line(tree_copy, random_checkpoint, tmp_path, capsys):
  from depthnet_jax.evaluation import command
  for scene in (0, 1):
    _edit_scene(tree_copy, scene, speed=[0.0, 0.0, 0.0])
  out = tmp_path / 'out'
  out.mkdir()
  before = _snapshot(tmp_path)
  code = command.main(['--checkpoint', random_checkpoint, '--stillbox_tree', tree_copy, '--json',
                       str(out / 'eval.json'), '--batch_size', '4'])
  line = _one_error_line(capsys.readouterr().err)
  assert code == 1
  assert line == (f'error: --stillbox_tree {tree_copy}: the camera of every scene stands still (speed 0: all 4 '
                  'pairs skipped, nothing to measure); expected scenes whose camera moves'), line
  assert _snapshot(tmp_path) == before


# --- Metadata: checkpoints ---------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def recorded_checkpoint(tmp_path_factory):
  """A model checkpoint recording a 64x64 training size, 90 deg and 0.3 m (NumPy-drawn weights)."""
  from depthnet_jax.checkpoints import checkpointing
  from depthnet_jax.testing.random_models import random_depthnet
  path = tmp_path_factory.mktemp('recorded') / 'ckpt'
  checkpointing.save_model(path, random_depthnet(), metadata={'image_size': [64, 64], 'fov': 90.0,
                                                               'displacement': 0.3})
  return str(path)


@pytest.mark.parametrize('field, value, expected', [
    ('image_size', [0, 64], "'image_size' [0, 64]: expected [height, width], two integers from 1 to 16384"),
    ('image_size', [64], "'image_size' [64]: expected [height, width]"),
    ('image_size', [64.5, 64], "'image_size' [64.5, 64]: expected [height, width]"),
    ('image_size', [10**6, 64], "'image_size' [1000000, 64]: expected [height, width]"),
    ('fov', 0.0, "'fov' 0.0: expected a number of degrees in (0, 180)"),
    ('fov', 180, "'fov' 180: expected a number of degrees in (0, 180)"),
    ('fov', 'wide', "'fov' 'wide': expected a number of degrees in (0, 180)"),
    ('displacement', 0.0, "'displacement' 0.0: expected a finite number of metres > 0"),
    ('displacement', -0.3, "'displacement' -0.3: expected a finite number of metres > 0"),
    ('displacement', float('inf'), "'displacement' inf: expected a finite number of metres > 0"),
])
def test_an_impossible_recorded_geometry_is_refused_naming_the_file_and_field(recorded_checkpoint, tmp_path, field,
                                                                             value, expected):
  from depthnet_jax.checkpoints import checkpointing, loading
  from depthnet_jax.infer import checkpoint_input
  checkpoint = tmp_path / 'ckpt'
  shutil.copytree(recorded_checkpoint, checkpoint, ignore=shutil.ignore_patterns('model'))   # the config suffices
  metadata = checkpoint / checkpointing.CONFIG_ITEM / 'metadata'
  config = json.loads(metadata.read_text())
  config[field] = value
  metadata.write_text(json.dumps(config))
  before = _snapshot(tmp_path)
  with pytest.raises(checkpointing.CheckpointError) as raised:
    loading.checkpoint_info(checkpoint)
  assert str(raised.value).startswith(f'{metadata}: {expected}'), raised.value
  with pytest.raises(checkpoint_input.CheckpointInputError, match=f'^--checkpoint: {re.escape(str(metadata))}: '):
    checkpoint_input.info(str(checkpoint), 'best')
  assert _snapshot(tmp_path) == before


def test_the_recorded_geometry_read_back_and_another_size_is_a_note(recorded_checkpoint):
  from depthnet_jax.checkpoints import loading
  from depthnet_jax.evaluation import command
  info = loading.checkpoint_info(recorded_checkpoint)
  assert (info.train_size, info.train_fov, info.displacement, info.displacement_recorded) == ((64, 64), 90.0, 0.3,
                                                                                            True)
  assert command.geometry_note(info, {'height': 64, 'width': 64}, 90.0) is None
  note = command.geometry_note(info, {'height': 32, 'width': 32}, 90.0)
  assert note == (f'note: --checkpoint {recorded_checkpoint} was trained at 64x64, the data is 32x32 (width x '
                  'height): evaluated at the data\'s size, not resized; its depths assume the focal length it '
                  'learned, so expect them scaled by about 2 (f_train / f_data; infer.py resizes to the training '
                  'focal length)')
  note = command.geometry_note(info, {'height': 64, 'width': 64}, 60.0)
  assert 'trained at a FOV of 90 deg, the data\'s is 60 deg' in note and 'scaled by about 0.577' in note
