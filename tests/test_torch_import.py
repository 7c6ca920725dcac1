"""Importing DepthNet checkpoints: options, name and layout mapping, errors a user can act on, the CLI.

Every checkpoint here is written as the original writes it (depthnet_jax/testing/torch_reference.py): train.py's
dict with DataParallel's `module.` names and its `arch` string, or the 2017 layout of the published weights.
"""

import contextlib
import copy
import hashlib
import io
import os
import subprocess
import sys

import imageio.v3 as iio
import jax
import numpy as np
import pytest
import torch
from flax import nnx

from depthnet_jax.checkpoints import checkpointing, import_command, torch_import
from depthnet_jax.checkpoints.torch_import import TorchCheckpointError
from depthnet_jax.testing import torch_reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def reference():
  torch.manual_seed(0)
  return torch_reference.randomize(torch_reference.TorchDepthNet(batch_norm=True, depth_activation='elu'), seed=2)


@pytest.fixture(scope='module')
def plain():
  """A DepthNet without BatchNorm (its tensors differ); clamp and activation are set per test."""
  torch.manual_seed(1)
  return torch_reference.randomize(torch_reference.TorchDepthNet(), seed=3)


@pytest.fixture(scope='module')
def checkpoint(reference, tmp_path_factory):
  """`checkpoint.pth.tar` as the original's train.py writes it today (zip format, PyTorch >= 1.6)."""
  path = tmp_path_factory.mktemp('ckpt') / 'checkpoint.pth.tar'
  torch_reference.save(torch_reference.checkpoint_dict(reference), path, legacy=False)
  return path


@pytest.fixture(scope='module')
def published(reference, tmp_path_factory):
  """`DepthNet_elu_bn_64.pth.tar` in the 2017 layout of the published weights (legacy format)."""
  path = tmp_path_factory.mktemp('published') / 'DepthNet_elu_bn_64.pth.tar'
  torch_reference.save(torch_reference.checkpoint_dict_2017(reference), path, legacy=True)
  return path


def _save(tmp_path, obj, name='x.pth.tar', legacy=False):
  path = tmp_path / name
  torch_reference.save(obj, path, legacy=legacy)
  return path


def _ckpt(reference, **changes):
  """train.py's dict with some keys set to other values (`_without` drops keys)."""
  ckpt = torch_reference.checkpoint_dict(reference)
  ckpt.update(changes)
  return ckpt


def _without(ckpt, *keys):
  return {k: v for k, v in ckpt.items() if k not in keys}


def _variant(model, **attributes):
  """The same tensors under other command-line options (clamp and activation change no tensor)."""
  other = copy.copy(model)
  other.__dict__.update(attributes)
  return other


def _leaves(model):
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model).to_pure_dict())]


def _assert_same_weights(a, b):
  ours, theirs = _leaves(a), _leaves(b)
  assert len(ours) == len(theirs) > 0
  for x, y in zip(ours, theirs):
    np.testing.assert_array_equal(x, y)


def test_the_reference_writes_what_the_original_train_py_writes(reference):
  ckpt = torch_reference.checkpoint_dict(reference)
  assert list(ckpt) == ['epoch', 'arch', 'state_dict', 'best_error', 'bn', 'with_confidence',
                        'activation_function', 'clamp', 'mean', 'std']
  assert ckpt['arch'] == 'DepthNet_elu_bn' and ckpt['activation_function'] == 'elu'
  assert type(ckpt['best_error']) is float and type(ckpt['epoch']) is int and ckpt['bn'] is True
  assert ckpt['with_confidence'] is False and ckpt['clamp'] is False
  sd = ckpt['state_dict']
  assert all(k.startswith('module.') for k in sd) and len(sd) == 106  # 14 num_batches_tracked among them
  assert sd._metadata['module.conv1'] == {'version': 1} and '' in sd._metadata
  old = torch_reference.checkpoint_dict_2017(reference)
  assert 'best_EPE' in old and 'best_error' not in old and old['arch'] == 'DepthNet_elu_bn'
  assert not any(k.startswith('module.') for k in old['state_dict']) and len(old['state_dict']) == 92
  assert torch_reference.arch_string(batch_norm=False, activation_function=None, clamp=False) == 'DepthNet'


