"""Writes `torch.save` files (PyTorch's zip format, its default since 1.6) without PyTorch.

`original_checkpoint(model, epoch=..., best_error=...)` is the dict the original DepthNet's train.py saves, with
the state_dict its PyTorch module would give (key order included), so that the original's code, or anyone's
`torch.load(path, weights_only=True)`, can read a model trained here; `save(obj, path)` writes it.

The file is what torch 2.x's `torch.save(obj, path)` writes, byte for byte but for the `.data/serialization_id`
record (torch's mixes a C++ hash of the record names with a combined CRC; ours hashes the same two with BLAKE2b:
equally deterministic, so the same object always gives the same file):
- a zip archive, every record stored (ZIP_STORED) under the folder `<archive>/`, where `<archive>` is the file's
  name up to its last dot (`checkpoint.pth.tar` -> `checkpoint.pth`), as torch names it, or `archive` (torch's
  name for a file it writes through a stream, e.g. one with a non-ASCII name) if that is empty or not ASCII;
- the records, in torch's order: `data.pkl` (the object's pickle), `.format_version` ('1': storage records in
  the numeric order of their keys), `.storage_alignment` ('64'), `byteorder` ('little'), `data/0`, `data/1`, ...
  (each array's raw little-endian bytes, C order), `version` ('3\\n'), `.data/serialization_id` (40 digits);
- laid out as torch's writer (miniz) lays it out: each local header with zero CRC and sizes, flags 0x0808 (UTF-8
  names, sizes in a data descriptor) and an extra field `FB<len>ZZ...` that pads the record's data to a multiple
  of 64 bytes in the file (so torch.load(mmap=True) maps the tensors in place); after each non-empty record a
  16-byte data descriptor (signature, CRC-32, sizes; an empty record has neither it nor its flag, 0x0800); a
  central directory without extra fields; then the zip64 end-of-central-directory record, its locator and the
  classic end record, which torch writes for any size.
  torch.load's `calculate_storage_offsets` relies on exactly this layout. Files of 4 GiB or more (which would
  need zip64 fields per record) are refused; a DepthNet checkpoint is about 41 MB.

The pickle is protocol 2, as torch writes it, made by the pure-Python `pickle._Pickler` so that torch's globals
can be named without being imported: each array becomes the REDUCE
`torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, collections.OrderedDict())` (contiguous
strides, in elements) whose storage is the persistent id `('storage', torch.<Type>Storage, key, 'cpu', numel)`
and whose bytes are the record `data/<key>`. Keys count from '0' in the order the arrays are pickled; the same
array object twice is one tensor (pickle's memo), other arrays never share storage. Globals, strings and tuples
are memoised as torch's (C) pickler memoises them.

What can be saved: dicts (str keys; dict or OrderedDict), lists, tuples, str, int, float, bool, None, and NumPy
arrays of float32, float64, float16, bfloat16, int64, int32, int16, int8, uint8 and bool. Anything else (NumPy
scalars included: give `.item()` or an array) is a ValueError naming where it is, raised before a byte is
written. The file is written atomically (`common.atomic.write_file`: a temporary beside it, renamed over it).
"""

from __future__ import annotations

import collections
import hashlib
import io
import operator
import os
import pickle
import re
import struct
import zlib
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

from depthnet_jax.checkpoints import torch_import
from depthnet_jax.common import atomic
from depthnet_jax.common.conventions import MEAN, STD
from depthnet_jax.model import models

_ALIGNMENT = 64
_MAX_FILE_BYTES = 0xFFFFFFFF   # beyond it, records would need zip64 fields (not written here)
_BN_KEYS = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')


class _Global:
  """A global (`module.name`) written as a GLOBAL opcode; never imported, never called."""
  __slots__ = ('module', 'name')

  def __init__(self, module: str, name: str):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle's save_reduce wants a callable
    raise AssertionError(f'{self.module}.{self.name} is only ever written')


_REBUILD_TENSOR = _Global('torch._utils', '_rebuild_tensor_v2')
_STORAGES = {np.dtype(dtype): _Global('torch', name) for dtype, name in (
    (np.float32, 'FloatStorage'), (np.float64, 'DoubleStorage'), (np.float16, 'HalfStorage'),
    (ml_dtypes.bfloat16, 'BFloat16Storage'), (np.int64, 'LongStorage'), (np.int32, 'IntStorage'),
    (np.int16, 'ShortStorage'), (np.int8, 'CharStorage'), (np.uint8, 'ByteStorage'), (np.bool_, 'BoolStorage'))}
