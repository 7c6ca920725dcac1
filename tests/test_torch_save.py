"""Writing torch checkpoints without torch: what torch.save writes, what torch.load and the original's DepthNet read,
what our importer reads back, and writes that fail cleanly.

The models are full-size DepthNets with NumPy-drawn weights (depthnet_jax/testing/random_models.py), their biases,
BatchNorm affine parameters and running statistics drawn too, so that a tensor saved under another key is caught.
"""

import collections
import itertools
import os
import zipfile

import jax
import ml_dtypes
import numpy as np
import pytest
import torch
from flax import nnx
from torch.utils.serialization import config as serialization_config

from depthnet_jax.checkpoints import torch_import, torch_pickle, torch_save
from depthnet_jax.common import atomic
from depthnet_jax.testing import random_models, torch_reference

RTOL = 1e-5
COMBINATIONS = [dict(batch_norm=bn, depth_activation=act, clamp=clamp, with_confidence=conf) for bn, act, clamp, conf
                in itertools.product([True, False], ['elu', None], [False, True], [False, True])]
# Computed on both sides for two of them, every option on in one or the other (each forward costs JAX a compile per
# operation, 1.5 s; tests/test_export.py runs every option against PyTorch through the ONNX graph).
COMPUTED = (COMBINATIONS[0], COMBINATIONS[-1])


def _name(options):
  return '-'.join(f'{k}={v}' for k, v in options.items())


def _model(seed=0, **options):
  """A DepthNet (eval mode) with every array drawn: no zero bias, unit BN scale or default statistic is left."""
  options = dict(dict(batch_norm=True, depth_activation='elu', clamp=False, with_confidence=False), **options)
  model = random_models.random_depthnet(seed, **options)
  rng = np.random.default_rng(seed + 1000)
  draws = {'bias': lambda s: 0.1 * rng.normal(size=s), 'scale': lambda s: 1 + 0.2 * rng.normal(size=s),
           'mean': lambda s: 0.1 * rng.normal(size=s), 'var': lambda s: 0.5 + rng.random(s)}

  def draw(path, x):
    name = str(getattr(path[-1], 'key', path[-1]))
    return draws[name](x.shape).astype(np.float32) if name in draws else x
  state = nnx.state(model)
  pure = jax.tree_util.tree_map_with_path(draw, state.to_pure_dict())
  if options['clamp']:
    # Centre the finest depth (spread ~0.3 m) on the clamp's lower bound: it cuts some pixels and passes others.
    pure['predict_depth2']['bias'][0] = 9.0 if options['depth_activation'] == 'elu' else 10.0
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(model, state)
  model.eval()
  return model


def _leaves(model):
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model).to_pure_dict())]


@pytest.fixture(scope='module')
def published(tmp_path_factory):
  """(model, path) of the published options (BN + elu) saved as the original's train.py saves."""
  model = _model(0)
  path = tmp_path_factory.mktemp('published') / 'checkpoint.pth.tar'
  torch_save.save(torch_save.original_checkpoint(model, epoch=55, best_error=4.65), path)
  return model, path


def test_torch_loads_it_with_weights_only_as_the_original_s_dict(published):
  model, path = published
  loaded = torch.load(path, weights_only=True)
  assert list(loaded) == ['epoch', 'arch', 'state_dict', 'best_error', 'bn', 'with_confidence',
                          'activation_function', 'clamp', 'mean', 'std']
  assert type(loaded['epoch']) is int and loaded['epoch'] == 55
  assert type(loaded['best_error']) is float and loaded['best_error'] == 4.65
  assert loaded['arch'] == 'DepthNet_elu_bn' and loaded['activation_function'] == 'elu'
  assert loaded['bn'] is True and loaded['with_confidence'] is False and loaded['clamp'] is False
  assert loaded['mean'] == [0.5] * 3 and loaded['std'] == [0.2] * 3
  sd = loaded['state_dict']
  assert isinstance(sd, collections.OrderedDict)
  reference = torch_reference.TorchDepthNet(batch_norm=True, depth_activation='elu').state_dict()
  assert list(sd) == list(reference) and len(sd) == 106
  expected = torch_import.to_state_dict(model)
  for key, tensor in sd.items():
    assert tensor.shape == reference[key].shape and tensor.dtype == reference[key].dtype, key
    if key.endswith('num_batches_tracked'):
      assert tensor.dtype == torch.int64 and tensor.shape == () and int(tensor) == 0
    else:
      assert np.array_equal(tensor.numpy(), expected[key]), key