def test_options_and_metadata_come_from_the_checkpoint(reference, checkpoint):
  state, options, info = torch_import.read_checkpoint(checkpoint)
  assert options == dict(batch_norm=True, depth_activation='elu', clamp=False, with_confidence=False)
  assert info['arch'] == 'DepthNet_elu_bn' and info['epoch'] == 55 and info['best_error'] == pytest.approx(4.65)
  assert info['source_format'] == 'zip' and info['module_prefix_stripped']
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


def test_published_2017_layout_and_a_bare_state_dict(reference, checkpoint, published, tmp_path):
  """The published weights: 'best_EPE', no `module.` prefix, legacy format; a bare state_dict must be told its
  activation."""
  _, options, info = torch_import.read_checkpoint(published)
  assert options == dict(batch_norm=True, depth_activation='elu', clamp=False, with_confidence=False)
  assert not info['module_prefix_stripped'] and info['source_format'] == 'legacy'
  assert info['best_error'] == pytest.approx(4.65) and info['arch'] == 'DepthNet_elu_bn'
  _assert_same_weights(torch_import.load(published), torch_import.load(checkpoint))
  bare = _save(tmp_path, reference.state_dict(), 'bare.pth')
  with pytest.raises(TorchCheckpointError, match='depth activation'):
    torch_import.load(bare)
  model = torch_import.load(bare, depth_activation='elu')
  assert model.options() == dict(batch_norm=True, depth_activation='elu', clamp=False, with_confidence=False)
  _assert_same_weights(model, torch_import.load(checkpoint))


@pytest.mark.parametrize('arch, expected', [
    ('DepthNet', dict(batch_norm=False, depth_activation=None, clamp=False, with_confidence=False)),
    ('DepthNet_bn', dict(batch_norm=True, depth_activation=None, clamp=False, with_confidence=False)),
    ('DepthNet_elu', dict(batch_norm=False, depth_activation='elu', clamp=False, with_confidence=False)),
    ('DepthNet_elu_bn', dict(batch_norm=True, depth_activation='elu', clamp=False, with_confidence=False)),
    ('DepthNet_elu_bn_clamp', dict(batch_norm=True, depth_activation='elu', clamp=True, with_confidence=False)),
    ('DepthNet_clamp', dict(batch_norm=False, depth_activation=None, clamp=True, with_confidence=False)),
    ('DepthNet_confidence_elu_bn', dict(batch_norm=True, depth_activation='elu', clamp=False, with_confidence=True)),
    ('DepthNet_leaky_relu_bn', dict(batch_norm=True, depth_activation='leaky_relu', clamp=False,
                                    with_confidence=False)),
])
def test_arch_strings_of_the_original_are_parsed(arch, expected):
  assert torch_import.parse_arch(arch) == expected
  assert torch_import.arch_string(**expected) == arch


@pytest.mark.parametrize('arch', ['FlowNetS', 'depthnet_elu_bn', 'DepthNetV2', 'DepthNet-elu', ''])
def test_other_architectures_are_refused(arch):
  with pytest.raises(TorchCheckpointError, match=f"unknown architecture '{arch}'; only DepthNet checkpoints"):
    torch_import.parse_arch(arch)