_SCALARS = (type(None), bool, int, float, str)
_CONTAINERS = (dict, collections.OrderedDict, list, tuple)


# ---------------------------------------------------------------------------------------------------- the dict


def _state_dict_keys(spec) -> list[str]:
  """The keys of the original's `DepthNet(...).state_dict()`, in the order its modules register them: per
  `nn.Sequential` block, the conv's weight (and bias without BN), then BatchNorm's weight, bias, running_mean,
  running_var and num_batches_tracked (parameters before buffers); the decoder's blocks start with their
  ConvTranspose (weight, bias); then the prediction heads (weight, bias) and the depth upsamplings (weight)."""
  def block(name: str, index: int) -> list[str]:
    keys = [f'{name}.{index}.weight'] + ([] if spec.batch_norm else [f'{name}.{index}.bias'])
    return keys + ([f'{name}.{index + 1}.{k}' for k in _BN_KEYS] if spec.batch_norm else [])

  keys = [k for name, *_ in models.ENCODER for k in block(name, 0)]
  for k in models.DECONV:
    keys += [f'deconv{k}.0.weight', f'deconv{k}.0.bias'] + block(f'deconv{k}', 1)
  keys += [f'predict_depth{k}.{p}' for k in models.PREDICT_IN for p in ('weight', 'bias')]
  keys += [f'upsampled_depth{k}_to_{k - 1}.weight' for k in list(models.PREDICT_IN)[:-1]]
  return keys


def _state_dict(model: models.DepthNet) -> collections.OrderedDict:
  arrays = torch_import.to_state_dict(model)
  keys = _state_dict_keys(model.spec)
  counters = {k for k in keys if k.endswith('.num_batches_tracked')}
  if set(arrays) != set(keys) - counters:
    raise AssertionError(f'DepthNet state and torch keys differ: {sorted(set(arrays) ^ (set(keys) - counters))}')
  # BatchNorm's batch counter: read by no computation (momentum is set) and not kept here, so 0.
  return collections.OrderedDict((k, np.zeros((), np.int64) if k in counters else arrays[k]) for k in keys)


def original_checkpoint(model: models.DepthNet, *, epoch: int, best_error: float) -> dict[str, Any]:
  """The dict the original's train.py saves every epoch, for `model`; write it with `save`.

  Keys, in its order: `epoch` (int), `arch` ('DepthNet_elu_bn', ... as the original builds it), `state_dict`
  (an OrderedDict of NumPy arrays: float32 weights in torch's layouts, int64 scalar `num_batches_tracked`
  counters, which are 0: the count of training batches is not tracked here), `best_error` (float), `bn`,
  `with_confidence`, `clamp` (bools), `activation_function` (None or 'elu'), `mean` and `std` ([0.5] * 3,
  [0.2] * 3). The state_dict's keys have no `module.` prefix: `TorchDepthNet(...).load_state_dict` (and the
  original's DepthNet) loads it strictly, and `torch_import` reads it back to the same arrays.
  """
  if not isinstance(model, models.DepthNet):
    raise TypeError(f'model is a {type(model).__name__}, expected a depthnet_jax DepthNet')
  if isinstance(epoch, bool):
    raise TypeError(f'epoch must be an int, got {epoch!r}')
  spec = model.spec
  return {
      'epoch': operator.index(epoch),
      'arch': torch_import.arch_string(**spec.to_dict()),
      'state_dict': _state_dict(model),
      'best_error': float(best_error),
      'bn': spec.batch_norm,
      'with_confidence': spec.with_confidence,
      'activation_function': spec.depth_activation,
      'clamp': spec.clamp,
      'mean': [MEAN] * 3,
      'std': [STD] * 3,
  }


# -------------------------------------------------------------------------------------------------- the pickle