@pytest.mark.parametrize('batch_norm', [True, False])
@pytest.mark.parametrize('with_confidence', [False, True])
def test_the_state_dict_has_the_torch_module_s_keys_in_its_order(batch_norm, with_confidence):
  model = random_models.random_depthnet(0, batch_norm=batch_norm, with_confidence=with_confidence)
  ours = torch_save.original_checkpoint(model, epoch=1, best_error=2.0)['state_dict']
  theirs = torch_reference.TorchDepthNet(batch_norm=batch_norm, with_confidence=with_confidence).state_dict()
  assert list(ours) == list(theirs)
  assert [tuple(v.shape) for v in ours.values()] == [tuple(v.shape) for v in theirs.values()]
  assert not any(k.startswith('module.') for k in ours)


def _loaded_torch_model(options, tmp_path):
  """(our model, the original's DepthNet of `options` with our file's state_dict loaded strictly, in eval mode)."""
  model = _model(1, **options)
  ckpt = torch_save.original_checkpoint(model, epoch=7, best_error=1.5)
  assert ckpt['arch'] == torch_reference.arch_string(
      batch_norm=options['batch_norm'], activation_function=options['depth_activation'], clamp=options['clamp'],
      with_confidence=options['with_confidence'])
  path = torch_save.save(ckpt, tmp_path / 'model_best.pth.tar')
  loaded = torch.load(path, weights_only=True)
  torch_model = torch_reference.TorchDepthNet(**options)
  torch_model.load_state_dict(loaded['state_dict'], strict=True)
  return model, torch_model.eval()


@pytest.mark.parametrize('options', COMBINATIONS, ids=_name)
def test_the_original_s_model_loads_it_strictly(options, tmp_path):
  _loaded_torch_model(options, tmp_path)


@pytest.mark.parametrize('options', COMPUTED, ids=_name)
def test_the_original_s_model_computes_our_depth_from_it(options, tmp_path):
  model, torch_model = _loaded_torch_model(options, tmp_path)
  x = np.random.default_rng(2).normal(size=(2, 6, 64, 64)).astype(np.float32)
  with torch.no_grad():
    expected = torch_model(torch.from_numpy(x)).numpy()
  model.set_execution(conv_impl='xla')   # the cheaper compile here; test_parity covers both implementations
  ours = np.asarray(model(x.transpose(0, 2, 3, 1)))
  assert ours.shape == expected.shape == ((2, 16, 16, 2) if options['with_confidence'] else (2, 16, 16))
  assert np.ptp(expected) > 1e-3   # not a constant: the weights reach the output
  assert float(np.max(np.abs(ours - expected)) / np.max(np.abs(expected))) <= RTOL


def test_our_importer_reads_back_the_same_arrays_and_options(published):
  model, path = published
  state, options, info = torch_import.read_checkpoint(path)
  assert options == model.spec.to_dict()
  assert info['arch'] == 'DepthNet_elu_bn' and info['epoch'] == 55 and info['best_error'] == 4.65
  assert info['source_format'] == 'zip' and not info['module_prefix_stripped']
  ours = nnx.state(model).to_pure_dict()
  assert jax.tree.structure(state) == jax.tree.structure(ours)
  assert all(np.array_equal(np.asarray(a), b) for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(state)))
  back = torch_import.load(path)
  assert back.spec == model.spec
  assert all(np.array_equal(a, b) for a, b in zip(_leaves(model), _leaves(back)))


def test_our_reader_reads_it(published):
  model, path = published
  loaded = torch_pickle.load(path)
  expected = torch_save.original_checkpoint(model, epoch=55, best_error=4.65)
  assert list(loaded) == list(expected) and list(loaded['state_dict']) == list(expected['state_dict'])
  for key, value in expected['state_dict'].items():
    assert loaded['state_dict'][key].dtype == value.dtype and np.array_equal(loaded['state_dict'][key], value), key
  assert {k: v for k, v in loaded.items() if k != 'state_dict'} == {k: v for k, v in expected.items()
                                                                     if k != 'state_dict'}