@pytest.mark.parametrize('batch_norm, activation, clamp, legacy', [
    (False, None, False, False),   # 'DepthNet'
    (True, None, False, True),     # 'DepthNet_bn'
    (False, 'elu', False, True),   # 'DepthNet_elu'
    (True, 'elu', True, False),    # 'DepthNet_elu_bn_clamp'
])
def test_every_arch_of_the_family_imports(reference, plain, tmp_path, batch_norm, activation, clamp, legacy):
  """Before: anything but arch 'DepthNet' was 'unknown architecture'. Now each imports, with its options."""
  model = _variant(reference if batch_norm else plain, depth_activation=activation, clamp=clamp)
  ckpt = torch_reference.checkpoint_dict(model)
  path = _save(tmp_path, ckpt, f'{ckpt["arch"]}.pth.tar', legacy=legacy)
  _, options, info = torch_import.read_checkpoint(path)
  assert options == dict(batch_norm=batch_norm, depth_activation=activation, clamp=clamp, with_confidence=False)
  assert info['arch'] == ckpt['arch']


def test_arch_and_keys_that_disagree_are_refused_showing_both(reference, plain, tmp_path):
  with pytest.raises(TorchCheckpointError, match=r"contradicts itself: arch 'DepthNet_elu_bn' says "
                                                 r"batch_norm=True but the checkpoint's bn is False"):
    torch_import.load(_save(tmp_path, _ckpt(reference, bn=False)))
  with pytest.raises(TorchCheckpointError, match=r"arch 'DepthNet_elu_bn' says depth_activation='elu' but the "
                                                 r"checkpoint's activation_function is None \(give the activation"):
    torch_import.load(_save(tmp_path, _ckpt(reference, activation_function=None)))
  clamped = _ckpt(reference, clamp=True)
  with pytest.raises(TorchCheckpointError, match=r"says clamp=False but the checkpoint's clamp is True"):
    torch_import.load(_save(tmp_path, clamped))
  # An option given explicitly settles the disagreement about it (the CLI's --clamp / --no-clamp).
  assert torch_import.load(_save(tmp_path, clamped), clamp=False).spec.clamp is False
  with pytest.raises(TorchCheckpointError, match=r"arch 'DepthNet' says batch_norm=False"):
    torch_import.load(_save(tmp_path, _ckpt(reference, arch='DepthNet')))


def test_a_missing_key_is_supplied_by_the_arch(reference, tmp_path):
  """A dict with an arch but no activation_function (or bn, or clamp) key: the arch says what they were."""
  ckpt = _without(_ckpt(reference, arch='DepthNet_elu_bn_clamp'), 'activation_function', 'bn', 'clamp')
  _, options, _ = torch_import.read_checkpoint(_save(tmp_path, ckpt))
  assert options == dict(batch_norm=True, depth_activation='elu', clamp=True, with_confidence=False)
  ckpt = _without(_ckpt(reference, arch='DepthNet_bn'), 'activation_function')
  assert torch_import.load(_save(tmp_path, ckpt)).spec.depth_activation is None


def test_an_activation_the_network_cannot_run_is_named(reference, tmp_path):
  ckpt = torch_reference.checkpoint_dict(reference, activation_function='relu')
  assert ckpt['arch'] == 'DepthNet_relu_bn'
  path = _save(tmp_path, ckpt)
  with pytest.raises(TorchCheckpointError, match=r"activation 'relu' \(the checkpoint's activation_function\) "
                                                 r"cannot be run: DepthNet supports 'elu' .* and None"):
    torch_import.load(path)
  # Only in the arch: named as such.
  with pytest.raises(TorchCheckpointError, match=r"activation 'relu' \(arch 'DepthNet_relu_bn'\) cannot be run"):
    torch_import.load(_save(tmp_path, _without(ckpt, 'activation_function'), 'arch_only.pth.tar'))
  assert torch_import.load(path, depth_activation='elu').spec.depth_activation == 'elu'  # the override wins


def test_keys_of_the_wrong_type_are_refused(reference, tmp_path):
  with pytest.raises(TorchCheckpointError, match=r"bn is 'yes', expected True or False"):
    torch_import.load(_save(tmp_path, _ckpt(reference, bn='yes')))
  with pytest.raises(TorchCheckpointError, match=r'activation_function is 3, expected None or a string'):
    torch_import.load(_save(tmp_path, _ckpt(reference, activation_function=3)))
  with pytest.raises(TorchCheckpointError, match=r'arch is 7 \(int\), expected a string'):
    torch_import.load(_save(tmp_path, _ckpt(reference, arch=7)))