def _check(obj: Any, where: str, seen: set[int]) -> None:
  """Raises ValueError, naming `where`, for anything in the tree that `save` cannot write."""
  if type(obj) in _SCALARS:
    return
  if isinstance(obj, np.generic):
    raise ValueError(f'{where} is a NumPy scalar ({obj.dtype} {obj!r:.40}); give a Python number (.item()) or '
                     'an array (np.asarray)')
  if isinstance(obj, np.ndarray):
    if obj.dtype.newbyteorder('=') not in _STORAGES:
      raise ValueError(f'{where} is an array of dtype {obj.dtype}, which is not saved as a torch tensor here '
                       f'(supported: {", ".join(str(d) for d in _STORAGES)})')
    return
  if type(obj) not in _CONTAINERS:
    raise ValueError(f'{where} is a {type(obj).__module__}.{type(obj).__qualname__}, which is not saved here '
                     '(dicts, lists, tuples, str, int, float, bool, None and NumPy arrays are)')
  if id(obj) in seen:   # shared, or the tree holds itself
    return
  seen.add(id(obj))
  if isinstance(obj, dict):
    for key, value in obj.items():
      if type(key) is not str:
        raise ValueError(f'{where} has the key {key!r:.40} ({type(key).__name__}); only str keys are saved here')
      _check(value, f'{where}[{key!r}]', seen)
  else:
    for i, value in enumerate(obj):
      _check(value, f'{where}[{i}]', seen)


def _strides(shape: tuple[int, ...]) -> tuple[int, ...]:
  """Contiguous strides in elements, as torch computes them (an axis of size 0 counts as 1)."""
  strides, step = [], 1
  for n in reversed(shape):
    strides.append(step)
    step *= max(n, 1)
  return tuple(reversed(strides))


class _StorageRef:
  __slots__ = ('pid',)

  def __init__(self, pid: tuple):
    self.pid = pid


class _TorchPickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can be extended
  """Pickles as torch's `_save` does: arrays as tensors whose storages are persistent ids, collected in
  `storages` (each a contiguous little-endian array, its key its index)."""
  dispatch = pickle._Pickler.dispatch.copy()

  def __init__(self, file: BinaryIO):
    super().__init__(file, protocol=2)
    self.storages: list[np.ndarray] = []

  def persistent_id(self, obj):
    return obj.pid if type(obj) is _StorageRef else None

  def reducer_override(self, obj):
    if not isinstance(obj, np.ndarray):
      return NotImplemented
    data = np.asarray(obj, dtype=obj.dtype.newbyteorder('<'), order='C')
    key = str(len(self.storages))
    self.storages.append(data)
    storage = _StorageRef(('storage', _STORAGES[data.dtype.newbyteorder('=')], key, 'cpu', data.size))
    # torch's tensor.__reduce_ex__: (storage, offset, size, stride, requires_grad, backward_hooks)
    return _REBUILD_TENSOR, (storage, 0, tuple(data.shape), _strides(data.shape), False, collections.OrderedDict())

  def _save_global(self, obj: _Global):
    self.write(pickle.GLOBAL + f'{obj.module}\n{obj.name}\n'.encode('ascii'))
    self.memoize(obj)

  dispatch[_Global] = _save_global


def _pickle(obj: Any) -> tuple[bytes, list[np.ndarray]]:
  f = io.BytesIO()
  pickler = _TorchPickler(f)
  pickler.dump(obj)
  return f.getvalue(), pickler.storages


# ----------------------------------------------------------------------------------------------------- the zip


def _archive_name(path: str) -> str:
  """torch's: the file's name up to its last dot; 'archive' where torch writes through a stream (non-ASCII)."""
  name = re.split(r'[/\\]', path)[-1]
  stem = name.rpartition('.')[0] if '.' in name else name
  return stem if stem and stem.isascii() else 'archive'


def _serialization_id(names: list[str], crcs: list[int]) -> str:
  """40 digits that identify the content: 20 from a hash of the record names, 20 from one of their CRCs."""
  def digits(data: bytes) -> str:
    return f'{int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little"):020d}'
  return digits('\0'.join(names).encode('utf-8')) + digits(b''.join(c.to_bytes(4, 'little') for c in crcs))