def _general():
  """(our object, torch's object): every dtype, a 0-d and an empty array, one array twice, Python values."""
  rng = np.random.default_rng(0)
  a = rng.normal(size=(2, 3)).astype(np.float32)
  arrays = collections.OrderedDict(
      a=a, long=np.array(0, np.int64), byte=np.arange(5, dtype=np.uint8), bool=np.array([True, False]),
      empty=np.zeros((0, 3), np.float32), empty3=np.zeros((2, 0, 3), np.float32),
      half=rng.normal(size=4).astype(np.float16),
      double=rng.normal(size=(2, 2, 2)), int=np.arange(3, dtype=np.int32), short=np.arange(3, dtype=np.int16),
      char=np.arange(-1, 2, dtype=np.int8), bfloat16=rng.normal(size=3).astype(ml_dtypes.bfloat16))
  arrays.update((f'n{i}', np.ones(i, np.float32)) for i in range(12))   # keys past '9'
  ours = {'epoch': 3, 'arrays': arrays, 'again': a, 'values': [0.5, None, True, 'elu', (1, -2, 2**40, 2**70)],
          'negative': -1.5, '0': 'zero', 'nested': {'deep': [{}], 'empty': ()}}

  def to_torch(x):
    if isinstance(x, np.ndarray):   # (from_numpy gives empty arrays strides 0; torch's own tensors have these)
      tensor = torch.from_numpy(x.view(np.int16)).view(torch.bfloat16) if x.dtype == ml_dtypes.bfloat16 else \
          torch.from_numpy(x)
      return tensor.clone(memory_format=torch.contiguous_format)
    if isinstance(x, dict):
      return type(x)((k, to_torch(v)) for k, v in x.items())
    return type(x)(to_torch(v) for v in x) if isinstance(x, (list, tuple)) else x
  theirs = to_torch(ours)
  theirs['again'] = theirs['arrays']['a']
  return ours, theirs


def test_the_file_is_byte_for_byte_what_torch_save_writes(tmp_path, monkeypatch):
  ours, theirs = _general()
  (tmp_path / 'torch').mkdir()
  torch.save(theirs, tmp_path / 'torch' / 'ckpt.pth.tar')
  expected = (tmp_path / 'torch' / 'ckpt.pth.tar').read_bytes()
  with zipfile.ZipFile(tmp_path / 'torch' / 'ckpt.pth.tar') as z:
    torch_id = z.read('ckpt.pth/.data/serialization_id').decode()
  # The one record that differs: torch's id mixes a C++ string hash of the names with a CRC; ours hashes both.
  monkeypatch.setattr(torch_save, '_serialization_id', lambda names, crcs: torch_id)
  path = torch_save.save(ours, tmp_path / 'ckpt.pth.tar')
  assert (tmp_path / 'ckpt.pth.tar').read_bytes() == expected
  with zipfile.ZipFile(path) as z:
    infos = z.infolist()
    assert [i.filename for i in infos][:4] == ['ckpt.pth/data.pkl', 'ckpt.pth/.format_version',
                                               'ckpt.pth/.storage_alignment', 'ckpt.pth/byteorder']
    assert [i.filename for i in infos][-2:] == ['ckpt.pth/version', 'ckpt.pth/.data/serialization_id']
    assert z.read('ckpt.pth/version') == b'3\n' and z.read('ckpt.pth/byteorder') == b'little'
    assert all(i.compress_type == zipfile.ZIP_STORED for i in infos) and z.testzip() is None
  raw = open(path, 'rb').read()
  for info in infos:   # every record's data 64-byte aligned in the file, as torch's writer puts it
    start = info.header_offset + 30 + int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], 'little') \
        + int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], 'little')
    assert start % 64 == 0, info.filename


def test_every_dtype_loads_in_torch_and_in_our_reader(tmp_path, monkeypatch):
  ours, theirs = _general()
  ours['arrays']['strided'] = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]   # saved contiguous
  ours['arrays']['big_endian'] = np.arange(4, dtype='>f8')
  ours['arrays']['memmap'] = np.lib.format.open_memmap(tmp_path / 'm.npy', 'w+', np.float32, (3,))
  path = torch_save.save(ours, tmp_path / 'x.pt')
  # torch computes each record's offset from the layout its writer makes, and (debug) checks it against the file's.
  monkeypatch.setenv('TORCH_SERIALIZATION_DEBUG', '1')
  with serialization_config.patch({'load.calculate_storage_offsets': True}):
    both = [torch.load(path, weights_only=True), torch.load(path, weights_only=True, mmap=True)]
  for loaded in both:
    for key, value in ours['arrays'].items():
      tensor = loaded['arrays'][key]
      expected = theirs['arrays'][key] if key in theirs['arrays'] else \
          torch.from_numpy(np.asarray(value).astype(value.dtype.newbyteorder('=')))
      assert tensor.dtype == expected.dtype and torch.equal(tensor, expected), key
    assert loaded['again'].data_ptr() == loaded['arrays']['a'].data_ptr()   # one array, one tensor
    assert {k: v for k, v in loaded.items() if k not in ('arrays', 'again')} == \
        {k: v for k, v in ours.items() if k not in ('arrays', 'again')}
  mine = torch_pickle.load(path)
  for key, value in ours['arrays'].items():
    assert mine['arrays'][key].dtype == value.dtype.newbyteorder('=') and np.array_equal(mine['arrays'][key], value)