def test_overrides_replace_checkpoint_options(checkpoint):
  model = torch_import.load(checkpoint, clamp=True, depth_activation='none')
  assert model.spec.clamp and model.spec.depth_activation is None


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
  """bn and arch agree with each other (no BatchNorm) but not with the tensors."""
  with pytest.raises(TorchCheckpointError, match='options say batch_norm=False'):
    torch_import.load(_save(tmp_path, _ckpt(reference, bn=False, arch='DepthNet_elu')))


def test_unknown_architecture(reference, tmp_path):
  with pytest.raises(TorchCheckpointError, match="unknown architecture 'FlowNetS'"):
    torch_import.load(_save(tmp_path, _ckpt(reference, arch='FlowNetS')))


def test_other_normalisation_is_refused(reference, tmp_path):
  with pytest.raises(TorchCheckpointError, match='input mean'):
    torch_import.load(_save(tmp_path, _ckpt(reference, mean=[0.485, 0.456, 0.406])))
  with pytest.raises(TorchCheckpointError, match='input mean'):
    torch_import.load(_save(tmp_path, _ckpt(reference, std='0.2')))


def test_not_a_depthnet_checkpoint(tmp_path):
  with pytest.raises(TorchCheckpointError, match='neither the checkpoint dict'):
    torch_import.load(_save(tmp_path, {'model': 'resnet', 'weights': [1, 2]}))


# --- The CLI --------------------------------------------------------------------------------------------------


def _cli(*args):
  """The command as a user runs it (a new process)."""
  return subprocess.run([sys.executable, '-m', 'depthnet_jax.torch_import', *map(str, args)], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))