class _ZipWriter:
  """Writes records as torch's writer (miniz, forced zip64) does; `finish` writes the central directory."""

  def __init__(self, f: BinaryIO, archive: str):
    self.f, self.archive, self.offset = f, archive, 0
    self.entries: list[tuple[bytes, int, int, int, int]] = []   # (name, flags, crc, size, header offset)

  def _write(self, data) -> None:
    self.f.write(data)
    self.offset += len(data)

  def add(self, name: str, data) -> int:
    """Writes `data` (bytes, or a contiguous array) as `<archive>/<name>`; returns its CRC-32."""
    raw = data.reshape(-1).view(np.uint8) if isinstance(data, np.ndarray) else data
    size, crc = len(raw), zlib.crc32(raw)
    full = f'{self.archive}/{name}'.encode('utf-8')
    pad = (-(self.offset + 30 + len(full) + 4)) % _ALIGNMENT
    flags = 0x0808 if size else 0x0800   # UTF-8 names; a data descriptor follows (none after an empty record)
    self.entries.append((full, flags, crc, size, self.offset))
    self._write(struct.pack('<IHHHHHIIIHH', 0x04034B50, 0, flags, 0, 0, 0, 0, 0, 0, len(full), 4 + pad))
    self._write(full + b'FB' + struct.pack('<H', pad) + b'Z' * pad)
    self._write(raw)
    if size:
      self._write(struct.pack('<IIII', 0x08074B50, crc, size, size))
    return crc

  def finish(self) -> None:
    start = self.offset
    for full, flags, crc, size, header in self.entries:
      self._write(struct.pack('<IHHHHHHIIIHHHHHII', 0x02014B50, 0, 0, flags, 0, 0, 0, crc, size, size, len(full),
                              0, 0, 0, 0, 0, header) + full)
    n, size, end = len(self.entries), self.offset - start, self.offset
    self._write(struct.pack('<IQHHIIQQQQ', 0x06064B50, 44, 0x031E, 0x002D, 0, 0, n, n, size, start))
    self._write(struct.pack('<IIQI', 0x07064B50, 0, end, 1))
    self._write(struct.pack('<IHHHHIIH', 0x06054B50, 0, 0, min(n, 0xFFFF), min(n, 0xFFFF), size, start, 0))


def _records(pickled: bytes, storages: list[np.ndarray]) -> list[tuple[str, Any]]:
  """Every record but the serialization id, in torch's order."""
  return ([('data.pkl', pickled), ('.format_version', b'1'), ('.storage_alignment', str(_ALIGNMENT).encode()),
           ('byteorder', b'little')] + [(f'data/{key}', data) for key, data in enumerate(storages)]
          + [('version', b'3\n')])


def _write_zip(path: str, archive: str, records: list[tuple[str, Any]]) -> None:
  with open(path, 'wb') as f:
    writer = _ZipWriter(f, archive)
    crcs = [writer.add(name, data) for name, data in records]
    writer.add('.data/serialization_id', _serialization_id([n for n, _ in records], crcs).encode('ascii'))
    writer.finish()


def save(obj: Any, path: str | os.PathLike) -> str:
  """Writes `obj` as `torch.save(obj, path)` would (zip format, arrays as CPU tensors); returns the absolute path.

  The whole object is checked and pickled before anything is written; the file is then written beside `path`
  and renamed over it when complete (an existing file is replaced only by that rename; an interrupted write
  leaves `path` as it was and no temporary behind).

  Raises:
    ValueError: `obj` holds something not saved here (see the module's docstring), or would make a file of
      4 GiB or more; nothing was written.
  """
  path = os.fspath(path)
  _check(obj, 'the object', set())
  pickled, storages = _pickle(obj)
  records = _records(pickled, storages)
  archive = _archive_name(path)
  # Upper bound of the file: each record's header, name, padding and descriptor, the directory and its ends.
  bound = sum(data.nbytes if isinstance(data, np.ndarray) else len(data) for _, data in records)
  bound += (len(records) + 1) * (30 + 46 + 2 * len(archive) + 2 * 24 + 4 + _ALIGNMENT + 16 + 40) + 200
  if bound >= _MAX_FILE_BYTES:
    raise ValueError(f'{path}: the checkpoint would take about {bound / 2**30:.1f} GiB; files of 4 GiB or more '
                     'are not written here (they need zip64 records)')
  return atomic.write_file(path, lambda tmp: _write_zip(tmp, archive, records))
