"""The torch-free checkpoint reader: both formats, exotic tensors, and files that must be refused."""

import collections
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from depthnet_jax.checkpoints import torch_pickle
from depthnet_jax.checkpoints.torch_pickle import TorchCheckpointError, UnsafeCheckpointError
from depthnet_jax.testing.pickle_craft import Build, G, R, Storage, dumps, legacy_file, tensor, zip_file

FORMATS = ['legacy', 'zip']


def _save(obj, path, fmt):
  torch.save(obj, path, _use_new_zipfile_serialization=(fmt == 'zip'))
  return path


@pytest.mark.parametrize('fmt', FORMATS)
def test_reads_what_torch_writes(tmp_path, fmt):
  g = torch.Generator().manual_seed(0)
  base = torch.randn(6, 5, generator=g)
  obj = {
      'contiguous': torch.randn(3, 4, 2, generator=g),
      'transposed': base.t(),  # non-contiguous strides
      'slice': base[2:, 1:4],  # offset into a storage shared with 'transposed'
      'half': torch.randn(4, generator=g).half(),
      'bfloat16': torch.randn(4, generator=g).bfloat16(),
      'long': torch.arange(7, dtype=torch.int64),
      'bool': torch.tensor([True, False, True]),
      'scalar': torch.tensor(3.5),
      'empty': torch.zeros(0, 3),
      'expanded': torch.randn(1, 3, generator=g).expand(4, 3),  # stride 0
      'parameter': torch.nn.Parameter(torch.randn(2, 2, generator=g)),
      'nested': [1, 2.5, ('a', None), {'k': torch.ones(2)}],
      'numpy_float': np.float64(4.65),
      'ordered': collections.OrderedDict(b=1, a=2),
  }
  path = _save(obj, tmp_path / 'x.pth', fmt)
  loaded = torch_pickle.load(path)
  assert torch_pickle.file_format(path) == fmt
  for key in ('contiguous', 'transposed', 'slice', 'half', 'long', 'bool', 'scalar', 'empty', 'expanded'):
    expected = obj[key].numpy()
    assert loaded[key].dtype == expected.dtype, key
    np.testing.assert_array_equal(loaded[key], expected, err_msg=key)
  np.testing.assert_array_equal(loaded['bfloat16'].astype(np.float32), obj['bfloat16'].float().numpy())
  np.testing.assert_array_equal(loaded['parameter'], obj['parameter'].detach().numpy())
  assert loaded['nested'][:3] == [1, 2.5, ('a', None)]
  np.testing.assert_array_equal(loaded['nested'][3]['k'], np.ones(2, np.float32))
  assert loaded['numpy_float'] == 4.65
  assert list(loaded['ordered'].items()) == [('b', 1), ('a', 2)]
  assert isinstance(loaded['ordered'], collections.OrderedDict)


def test_reads_torch_0_3_tensor_records_and_legacy_views(tmp_path):
  """The 4-argument `_rebuild_tensor` of torch 0.3 and a legacy storage view, in a hand-made legacy file."""
  data = np.arange(12, dtype=np.float32)
  root = G('torch', 'FloatStorage')
  obj = {
      'old': tensor(Storage('storage', root, '0', 'cpu', 12, None), 2, (2, 3), (3, 1), v2=False),
      'view': tensor(Storage('storage', root, '0', 'cpu', 12, ('v', 4, 6)), 1, (2, 2), (2, 1)),
  }
  path = tmp_path / 'old.pth.tar'
  path.write_bytes(legacy_file(dumps(obj), {'0': data}))
  loaded = torch_pickle.load(path)
  np.testing.assert_array_equal(loaded['old'], data[2:8].reshape(2, 3))
  np.testing.assert_array_equal(loaded['view'], data[4:10][1:5].reshape(2, 2))