def test_save_replaces_an_existing_file_only_by_renaming(tmp_path, monkeypatch):
  path, link = tmp_path / 'checkpoint.pth.tar', tmp_path / 'link'
  path.write_bytes(b'old')
  os.link(path, link)   # the old file's inode: written in place, it would change too
  renames = []
  monkeypatch.setattr(atomic.os, 'replace', lambda src, dst: renames.append((src, dst)) or os.rename(src, dst))
  torch_save.save({'a': np.ones(2, np.float32)}, path)
  assert link.read_bytes() == b'old' and os.stat(path).st_ino != os.stat(link).st_ino
  assert renames == [(renames[0][0], str(path))] and os.path.dirname(renames[0][0]) == str(tmp_path)
  assert torch.equal(torch.load(path, weights_only=True)['a'], torch.ones(2))
  assert sorted(os.listdir(tmp_path)) == ['checkpoint.pth.tar', 'link']


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
  path = tmp_path / 'checkpoint.pth.tar'
  path.write_bytes(b'old')
  add = torch_save._ZipWriter.add

  def failing(self, name, data):
    if name.startswith('data/'):
      raise OSError(28, 'No space left on device')
    return add(self, name, data)
  monkeypatch.setattr(torch_save._ZipWriter, 'add', failing)
  with pytest.raises(OSError, match='No space'):
    torch_save.save({'a': np.ones(2, np.float32)}, path)
  assert path.read_bytes() == b'old' and os.listdir(tmp_path) == ['checkpoint.pth.tar']


@pytest.mark.parametrize('obj, message', [
    ({'a': np.ones(2, np.complex64)}, r"the object\['a'\] is an array of dtype complex64"),
    ({'a': np.array(['x'])}, 'dtype <U1'),
    ({'a': np.array([None], object)}, 'dtype object'),
    ({'best_error': np.float64(4.65)}, r"the object\['best_error'\] is a NumPy scalar .*\.item\(\)"),
    ({'epoch': np.int64(3)}, 'NumPy scalar'),
    ({1: 'x'}, r'has the key 1 \(int\); only str keys'),
    ({'a': [1, {2, 3}]}, r"the object\['a'\]\[1\] is a builtins.set"),
    ({'a': b'bytes'}, 'builtins.bytes'),
    ([torch_save], 'module'),
])
def test_what_cannot_be_saved_is_refused_before_anything_is_written(obj, message, tmp_path, monkeypatch):
  path = tmp_path / 'checkpoint.pth.tar'
  path.write_bytes(b'old')
  monkeypatch.setattr(atomic, 'temporary_file', lambda *a: pytest.fail('a temporary was created'))
  with pytest.raises(ValueError, match=message):
    torch_save.save(obj, path)
  assert path.read_bytes() == b'old' and os.listdir(tmp_path) == ['checkpoint.pth.tar']


def test_the_archive_folder_is_named_as_torch_names_it(tmp_path):
  for name, archive in [('checkpoint.pth.tar', 'checkpoint.pth'), ('noext', 'noext'), ('é.pt', 'archive'),
                        ('.pt', 'archive')]:
    torch_save.save({'a': 1}, tmp_path / name)
    with zipfile.ZipFile(tmp_path / name) as z:
      assert z.namelist()[0] == f'{archive}/data.pkl', name
    assert torch.load(tmp_path / name, weights_only=True) == {'a': 1}


def test_the_same_checkpoint_gives_the_same_bytes(published, tmp_path):
  model, path = published
  again = torch_save.save(torch_save.original_checkpoint(model, epoch=55, best_error=4.65),
                          tmp_path / 'checkpoint.pth.tar')
  assert open(again, 'rb').read() == open(path, 'rb').read()
  with zipfile.ZipFile(again) as z:
    serialization_id = z.read('checkpoint.pth/.data/serialization_id')
  assert len(serialization_id) == 40 and serialization_id.isdigit()


def test_original_checkpoint_checks_its_arguments():
  model = random_models.random_depthnet(0)
  with pytest.raises(TypeError, match='epoch'):
    torch_save.original_checkpoint(model, epoch=True, best_error=1.0)
  with pytest.raises(TypeError):
    torch_save.original_checkpoint(model, epoch=1.5, best_error=1.0)
  with pytest.raises(TypeError, match='DepthNet'):
    torch_save.original_checkpoint(torch_reference.TorchDepthNet(), epoch=1, best_error=1.0)
  ckpt = torch_save.original_checkpoint(model, epoch=np.int64(4), best_error=np.float32(0.5))
  assert type(ckpt['epoch']) is int and type(ckpt['best_error']) is float
