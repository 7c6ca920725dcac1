"""Importing DepthNet checkpoints: options, name and layout mapping, errors a user can act on, the CLI."""

import collections
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from depthnet_jax import checkpointing, models, torch_import
from depthnet_jax.torch_import import TorchCheckpointError
import torch_reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def reference():
  torch.manual_seed(0)
  return torch_reference.randomize(torch_reference.TorchDepthNet(batch_norm=True, depth_activation='elu'), seed=2)


@pytest.fixture(scope='module')
def checkpoint(reference, tmp_path_factory):
  path = tmp_path_factory.mktemp('ckpt') / 'DepthNet_elu_bn_64.pth.tar'
  torch_reference.save(torch_reference.checkpoint_dict(reference, batch_norm=True, depth_activation='elu'),
                       path, legacy=True)
  return path


def _save(tmp_path, obj, name='x.pth.tar', legacy=False):
  path = tmp_path / name
  torch_reference.save(obj, path, legacy=legacy)
  return path


def _ckpt(reference, **changes):
  ckpt = torch_reference.checkpoint_dict(reference, batch_norm=True, depth_activation='elu')
  ckpt['state_dict'] = collections.OrderedDict(ckpt['state_dict'])
  ckpt.update(changes)
  return ckpt


def _leaves(model):
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model).to_pure_dict())]


def test_options_and_metadata_come_from_the_checkpoint(reference, checkpoint):
  state, options, info = torch_import.read_checkpoint(checkpoint)
  assert options == dict(batch_norm=True, depth_activation='elu', clamp=False, with_confidence=False)
  assert info['epoch'] == 55 and info['best_error'] == pytest.approx(4.65)
  assert info['source_format'] == 'legacy' and info['module_prefix_stripped']
  # Every tensor but the 14 BatchNorm layers' num_batches_tracked counters.
  assert info['num_tensors'] == len(reference.state_dict()) - 14 == 92
  model = torch_import.load(checkpoint)
  assert model.deterministic and model.conv1.bn.use_running_average  # eval mode