def _main(*args):
  """(exit code, stdout, stderr) of the command's main() in this process (same code path, no start-up cost)."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = import_command.main([str(a) for a in args])
  return code, out.getvalue(), err.getvalue()


def _snapshot(root):
  """{relative path: sha256} of every file under root, and the set of directories: the disk as it is."""
  files, dirs = {}, set()
  for base, subdirs, names in os.walk(root):
    dirs.update(os.path.relpath(os.path.join(base, d), root) for d in subdirs)
    for name in names:
      path = os.path.join(base, name)
      with open(path, 'rb') as f:
        files[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return files, dirs


def _one_error_line(err, *needles):
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), err
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])
  return lines[0]


def test_cli_converts_to_an_orbax_checkpoint_that_loads_back(checkpoint, tmp_path):
  out = tmp_path / 'imported'
  code, stdout, err = _main(checkpoint, out)
  assert code == 0, err
  assert 'zip torch format, module. prefix stripped' in stdout
  assert ("DepthNet(batch_norm=True, depth_activation='elu', clamp=False, with_confidence=False)  "
          "arch 'DepthNet_elu_bn', epoch 55, best error 4.65") in stdout
  assert '10,290,473 parameters' in stdout
  loaded = checkpointing.load_model(out)
  assert loaded.deterministic
  _assert_same_weights(loaded, torch_import.load(checkpoint))
  config = checkpointing.read_model_config(out)
  assert config['source'] == str(checkpoint) and config['epoch'] == 55 and config['arch'] == 'DepthNet_elu_bn'
  assert sorted(os.listdir(tmp_path)) == ['imported']  # no temporary left beside it

  # An existing, non-empty output is not replaced unless asked; with --overwrite, a previous checkpoint is.
  before = _snapshot(out)
  code, _, err = _main(checkpoint, out)
  assert code == 1
  _one_error_line(err, f'OUT_DIR {out} exists and is not empty', '--overwrite')
  assert _snapshot(out) == before
  result = _cli(checkpoint, out, '--overwrite', '--clamp')
  assert result.returncode == 0, result.stderr
  assert checkpointing.read_model_config(out)['clamp'] is True
  assert sorted(os.listdir(tmp_path)) == ['imported']


def test_cli_overwrite_never_deletes_the_input_or_other_files(checkpoint, tmp_path):
  """Before: `torch_import OUT_DIR/x.pth.tar OUT_DIR --overwrite` deleted OUT_DIR's files, the input among them,
  and wrote the checkpoint. Now: exit 1, one line naming both, every file as it was."""
  out = tmp_path / 'weights'
  out.mkdir()
  src = out / 'DepthNet_elu_bn_64.pth.tar'
  src.write_bytes(checkpoint.read_bytes())
  (out / 'notes.txt').write_text('trained on my drone footage, lr 0.01\n')
  before = _snapshot(tmp_path)
  result = _cli(src, out, '--overwrite')
  assert result.returncode == 1, result.stdout + result.stderr
  _one_error_line(result.stderr, f'checkpoint {src} is inside OUT_DIR {out}')
  assert result.stdout == ''
  assert _snapshot(tmp_path) == before


def test_cli_overwrite_of_a_checkpoint_holding_the_input(checkpoint, tmp_path):
  """A previous checkpoint with the input put inside it (under a name Orbax could use): still refused."""
  out = tmp_path / 'imported'
  assert _main(checkpoint, out)[0] == 0
  src = out / '_DepthNet.pth.tar'
  src.write_bytes(checkpoint.read_bytes())
  before = _snapshot(tmp_path)
  code, _, err = _main(src, out, '--overwrite')
  assert code == 1
  _one_error_line(err, f'checkpoint {src} is inside OUT_DIR {out}')
  # Through a symbolic link to the folder: the same folder.
  os.symlink(out, tmp_path / 'link')
  code, _, err = _main(tmp_path / 'link' / '_DepthNet.pth.tar', out, '--overwrite')
  assert code == 1 and 'is inside OUT_DIR' in _one_error_line(err)
  os.remove(tmp_path / 'link')
  assert _snapshot(tmp_path) == before


def _unwritable_dir(tmp_path):
  """A directory no file can be created in: a read-only one, or (as root, whom modes do not stop) /sys."""
  if os.geteuid() == 0:
    return '/sys'
  locked = tmp_path / 'locked'
  locked.mkdir()
  locked.chmod(0o555)
  return str(locked)


@pytest.mark.parametrize('case', ['missing', 'directory', 'checkpoint_directory', 'empty', 'truncated_zip',
                                  'truncated_legacy', 'garbage', 'image', 'wrong_dict', 'out_is_file',
                                  'out_unwritable', 'out_has_files', 'overwrite_other_files', 'usage',
                                  'bad_choice'])
def test_cli_user_errors_are_one_line_and_change_nothing(case, checkpoint, published, tmp_path):
  work = tmp_path / 'work'
  work.mkdir()
  src, out = work / 'DepthNet_elu_bn.pth.tar', work / 'out'
  src.write_bytes(checkpoint.read_bytes())
  args, needles = [src, out], []
  if case == 'missing':
    args, needles = [work / 'nope.pth.tar', out], [f'checkpoint {work / "nope.pth.tar"}: no such file']
  elif case == 'directory':
    args, needles = [work, tmp_path / 'out'], [f'checkpoint {work}: is a directory, expected a .pth.tar']
  elif case == 'checkpoint_directory':
    (work / 'ckpt' / checkpointing.CONFIG_ITEM).mkdir(parents=True)
    args, needles = [work / 'ckpt', out], ['is a directory', 'give it to infer.py --checkpoint as it is']
  elif case == 'empty':
    src.write_bytes(b'')
    needles = [f'{src}: empty file, not a torch checkpoint']
  elif case == 'truncated_zip':
    src.write_bytes(checkpoint.read_bytes()[:200_000])
    needles = [f'{src}: a truncated or corrupt zip checkpoint']
  elif case == 'truncated_legacy':
    src.write_bytes(published.read_bytes()[:200_000])
    needles = [f'{src}: storage', 'were expected (truncated file?)']
  elif case == 'garbage':
    src.write_bytes(np.random.default_rng(0).bytes(5000))
    needles = [f'{src}: not a torch checkpoint']
  elif case == 'image':  # the wrong file, e.g. a frame instead of the weights
    src = work / 'frame.png'
    iio.imwrite(src, np.zeros((8, 8, 3), np.uint8))
    args, needles = [src, out], [f'{src}: not a torch checkpoint']
  elif case == 'wrong_dict':
    torch_reference.save({'model': 'resnet', 'weights': torch.zeros(2)}, src, legacy=False)
    needles = [f'{src}: holds a dict with keys', 'neither the checkpoint dict']
  elif case == 'out_is_file':
    out.write_text('a file')
    needles = [f'OUT_DIR {out}: is a file, expected a directory']
  elif case == 'out_unwritable':
    out = os.path.join(_unwritable_dir(tmp_path), 'depthnet-import-test')
    args, needles = [src, out], [f'OUT_DIR {out}: cannot write in', 'expected a writable directory']
  elif case == 'out_has_files':
    out.mkdir()
    (out / 'notes.txt').write_text('mine')
    needles = [f'OUT_DIR {out} exists and is not empty (it holds notes.txt)']
  elif case == 'overwrite_other_files':
    out.mkdir()
    (out / 'notes.txt').write_text('mine')
    args, needles = [src, out, '--overwrite'], [f'OUT_DIR {out} is not a depthnet-jax model checkpoint',
                                                'overwrite replaces only a previous checkpoint']
  elif case == 'usage':
    args, needles = [src], ['the following arguments are required: out_dir']
  elif case == 'bad_choice':
    args, needles = [src, out, '--depth_activation', 'relu'], ["argument --depth_activation: invalid choice: 'relu'"]
  before = _snapshot(tmp_path)
  code, stdout, err = _main(*args)
  assert code == 1 and stdout == ''
  _one_error_line(err, *needles)
  assert _snapshot(tmp_path) == before  # nothing created, nothing changed, no temporary left


def test_cli_output_is_checked_before_the_input_is_read(tmp_path):
  """A garbage input and an OUT_DIR that is a file: the error is about OUT_DIR (the input was not read)."""
  src, out = tmp_path / 'x.pth.tar', tmp_path / 'out'
  src.write_bytes(b'garbage')
  out.write_text('a file')
  code, _, err = _main(src, out)
  assert code == 1
  _one_error_line(err, f'OUT_DIR {out}: is a file')


def test_cli_failure_leaves_nothing_behind(reference, tmp_path):
  ckpt = _ckpt(reference)
  del ckpt['state_dict']['module.predict_depth2.bias']
  bad = _save(tmp_path, ckpt)
  out = tmp_path / 'out' / 'nested'
  code, _, err = _main(bad, out)
  assert code == 1
  _one_error_line(err, 'missing key predict_depth2.bias (expected shape (1,))')
  assert sorted(os.listdir(tmp_path)) == ['x.pth.tar']
  # With --debug (or DEPTHNET_DEBUG=1) the traceback comes first, the error line last.
  code, _, err = _main(bad, out, '--debug')
  assert code == 1 and 'Traceback' in err and err.strip().splitlines()[-1].startswith('error: ')
  assert sorted(os.listdir(tmp_path)) == ['x.pth.tar']


# --- Done when: the original's checkpoint runs in infer.py with the PyTorch network's outputs -----------------


def _frames(folder, n=3, size=64):
  """n frames as a camera writes them: 8-bit RGB PNGs named in order, a smooth scene drifting sideways."""
  folder.mkdir()
  rng = np.random.default_rng(7)
  scene = np.kron(rng.uniform(0, 255, (size // 8 + 2, size // 8 + 4, 3)), np.ones((8, 8, 1)))
  scene = (0.7 * scene + 0.3 * rng.uniform(0, 255, scene.shape)).astype(np.uint8)
  for t in range(n):
    iio.imwrite(folder / f'IMG_{1000 + t}.png', scene[:size, 2 * t:2 * t + size])
  return [folder / f'IMG_{1000 + t}.png' for t in range(n)]


def _torch_depth(model, first, second):
  """The original's run_inference on one pair: normalise, eval forward, bilinear upsampling to the frame size."""
  pair = np.concatenate([iio.imread(first), iio.imread(second)], -1).astype(np.float32)
  x = (torch.from_numpy(pair).permute(2, 0, 1)[None] / 255 - 0.5) / 0.2
  model = copy.deepcopy(model).eval()
  with torch.no_grad():
    depth = model(x)[:, None]
    return torch.nn.functional.interpolate(depth, pair.shape[:2], mode='bilinear',
                                           align_corners=False)[0, 0].numpy()


