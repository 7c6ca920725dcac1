"""Model checkpoints: round trip, refusal to clobber, atomic replacement."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from depthnet_jax.checkpoints import checkpointing
from depthnet_jax.testing import random_models


def _leaves(model):
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model).to_pure_dict())]


@pytest.fixture(scope='module')
def model():
  net = random_models.random_depthnet(3, clamp=True)   # NumPy weights: no initialiser compiles
  net.conv1.bn.mean[...] = np.arange(32, dtype=np.float32)  # a non-default statistic must survive too
  return net


def test_round_trip_keeps_weights_statistics_and_options(model, tmp_path):
  out = checkpointing.save_model(tmp_path / 'ckpt', model, metadata={'note': 'test'})
  loaded = checkpointing.load_model(out)
  assert loaded.options() == model.options()
  assert loaded.deterministic and loaded.conv1.bn.use_running_average
  for a, b in zip(_leaves(loaded), _leaves(model)):
    np.testing.assert_array_equal(a, b)
  assert checkpointing.read_model_config(out)['note'] == 'test'


def test_existing_output_is_kept_and_overwrite_replaces_only_a_checkpoint(model, tmp_path):
  target = tmp_path / 'ckpt'
  target.mkdir()
  (target / 'precious.txt').write_text('keep me')
  with pytest.raises(FileExistsError, match='not empty'):
    checkpointing.save_model(target, model)
  with pytest.raises(FileExistsError, match='not a depthnet-jax model checkpoint.*precious.txt'):
    checkpointing.save_model(target, model, overwrite=True)
  assert [p.name for p in target.iterdir()] == ['precious.txt'] and (target / 'precious.txt').read_text() == 'keep me'
  previous = tmp_path / 'previous'
  checkpointing.save_model(previous, model, metadata={'note': 'old'})
  checkpointing.save_model(previous, model, metadata={'note': 'new'}, overwrite=True)
  assert checkpointing.read_model_config(previous)['note'] == 'new'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['ckpt', 'previous']  # no temporary or old copy left
  checkpointing.load_model(previous)


def test_empty_directory_is_used(model, tmp_path):
  (tmp_path / 'empty').mkdir()
  checkpointing.save_model(tmp_path / 'empty', model)
  assert checkpointing.read_model_config(tmp_path / 'empty')['clamp'] is True


def test_not_a_checkpoint(tmp_path):
  with pytest.raises(FileNotFoundError, match='not a depthnet-jax model checkpoint'):
    checkpointing.load_model(tmp_path)


def _previous_layout_save(directory, step, params, stats, opt_state, info):
  """A training checkpoint exactly as depthnet-jax wrote it before TrainState (commit 922f91c and earlier):
  the `train` item held the step and an RNG key that nothing read; StandardSave for every array item."""
  from depthnet_jax.checkpoints import integrity
  model = nnx.merge_state(params, stats).to_pure_dict()
  opt = {f'{i:05d}': x for i, x in enumerate(jax.tree.leaves(opt_state))}
  train = {'step': np.asarray(step, np.int32), 'rng': np.asarray([0, 7], np.uint32)}
  checksums = integrity.checksum_record({'model': model, 'opt_state': opt, 'train': train})
  manager = ocp.CheckpointManager(os.path.join(directory, 'checkpoints'), options=ocp.CheckpointManagerOptions(
      enable_async_checkpointing=False))
  manager.save(step, args=ocp.args.Composite(
      model=ocp.args.StandardSave(model),
      model_config=ocp.args.JsonSave(dict(info, source='training', step=step, checksums='sha256')),
      opt_state=ocp.args.StandardSave(opt), train=ocp.args.StandardSave(train),
      data=ocp.args.JsonSave({'next_step': step, 'seed': 0, 'batch_size': 4}),
      checksums=ocp.args.JsonSave(checksums)))
  manager.close()


def test_a_training_checkpoint_of_the_previous_layout_resumes(model, tmp_path):
  """Checkpoints written before the train state lost its unused RNG key resume: same arrays, same step."""
  import jax.numpy as jnp

  from depthnet_jax.checkpoints.train_state import TrainState
  from depthnet_jax.train import optim
  _, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  tx = optim.create_optimizer('sgd', 0.01)
  # A non-zero momentum buffer, so that the restored optimizer state is not the template's zeros.
  opt_state = jax.tree.map(lambda x: x + 0.5 if jnp.issubdtype(x.dtype, jnp.floating) else x, tx.init(params))
  _previous_layout_save(str(tmp_path), 5, params, stats, opt_state, model.options())
  template = TrainState(params, stats, tx.init(params), jnp.zeros((), jnp.int32))
  with checkpointing.TrainCheckpoints(tmp_path) as ckpts:
    restored = ckpts.restore_latest(template)
  assert isinstance(restored, TrainState) and int(restored.step) == 5
  for got, want in zip(jax.tree.leaves((restored.params, restored.batch_stats, restored.opt_state)),
                       jax.tree.leaves((params, stats, opt_state))):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  # And what this version writes resumes too (with no RNG key in it).
  with checkpointing.TrainCheckpoints(tmp_path / 'new', async_save=False) as ckpts:
    ckpts.save(7, restored._replace(step=jnp.asarray(7, jnp.int32)), model.options(), {'next_step': 7})
  with checkpointing.TrainCheckpoints(tmp_path / 'new') as ckpts:
    again = ckpts.restore_latest(template)
  assert int(again.step) == 7
  record = checkpointing.integrity.restore(str(tmp_path / 'new' / 'checkpoints' / '7'),
                                          {'checksums': ocp.args.JsonRestore()})['checksums']
  assert sorted(record['items']['train']) == ['step']


def test_every_command_takes_the_same_best_checkpoint_of_a_workdir(random_checkpoint, tmp_path):
  """best/ holds two steps only while a better one replaces the other: infer.py, evaluate and eval_only all take
  the one with the lower recorded eval error (here the older step)."""
  import json
  import shutil

  from depthnet_jax.checkpoints import loading
  workdir = tmp_path / 'run'
  for step, error in ((5, 3.0), (9, 7.0)):
    target = workdir / 'best' / str(step)
    shutil.copytree(random_checkpoint, target)
    config_file = target / 'model_config' / 'metadata'
    config = json.loads(config_file.read_text())
    config['eval_metrics'] = {'depth_error': error}
    config_file.write_text(json.dumps(config))
  expected = str(workdir / 'best' / '5')
  assert loading.resolve_checkpoint(workdir) == expected
  assert loading.checkpoint_info(workdir).resolved == expected
  assert loading.eval_checkpoint_path(str(workdir)) == expected
  assert loading.resolve_checkpoint(workdir, 'latest') == expected   # no checkpoints/: best is what there is