class _Evil:
  """What a hostile checkpoint holds: unpickling it runs a shell command."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


@pytest.mark.parametrize('fmt', FORMATS)
def test_malicious_torch_save_is_refused_and_does_not_run(tmp_path, fmt):
  marker = tmp_path / 'pwned'
  path = _save({'state_dict': {'w': torch.ones(2)}, 'payload': _Evil(marker)}, tmp_path / 'evil.pth', fmt)
  with pytest.raises(UnsafeCheckpointError, match=r'(posix|os)\.system'):
    torch_pickle.load(path)
  assert not marker.exists()
  # The file really is hostile: torch's full unpickler (weights_only=False) runs it.
  torch.load(path, weights_only=False)
  assert marker.exists()


@pytest.mark.parametrize('container', ['legacy', 'zip'])
@pytest.mark.parametrize('payload', [
    R(G('os', 'system'), 'touch {marker}'),
    R(G('builtins', 'eval'), "__import__('os').system('touch {marker}')"),
    R(G('subprocess', 'call'), ['touch', '{marker}']),
    R(G('builtins', 'getattr'), G('os', 'system'), 'x'),
    R(G('torch', 'load'), '{marker}'),
])
def test_globals_outside_the_allow_list_are_refused(tmp_path, container, payload):
  marker = tmp_path / 'pwned'
  payload.args = tuple(a.format(marker=marker) if isinstance(a, str) else
                       [x.format(marker=marker) for x in a] if isinstance(a, list) else a for a in payload.args)
  pkl = dumps({'state_dict': {}, 'x': payload})
  path = tmp_path / 'evil.pth'
  path.write_bytes(legacy_file(pkl, {}) if container == 'legacy' else zip_file(pkl, {}))
  with pytest.raises(UnsafeCheckpointError, match='refusing to load'):
    torch_pickle.load(path)
  assert not marker.exists()


@pytest.mark.parametrize('target', [G('collections', 'OrderedDict'), G('torch._utils', '_rebuild_tensor_v2'),
                                    G('torch', 'FloatStorage'), G('torch', 'Tensor')])
def test_pickle_cannot_modify_allowed_objects(tmp_path, target):
  """BUILD on an allow-listed global would let a file rewrite it (e.g. its __defaults__) for later loads."""
  path = tmp_path / 'build.pth'
  path.write_bytes(legacy_file(dumps(Build(target, (None, {'__defaults__': (1,)}))), {}))
  with pytest.raises(UnsafeCheckpointError, match='set the state'):
    torch_pickle.load(path)


def test_tensor_beyond_its_storage_is_refused(tmp_path):
  storage = Storage('storage', G('torch', 'FloatStorage'), '0', 'cpu', 4)
  path = tmp_path / 'oob.pth'
  path.write_bytes(zip_file(dumps({'w': tensor(storage, 0, (2, 2), (100, 1))}), {'0': np.zeros(4, np.float32)}))
  with pytest.raises(TorchCheckpointError, match='reaches element 101'):
    torch_pickle.load(path)
  path.write_bytes(zip_file(dumps({'w': tensor(storage, 0, (2, 2), (-1, 1))}), {'0': np.zeros(4, np.float32)}))
  with pytest.raises(TorchCheckpointError, match='malformed tensor'):
    torch_pickle.load(path)


def test_storage_record_of_the_wrong_length_is_refused(tmp_path):
  storage = Storage('storage', G('torch', 'FloatStorage'), '0', 'cpu', 4)
  path = tmp_path / 'short.pth'
  path.write_bytes(zip_file(dumps({'w': tensor(storage, 0, (4,), (1,))}), {'0': np.zeros(3, np.float32)}))
  with pytest.raises(TorchCheckpointError, match='holds 12 bytes where 4 x float32 = 16 were expected'):
    torch_pickle.load(path)


@pytest.fixture(scope='module')
def real_checkpoints(tmp_path_factory):
  d = tmp_path_factory.mktemp('real')
  g = torch.Generator().manual_seed(0)
  obj = {'state_dict': collections.OrderedDict((f'layer{i}.weight', torch.randn(64, 64, generator=g))
                                                for i in range(8)), 'epoch': 3}
  return {fmt: _save(obj, d / f'{fmt}.pth.tar', fmt) for fmt in FORMATS}


@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('fraction', [0.0005, 0.01, 0.3, 0.5, 0.9, 0.999])
def test_truncated_checkpoint_gives_a_clear_error(tmp_path, real_checkpoints, fmt, fraction):
  raw = real_checkpoints[fmt].read_bytes()
  path = tmp_path / 'cut.pth.tar'
  path.write_bytes(raw[:max(1, int(len(raw) * fraction))])
  with pytest.raises(TorchCheckpointError, match=str(path)) as info:
    torch_pickle.load(path)
  assert any(word in str(info.value) for word in ('truncated', 'corrupt', 'not a torch checkpoint'))


@pytest.mark.parametrize('content,message', [
    (b'', 'empty file'),
    (b'hello, I am a text file\n', 'neither a zip archive nor a pickle'),
    (b'\x89PNG\r\n\x1a\n' + bytes(100), 'neither a zip archive nor a pickle'),
    (pickle.dumps({'a': 1}, protocol=2), 'no torch magic number'),
    (pickle.dumps([1, 2, 3], protocol=4), 'no torch magic number'),
    (b'\x80\x02' + bytes(50), 'not a torch checkpoint'),
])
def test_non_checkpoint_files_are_refused(tmp_path, content, message):
  path = tmp_path / 'not_a_checkpoint.pth.tar'
  path.write_bytes(content)
  with pytest.raises(TorchCheckpointError, match=message):
    torch_pickle.load(path)


def test_zip_without_torch_records_is_refused(tmp_path):
  path = tmp_path / 'other.zip'
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('readme.txt', 'not a checkpoint')
  with pytest.raises(TorchCheckpointError, match='no <name>/data.pkl'):
    torch_pickle.load(path)


def test_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError):
    torch_pickle.load(tmp_path / 'nope.pth.tar')


@pytest.mark.parametrize('fmt', FORMATS)
def test_corrupted_bytes_give_a_checkpoint_error_or_a_valid_load(tmp_path, fmt):
  """Random byte flips anywhere in a small checkpoint: never an unexplained exception, never a crash."""
  g = torch.Generator().manual_seed(1)
  obj = {'state_dict': collections.OrderedDict(a=torch.randn(3, 4, generator=g), b=torch.arange(5)),
         'epoch': 7, 'best_EPE': np.float64(1.5), 'bn': True}
  raw = _save(obj, tmp_path / 'small.pth', fmt).read_bytes()
  rng = np.random.default_rng(0)
  path = tmp_path / 'flipped.pth'
  outcomes = collections.Counter()
  for _ in range(300):
    data = bytearray(raw)
    for position in rng.integers(0, len(data), size=rng.integers(1, 4)):
      data[position] = rng.integers(0, 256)
    path.write_bytes(bytes(data))
    try:
      torch_pickle.load(path)
      outcomes['loaded'] += 1
    except TorchCheckpointError:
      outcomes['refused'] += 1
  assert outcomes['refused'] > 0, outcomes