# infer.py (a process of its own) on the published 2017 file in `make test`; on train.py's zip file in
# `make test-slow` (the two differ only in the container, which the in-process tests above read both ways).
@pytest.mark.parametrize('layout', [pytest.param('train_py_zip', marks=pytest.mark.slow), 'published_2017_legacy'])
def test_the_original_checkpoint_runs_in_infer_py_with_torch_outputs(layout, reference, checkpoint, published,
                                                                     tmp_path):
  """Before: infer.py refused train.py's checkpoints ("unknown architecture 'DepthNet_elu_bn'")."""
  frames = _frames(tmp_path / 'frames')
  path = checkpoint if layout == 'train_py_zip' else published
  out = tmp_path / 'out'
  result = subprocess.run([sys.executable, os.path.join(REPO, 'infer.py'), '--checkpoint', str(path),
                           '--input', str(tmp_path / 'frames'), '--output', str(out), '--no_resize',
                           '--output_raw'], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 0, result.stdout + result.stderr
  written = sorted(p for p in os.listdir(out) if p.endswith('_depth.npy'))
  # Each pair (frame t, frame t + 1) is named after its second frame.
  assert written == [f'{f.stem}_depth.npy' for f in frames[1:]]
  for first, second in zip(frames, frames[1:]):
    ours = np.load(out / f'{second.stem}_depth.npy')
    expected = _torch_depth(reference, first, second)
    assert ours.shape == expected.shape == (64, 64) and ours.dtype == np.float32
    assert np.ptp(expected) > 1e-3  # the pairs give different depths: nothing is constant
    assert float(np.max(np.abs(ours - expected)) / np.max(np.abs(expected))) <= 1e-4


@pytest.mark.parametrize('options', [dict(batch_norm=True, depth_activation='elu', clamp=False),
                                     dict(batch_norm=False, depth_activation=None, clamp=True, with_confidence=True)])
def test_to_state_dict_is_what_the_original_s_torch_model_loads(options):
  """A model of ours as the original's state_dict: PyTorch's DepthNet loads it strictly but for BatchNorm's unused
  counters (every key, every shape), and importing it gives back our arrays exactly."""
  from depthnet_jax.testing import random_models
  model = random_models.random_depthnet(3, **options)
  state_dict = torch_import.to_state_dict(model)
  assert all(v.dtype == np.float32 for v in state_dict.values())
  torch_model = torch_reference.TorchDepthNet(**options)
  missing, unexpected = torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()},
                                                    strict=False)
  # (torch's BatchNorm fills in a missing num_batches_tracked itself, as for state_dicts of PyTorch < 0.4)
  assert not unexpected and not missing
  back = torch_import.convert_state_dict(state_dict, {**dict(with_confidence=False), **options})
  ours = nnx.state(model).to_pure_dict()
  assert jax.tree.structure(back) == jax.tree.structure(ours)
  assert all(np.array_equal(np.asarray(a), b) for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(back)))
