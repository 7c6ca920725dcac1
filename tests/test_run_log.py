"""A run's scalars from its TensorBoard event files (`depthnet_jax.run_log`) and the learning-curve picture
(`scripts/learning_curve.py`): on the event files train.py itself wrote (conftest's tiny run), on a resumed run's
second file, and on files cut short or damaged."""

import importlib.util
import json
import os
import re
import shutil
import struct

import numpy as np
import pytest

from depthnet_jax.checkpoints import checkpointing, loading
from depthnet_jax.evaluation import charts, evaluate, run_log
from depthnet_jax.model import models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script():
  spec = importlib.util.spec_from_file_location('learning_curve', os.path.join(REPO, 'scripts', 'learning_curve.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _event(step, tag, value, wall_time=1.0):
  """A summary-v2 scalar event as clu's writer writes it (a float32 scalar tensor)."""
  from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2
  tensor = tensor_pb2.TensorProto(dtype=1, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                  tensor_content=np.float32(value).tobytes())
  summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, tensor=tensor)])
  return event_pb2.Event(wall_time=wall_time, step=step, summary=summary)


def _write_events(folder, events, start=2000000000):
  """An event file written by TensorBoard's own writer (TFRecord framing, CRCs), named as train.py's are."""
  from tensorboard.summary.writer.event_file_writer import EventFileWriter
  before = set(os.listdir(folder))
  writer = EventFileWriter(str(folder), filename_suffix='')
  for e in events:
    writer.add_event(e)
  writer.close()
  (new,) = set(os.listdir(folder)) - before
  # TensorBoard names a file events.out.tfevents.<start time>.<host>...; resumed runs sort after the first
  parts = new.split('.')
  parts[3] = str(start)
  os.rename(os.path.join(folder, new), os.path.join(folder, '.'.join(parts)))


def test_the_scalars_train_py_wrote(tiny_run):
  workdir, printed = tiny_run
  scalars = run_log.read_scalars(workdir)
  with open(os.path.join(workdir, 'config.json')) as f:
    config = json.load(f)
  steps = list(range(config['log_every_steps'], config['num_train_steps'] + 1, config['log_every_steps']))
  assert [s for s, _ in scalars['train_loss']] == steps
  assert all(np.isfinite(v) and v > 0 for _, v in scalars['train_loss'])
  assert [v for _, v in scalars['train_learning_rate']] == pytest.approx([config['learning_rate']] * len(steps))
  # the evaluation's figure is the one the best checkpoint records
  best = checkpointing.read_model_config(loading.eval_checkpoint_path(workdir, 'best'))
  evals = dict(scalars['eval_depth_error'])
  assert evals[best['step']] == pytest.approx(best['eval_metrics']['depth_error'], rel=1e-6)
  assert 'eval_examples' not in scalars   # images are not scalars


