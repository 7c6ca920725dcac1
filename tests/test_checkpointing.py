"""Model checkpoints: round trip, refusal to clobber, atomic replacement."""

import jax
import numpy as np
import pytest
from flax import nnx

from depthnet_jax import checkpointing
import random_models


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