def test_layouts_are_mapped(reference, checkpoint):
  model = torch_import.load(checkpoint)
  sd = reference.state_dict()
  np.testing.assert_array_equal(np.asarray(model.conv3_1.conv.kernel[...]),
                                sd['conv3_1.0.weight'].numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(np.asarray(model.deconv4.up.kernel[...]),
                                sd['deconv4.0.weight'].numpy()[:, :, ::-1, ::-1].transpose(2, 3, 0, 1))
  np.testing.assert_array_equal(np.asarray(model.deconv4.block.bn.var[...]), sd['deconv4.2.running_var'].numpy())
  np.testing.assert_array_equal(np.asarray(model.conv6.bn.scale[...]), sd['conv6.1.weight'].numpy())


def test_published_layout_without_module_prefix(reference, tmp_path):
  """Published checkpoints have no `module.` prefix; a bare state_dict must be told its activation."""
  path = _save(tmp_path, _ckpt(reference, state_dict=reference.state_dict()))
  _, _, info = torch_import.read_checkpoint(path)
  assert not info['module_prefix_stripped']
  bare = _save(tmp_path, reference.state_dict(), 'bare.pth')
  with pytest.raises(TorchCheckpointError, match='depth activation'):
    torch_import.load(bare)
  model = torch_import.load(bare, depth_activation='elu')
  assert model.options() == dict(batch_norm=True, depth_activation='elu', clamp=False, with_confidence=False)
  for a, b in zip(_leaves(model), _leaves(torch_import.load(path))):
    np.testing.assert_array_equal(a, b)


def test_overrides_replace_checkpoint_options(checkpoint):
  model = torch_import.load(checkpoint, clamp=True, depth_activation='none')
  assert model.clamp and model.depth_activation is None


def test_missing_key_names_key_and_shape(reference, tmp_path):
  ckpt = _ckpt(reference)
  del ckpt['state_dict']['module.conv3.1.running_var']
  with pytest.raises(TorchCheckpointError, match=r'missing key conv3\.1\.running_var \(expected shape \(128,\)\)'):
    torch_import.load(_save(tmp_path, ckpt))


def test_extra_key_is_reported(reference, tmp_path):
  ckpt = _ckpt(reference)
  ckpt['state_dict']['module.conv7.0.weight'] = torch.zeros(3, 3)
  with pytest.raises(TorchCheckpointError, match=r'unexpected key conv7\.0\.weight \(shape \(3, 3\)\)'):
    torch_import.load(_save(tmp_path, ckpt))


def test_wrong_shape_names_expected_shape_and_hints_at_coordinate_channels(reference, tmp_path):
  ckpt = _ckpt(reference)
  ckpt['state_dict']['module.conv1.0.weight'] = torch.zeros(32, 8, 3, 3)
  with pytest.raises(TorchCheckpointError,
                     match=r'conv1\.0\.weight has shape \(32, 8, 3, 3\), expected \(32, 6, 3, 3\) \(a network with 8'):
    torch_import.load(_save(tmp_path, ckpt))


def test_batch_norm_flag_inconsistent_with_tensors(reference, tmp_path):
  with pytest.raises(TorchCheckpointError, match='options say batch_norm=False'):
    torch_import.load(_save(tmp_path, _ckpt(reference, bn=False)))


def test_unknown_architecture(reference, tmp_path):
  with pytest.raises(TorchCheckpointError, match="unknown architecture 'FlowNetS'"):
    torch_import.load(_save(tmp_path, _ckpt(reference, arch='FlowNetS')))


def test_other_normalisation_is_refused(reference, tmp_path):
  with pytest.raises(TorchCheckpointError, match='input mean'):
    torch_import.load(_save(tmp_path, _ckpt(reference, mean=[0.485, 0.456, 0.406])))


def test_not_a_depthnet_checkpoint(tmp_path):
  with pytest.raises(TorchCheckpointError, match='neither the checkpoint dict'):
    torch_import.load(_save(tmp_path, {'model': 'resnet', 'weights': [1, 2]}))


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'depthnet_jax.torch_import', *map(str, args)], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))


def test_cli_converts_to_an_orbax_checkpoint_that_loads_back(checkpoint, tmp_path):
  out = tmp_path / 'imported'
  result = _cli(checkpoint, out)
  assert result.returncode == 0, result.stderr
  assert 'legacy torch format, module. prefix stripped' in result.stdout
  assert "DepthNet(batch_norm=True, depth_activation='elu', clamp=False, with_confidence=False)" in result.stdout
  assert '10,290,473 parameters' in result.stdout
  loaded = checkpointing.load_model(out)
  assert loaded.deterministic
  for a, b in zip(_leaves(loaded), _leaves(torch_import.load(checkpoint))):
    np.testing.assert_array_equal(a, b)
  config = checkpointing.read_model_config(out)
  assert config['source'] == str(checkpoint) and config['epoch'] == 55
  assert not [p for p in os.listdir(tmp_path) if 'tmp' in p]  # no temporary left beside it

  # An existing, non-empty output is not replaced unless asked.
  again = _cli(checkpoint, out)
  assert again.returncode == 1 and 'not empty' in again.stderr
  assert _cli(checkpoint, out, '--overwrite', '--clamp').returncode == 0
  assert checkpointing.read_model_config(out)['clamp'] is True


def test_cli_failure_leaves_nothing_behind(reference, tmp_path):
  ckpt = _ckpt(reference)
  del ckpt['state_dict']['module.predict_depth2.bias']
  bad = _save(tmp_path, ckpt)
  out = tmp_path / 'out'
  result = _cli(bad, out)
  assert result.returncode == 1
  assert 'missing key predict_depth2.bias (expected shape (1,))' in result.stderr
  assert 'Traceback' not in result.stderr
  assert sorted(os.listdir(tmp_path)) == ['x.pth.tar']

  truncated = tmp_path / 'cut.pth.tar'
  truncated.write_bytes(bad.read_bytes()[:5000])
  result = _cli(truncated, out)
  assert result.returncode == 1 and 'truncated' in result.stderr and not out.exists()