def test_a_resumed_run_keeps_the_last_value_of_a_step_logged_twice(tiny_run, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(tiny_run[0], workdir)
  first = run_log.read_scalars(str(workdir))['train_loss']
  last_step = first[-1][0]
  # the resumed process logs the last step again (from its checkpoint) and one more
  _write_events(workdir, [_event(last_step, 'train_loss', 123.0), _event(last_step + 2, 'train_loss', 7.0)],
                start=4000000000)
  again = run_log.read_scalars(str(workdir))['train_loss']
  assert again[:-2] == first[:-1]
  assert again[-2:] == [(last_step, 123.0), (last_step + 2, 7.0)]


def test_an_unfinished_record_is_ignored_and_a_damaged_file_named(tmp_path):
  _write_events(tmp_path, [_event(1, 'train_loss', 5.0), _event(2, 'train_loss', 4.0)])
  (path,) = run_log.event_files(str(tmp_path))
  with open(path, 'ab') as f:   # a writer killed in the middle of a record: its length and part of its data
    f.write(struct.pack('<Q', 500) + b'\0' * 40)
  assert run_log.read_scalars(str(tmp_path))['train_loss'] == [(1, 5.0), (2, 4.0)]
  with open(path, 'r+b') as f:   # bytes of the first record overwritten
    f.seek(20)
    f.write(b'\xff' * 30)
  with pytest.raises(run_log.RunLogError, match=f'{path}: not a readable TensorBoard event file'):
    run_log.read_scalars(str(tmp_path))
  with pytest.raises(run_log.RunLogError, match='no TensorBoard event files'):
    run_log.read_scalars(str(tmp_path / 'missing'))


def test_the_learning_curve_picture_and_points(tiny_run, tmp_path, capsys):
  script = _script()
  out, points = tmp_path / 'curve.png', tmp_path / 'curve.csv'
  assert script.main(['--workdir', tiny_run[0], '--out', str(out), '--baseline', '20', '--csv', str(points)]) == 0
  import imageio.v3 as iio
  image = iio.imread(out)
  assert image.shape == (720, 960, 3) and len(np.unique(image.reshape(-1, 3), axis=0)) > 10
  for color in (charts.BLUE, charts.LIGHT_BLUE, charts.RED, charts.BASELINE):   # each series, the baseline
    assert (image == [int(color[i:i + 2], 16) for i in (1, 3, 5)]).all(axis=-1).any(), color
  rows = points.read_text().splitlines()
  scalars = run_log.read_scalars(tiny_run[0])
  assert rows[0] == 'tag,step,value'
  assert len(rows) - 1 == sum(len(scalars[t]) for t in script.TAGS)
  assert 'wrote' in capsys.readouterr().out
  # nothing existing is replaced without --overwrite; mistakes are one error line
  for argv, message in [
      (['--workdir', tiny_run[0], '--out', str(out)], 'exists already'),
      (['--workdir', str(tmp_path / 'nope'), '--out', str(tmp_path / 'x.png')], 'does not exist'),
      (['--workdir', str(tmp_path), '--out', str(tmp_path / 'x.png')], 'no TensorBoard event files'),
      (['--workdir', tiny_run[0], '--out', str(tmp_path / 'x.jpg')], 'ending in .png'),
      (['--workdir', tiny_run[0], '--out', str(tmp_path / 'y.png'), '--baseline', '-1'], 'expected a depth error')]:
    assert script.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and message in err[0], err
  assert not (tmp_path / 'x.png').exists() and not (tmp_path / 'y.png').exists()


def test_the_constant_depth_model_gives_the_metrics_of_a_constant_prediction(synth_tiny_dir):
  """`models.ConstantDepth` through the evaluation (the demo's, reference.py's and the learning curve's baseline,
  in batches of 4) = `losses.depth_metrics` of that depth everywhere, over every pair of the split at once."""
  import jax
  from flax import nnx

  from depthnet_jax.data import input_pipeline
  from depthnet_jax.model import losses
  source = input_pipeline.open_source('tfds_stillbox/synth_tiny', 'validation', synth_tiny_dir)
  result = evaluate.evaluate(*nnx.split(models.ConstantDepth(17.5), nnx.Param, nnx.BatchStat), source,
                             protocol='original', batch_size=4)
  batch = next(iter(input_pipeline.eval_dataset(source, global_batch_size=8)))   # the 6 pairs and 2 of padding
  assert result.pairs == 6 == batch['mask'].sum()
  h, w = models.output_sizes(*batch['depth'].shape[1:])[0]
  expected = jax.jit(losses.depth_metrics)(np.full((8, h, w), 17.5, np.float32), batch['depth'], batch['mask'])
  assert result.metrics == pytest.approx({k: float(v) for k, v in expected.items()}, rel=1e-6)


def test_compare_with_a_published_curve(tiny_run, tmp_path, capsys):
  """`--compare CSV`: the run against its own points is 0 % apart; against points 10 % higher, 10 % (the steps
  both logged); a CSV of another layout is one error line naming the file and line."""
  script = _script()
  points = tmp_path / 'published.csv'
  assert script.main(['--workdir', tiny_run[0], '--out', str(tmp_path / 'a.png'), '--csv', str(points)]) == 0
  capsys.readouterr()
  assert script.main(['--workdir', tiny_run[0], '--out', str(tmp_path / 'b.png'), '--compare', str(points)]) == 0
  out = capsys.readouterr().out
  assert re.search(r'train_loss: \d+ common steps .* max 0\.00% .* mean 0\.00%', out), out
  rows = points.read_text().splitlines()
  higher = tmp_path / 'higher.csv'
  higher.write_text('\n'.join([rows[0]] + [f'{t},{s},{float(v) * 1.1!r}' for t, s, v in
                                           (r.split(',') for r in rows[1:])]) + '\n')
  assert script.main(['--workdir', tiny_run[0], '--out', str(tmp_path / 'c.png'), '--compare', str(higher)]) == 0
  out = capsys.readouterr().out
  assert re.search(r'train_loss: \d+ common steps .* max 9\.09% .* mean 9\.09%', out), out   # |x - 1.1x| / 1.1x
  bad = tmp_path / 'bad.csv'
  bad.write_text('tag,step,value\ntrain_loss,ten,1.0\n')
  assert script.main(['--workdir', tiny_run[0], '--out', str(tmp_path / 'd.png'), '--compare', str(bad)]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and f'{bad}: line 2' in err[0], err
  assert not (tmp_path / 'd.png').exists()


def test_train_pys_event_writer_is_read_by_tensorboard(tmp_path):
  """`train.event_writer` (TensorFlow-free) writes what TensorBoard's own reader takes: scalar tensors, PNG pictures
  that decode to the pixels written, the hparams plugin's session start; and run_log reads its scalars."""
  import cv2
  from tensorboard.backend.event_processing import event_accumulator

  from depthnet_jax.train import event_writer
  pictures = np.random.default_rng(0).integers(0, 256, (2, 8, 12, 3), dtype=np.uint8)
  writer = event_writer.EventWriter(str(tmp_path))
  writer.write_hparams({'learning_rate': 0.01, 'dataset': 'x', 'batch_norm': True})
  writer.write_scalars(2, {'train_loss': 3.5, 'train_lr': 0.01})
  writer.write_scalars(4, {'train_loss': 2.25, 'train_lr': 0.01})
  writer.write_images(4, {'eval_examples': pictures})
  writer.close()
  assert run_log.read_scalars(str(tmp_path))['train_loss'] == [(2, 3.5), (4, 2.25)]
  events = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={'tensors': 0})
  events.Reload()
  assert {'train_loss', 'train_lr', 'eval_examples', '_hparams_/session_start_info'} <= set(events.Tags()['tensors'])
  assert events.SummaryMetadata('train_loss').plugin_data.plugin_name == 'scalars'
  assert events.SummaryMetadata('eval_examples').plugin_data.plugin_name == 'images'
  (image_event,) = events.Tensors('eval_examples')
  width, height, *pngs = image_event.tensor_proto.string_val
  assert (int(width), int(height), len(pngs)) == (12, 8, 2)
  for png, picture in zip(pngs, pictures):
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1], picture)
