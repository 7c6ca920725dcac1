"""Reads `torch.save` files without PyTorch, and without running any code a pickle names.

Both serialisations are read:
- the zip format (torch >= 1.6): a zip archive holding `<name>/data.pkl` and one raw record per storage,
  `<name>/data/<key>`;
- the legacy format (torch < 1.6, what the published 2018 DepthNet checkpoints use): a magic-number pickle,
  a protocol-version pickle, a system-info pickle, the object pickle, the list of storage keys, then each
  storage as an int64 element count followed by its raw bytes.

Unpickling goes through an allow-list: the only globals a file may name are the ones a checkpoint of tensors,
dicts and numbers needs (`collections.OrderedDict`, torch's tensor and parameter rebuild functions, the typed
storage classes and dtypes, numpy scalars); each resolves to a function of this module. Anything else, for
instance `os.system` or a model class, is refused with `UnsafeCheckpointError` before it is called. Tensors
come back as numpy arrays, with their storage offsets and strides checked against the storage bounds.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import pickle
import pickletools
import tarfile
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# Bounds no DepthNet checkpoint comes near; a corrupt file could otherwise ask for gigabytes.
_MAX_MEMO_INDEX = 10_000_000
_MAX_PICKLE_BYTES = 1 << 30

_STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32, 'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
    'UntypedStorage': np.uint8,
}
_TORCH_DTYPES = {
    'float64': np.float64, 'double': np.float64, 'float32': np.float32, 'float': np.float32,
    'float16': np.float16, 'half': np.float16, 'bfloat16': ml_dtypes.bfloat16, 'int64': np.int64,
    'long': np.int64, 'int32': np.int32, 'int': np.int32, 'int16': np.int16, 'short': np.int16,
    'int8': np.int8, 'uint8': np.uint8, 'bool': np.bool_,
}


class TorchCheckpointError(ValueError):
  """A file that is not a readable torch checkpoint; the message names the file and what was wrong."""


class UnsafeCheckpointError(TorchCheckpointError):
  """A pickle that names a global outside the allow-list; nothing it names was called."""


class _Sealed:
  """Objects handed to a pickle refuse BUILD, so a pickle cannot set their attributes."""
  __slots__ = ()

  def __setstate__(self, state):
    raise UnsafeCheckpointError(f'the pickle tries to set the state of {type(self).__name__}')


class _Global(_Sealed):
  """An allow-listed function, as find_class hands it to the pickle."""
  __slots__ = ('fn',)

  def __init__(self, fn):
    self.fn = fn

  def __call__(self, *args):
    return self.fn(*args)


class _DtypeRef(_Sealed):
  """A torch storage class or dtype named by a pickle, standing for a numpy dtype."""
  __slots__ = ('dtype',)

  def __init__(self, dtype):
    self.dtype = np.dtype(dtype)


class _Storage(_Sealed):
  """A typed torch storage; `data` (a 1-D numpy array) is filled when its bytes have been read."""
  __slots__ = ('dtype', 'numel', 'key', 'data')

  def __init__(self, dtype: np.dtype, numel: int, key: str):
    self.dtype, self.numel, self.key = np.dtype(dtype), int(numel), key
    self.data: np.ndarray | None = None


class _StorageView(_Sealed):
  """A legacy-format view on a slice of a root storage."""
  __slots__ = ('root', 'offset', 'numel')

  def __init__(self, root: _Storage, offset: int, numel: int):
    self.root, self.offset, self.numel = root, int(offset), int(numel)

  @property
  def dtype(self):
    return self.root.dtype


class _LazyTensor(_Sealed):
  """A tensor whose storage bytes may come later in the file (legacy format)."""
  __slots__ = ('storage', 'offset', 'size', 'stride', 'dtype')

  def __init__(self, storage, offset, size, stride, dtype=None):
    if not isinstance(storage, (_Storage, _StorageView)):
      raise TorchCheckpointError(f'a tensor rebuild received {type(storage).__name__} instead of a storage')
    if not (isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list))):
      raise TorchCheckpointError(f'a tensor rebuild received size {size!r:.40} and stride {stride!r:.40}')
    self.storage, self.offset = storage, offset
    self.size, self.stride = tuple(size), tuple(stride)
    self.dtype = np.dtype(dtype) if dtype is not None else storage.dtype


class _Marker(_Sealed):
  """Stand-in for a torch class a pickle may name but that need not exist here (Tensor, Parameter)."""
  __slots__ = ('name',)

  def __init__(self, name: str):
    self.name = name


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, *unused):
  if not isinstance(dtype, _DtypeRef):
    raise TorchCheckpointError(f'_rebuild_tensor_v3 received dtype {dtype!r:.40}')
  return _LazyTensor(storage, storage_offset, size, stride, dtype.dtype)


def _rebuild_parameter(data, *unused):
  return data


def _rebuild_from_type_v2(func, new_type, args, state):
  if not (isinstance(new_type, _Marker) and isinstance(func, _Global) and func.fn in _REBUILD_FUNCTIONS):
    raise UnsafeCheckpointError(f'_rebuild_from_type_v2 with {func!r}, {new_type!r} is not allowed')
  return func(*args)


def _codecs_encode(text, encoding='utf-8'):
  # Protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(str, 'latin1').
  if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
    raise UnsafeCheckpointError(f'_codecs.encode({type(text).__name__}, {encoding!r}) is not allowed')
  return text.encode('latin1')


def _numpy_dtype(name, align=False, copy=False):
  if not isinstance(name, str):
    raise UnsafeCheckpointError(f'numpy dtype from {type(name).__name__} is not allowed')
  # A copy, never numpy's shared instance: the pickle goes on to BUILD (set the state of) this object.
  dtype = np.dtype(name, copy=True)
  if dtype.kind not in 'biufc':
    raise UnsafeCheckpointError(f'numpy dtype {name!r} is not allowed (numbers only)')
  return dtype


def _numpy_scalar(dtype, data=None):
  if not isinstance(dtype, np.dtype) or dtype.kind not in 'biufc' or not isinstance(data, bytes):
    raise UnsafeCheckpointError(f'numpy scalar of dtype {dtype!r} is not allowed (numbers only)')
  return np.frombuffer(data, dtype)[0]


_REBUILD_FUNCTIONS = (_rebuild_tensor, _rebuild_tensor_v3, _rebuild_parameter)

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v3'): _rebuild_tensor_v3,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    ('torch._tensor', '_rebuild_from_type_v2'): _rebuild_from_type_v2,
    ('torch', 'Tensor'): _Marker('torch.Tensor'),
    ('torch.nn.parameter', 'Parameter'): _Marker('torch.nn.Parameter'),
    ('_codecs', 'encode'): _codecs_encode,
    ('numpy', 'dtype'): _numpy_dtype,
    ('numpy.core.multiarray', 'scalar'): _numpy_scalar,
    ('numpy._core.multiarray', 'scalar'): _numpy_scalar,
}
_ALLOWED_GLOBALS.update({('torch', name): _DtypeRef(dtype) for name, dtype in _STORAGE_DTYPES.items()})
_ALLOWED_GLOBALS.update({('torch.storage', 'UntypedStorage'): _DtypeRef(np.uint8)})
_ALLOWED_GLOBALS.update({('torch', name): _DtypeRef(dtype) for name, dtype in _TORCH_DTYPES.items()})


def _prescan(f: io.BytesIO, path: str) -> None:
  """Walks the pickle starting at f's position (and rewinds): a memo index beyond any plausible size would make
  the unpickler allocate and zero gigabytes before failing."""
  start = f.tell()
  for opcode, arg, _ in pickletools.genops(f):
    if opcode.name in ('PUT', 'BINPUT', 'LONG_BINPUT', 'GET', 'BINGET', 'LONG_BINGET'):
      if not 0 <= int(arg) <= _MAX_MEMO_INDEX:
        raise TorchCheckpointError(f'{path}: corrupt pickle (memo index {arg})')
  f.seek(start)


class _SafeUnpickler(pickle.Unpickler):
  """Resolves globals only through the allow-list and torch storages through `storage_source`."""

  def __init__(self, file: io.BytesIO, path: str, storage_source):
    _prescan(file, path)
    super().__init__(file, encoding='latin1')
    self._path = path
    self._storage_source = storage_source

  def find_class(self, module: str, name: str):
    try:
      obj = _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise UnsafeCheckpointError(
          f'{self._path}: refusing to load: the pickle names the global {module}.{name}, which a DepthNet '
          f'checkpoint (tensors, dicts and numbers) does not need; nothing it names was run. If this is a '
          f'whole pickled model, save its state_dict instead.') from None
    # Functions and classes go out wrapped: the pickle can call them but not reach or modify them.
    return obj if isinstance(obj, _Sealed) else _Global(obj)

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage'):
      raise TorchCheckpointError(f'{self._path}: unexpected persistent id {pid!r:.80}')
    dtype, key, numel = pid[1], str(pid[2]), pid[4]
    if not isinstance(dtype, _DtypeRef) or not isinstance(numel, int) or numel < 0:
      raise TorchCheckpointError(f'{self._path}: malformed storage record {pid!r:.80}')
    if self._storage_source is None:
      raise TorchCheckpointError(f'{self._path}: a storage where none may be')
    return self._storage_source(dtype.dtype, key, numel, pid[5] if len(pid) > 5 else None)


# What malformed pickle content raises inside the unpickler or our rebuild functions.
# (MemoryError: a corrupt length or memo index asks the unpickler for an absurd allocation.)
_CORRUPT = (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            OverflowError, RecursionError, MemoryError, NotImplementedError, zipfile.BadZipFile)


@contextlib.contextmanager
def _corrupt_is_an_error(what: str):
  """Turns any failure on malformed content into a TorchCheckpointError that says `what` was corrupt."""
  try:
    yield
  except TorchCheckpointError:
    raise
  except _CORRUPT as e:
    raise TorchCheckpointError(f'{what} ({type(e).__name__}: {e})') from None


def _materialize(obj, path: str):
  """Replaces every `_LazyTensor` in a tree of dicts, lists and tuples by a numpy array."""
  if isinstance(obj, _LazyTensor):
    return _tensor_to_numpy(obj, path)
  if isinstance(obj, dict):
    out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
    for k, v in obj.items():
      out[k] = _materialize(v, path)
    return out
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialize(v, path) for v in obj)
  if isinstance(obj, (_Storage, _StorageView)):
    raise TorchCheckpointError(f'{path}: a bare storage outside any tensor is not supported')
  return obj


def _tensor_to_numpy(t: _LazyTensor, path: str) -> np.ndarray:
  storage, base = t.storage, 0
  if isinstance(storage, _StorageView):
    root = storage.root
    if not isinstance(root, _Storage) or storage.offset < 0 or storage.offset + storage.numel > root.numel:
      raise TorchCheckpointError(f'{path}: a storage view outside its root storage')
    storage, base = storage.root, storage.offset
  if storage.data is None:
    raise TorchCheckpointError(f'{path}: the data of storage {storage.key} is missing (truncated file?)')
  flat = storage.data
  if t.dtype != flat.dtype:  # _rebuild_tensor_v3 over an untyped (byte) storage
    flat = flat.view(np.uint8).view(t.dtype) if flat.nbytes % t.dtype.itemsize == 0 else None
    if flat is None:
      raise TorchCheckpointError(f'{path}: storage {storage.key} does not hold whole {t.dtype} elements')
  size, stride = t.size, t.stride
  offset = base + t.offset if isinstance(t.offset, int) else -1
  if len(size) != len(stride) or offset < 0 or any(not isinstance(v, int) or v < 0 for v in size + stride):
    raise TorchCheckpointError(f'{path}: malformed tensor (size {size}, stride {stride}, offset {offset})')
  if 0 in size:
    return np.zeros(size, t.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= flat.size:
    raise TorchCheckpointError(
        f'{path}: tensor of size {size} and stride {stride} at offset {offset} reaches element {last} of '
        f'storage {storage.key}, which holds {flat.size}')
  view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size,
                                         strides=tuple(s * flat.itemsize for s in stride), writeable=False)
  return np.array(view)


def _load_zip(path: str, raw: bytes):
  with zipfile.ZipFile(io.BytesIO(raw)) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith('/data.pkl') and n.count('/') == 1]
    if not pickles:
      raise TorchCheckpointError(f'{path}: a zip file, but not a torch checkpoint (no <name>/data.pkl inside)')
    prefix = pickles[0][:-len('data.pkl')]
    byteorder = 'little'
    if prefix + 'byteorder' in names:
      byteorder = archive.read(prefix + 'byteorder').decode('ascii', 'replace').strip()
    storages: dict[str, _Storage] = {}

    def storage_source(dtype, key, numel, unused):
      if key not in storages:
        record = f'{prefix}data/{key}'
        if record not in names:
          raise TorchCheckpointError(f'{path}: storage record {record} is missing')
        if archive.getinfo(record).file_size != numel * dtype.itemsize:  # checked before reading it
          raise TorchCheckpointError(f'{path}: storage record {record} holds {archive.getinfo(record).file_size} '
                                     f'bytes where {numel} x {dtype} = {numel * dtype.itemsize} were expected')
        storage = _Storage(dtype, numel, key)
        storage.data = _decode_storage(archive.read(record), dtype, numel, byteorder, f'{path}: {record}')
        storages[key] = storage
      return storages[key]

    if archive.getinfo(pickles[0]).file_size > _MAX_PICKLE_BYTES:
      raise TorchCheckpointError(f'{path}: {pickles[0]} is implausibly large for a checkpoint')
    obj = _SafeUnpickler(io.BytesIO(archive.read(pickles[0])), path, storage_source).load()
  return obj


def _decode_storage(buf: bytes, dtype: np.dtype, numel: int, byteorder: str, where: str) -> np.ndarray:
  if byteorder not in ('little', 'big'):
    raise TorchCheckpointError(f'{where}: unknown byte order {byteorder!r}')
  expected = numel * dtype.itemsize
  if len(buf) != expected:
    raise TorchCheckpointError(f'{where}: {len(buf)} bytes where {numel} x {dtype} = {expected} were expected'
                               ' (truncated file?)')
  wire = dtype.newbyteorder('<' if byteorder == 'little' else '>') if dtype.itemsize > 1 else dtype
  return np.frombuffer(buf, wire).astype(dtype, copy=True)


def _load_legacy(path: str, raw: bytes):
  f = io.BytesIO(raw)
  with _corrupt_is_an_error(f'{path}: not a torch checkpoint (the file does not start with a torch header)'):
    magic = _SafeUnpickler(f, path, None).load()
    if magic != _LEGACY_MAGIC:
      raise TorchCheckpointError(f'{path}: not a torch checkpoint (no torch magic number at the start)')
    protocol = _SafeUnpickler(f, path, None).load()
    if protocol != _LEGACY_PROTOCOL:
      raise TorchCheckpointError(f'{path}: unsupported legacy torch protocol version {protocol!r:.40}')
    sys_info = _SafeUnpickler(f, path, None).load()
  little_endian = sys_info.get('little_endian', True) if isinstance(sys_info, dict) else True
  roots: dict[str, _Storage] = {}

  def storage_source(dtype, key, numel, view_metadata):
    if key not in roots:
      roots[key] = _Storage(dtype, numel, key)
    if view_metadata is None:
      return roots[key]
    view_key, view_offset, view_numel = view_metadata
    return _StorageView(roots[key], view_offset, view_numel)

  with _corrupt_is_an_error(f'{path}: corrupt or truncated checkpoint'):
    obj = _SafeUnpickler(f, path, storage_source).load()
    keys = _SafeUnpickler(f, path, None).load()
  if not isinstance(keys, list):
    raise TorchCheckpointError(f'{path}: malformed storage key list')
  for key in keys:
    storage = roots.get(str(key))
    if storage is None:
      raise TorchCheckpointError(f'{path}: storage {key} is listed but no tensor uses it')
    header = f.read(8)
    if len(header) < 8:
      raise TorchCheckpointError(f'{path}: truncated file: the data of storage {key} is missing')
    numel = int.from_bytes(header, 'little' if little_endian else 'big', signed=True)
    if numel != storage.numel:
      raise TorchCheckpointError(f'{path}: storage {key} holds {numel} elements where {storage.numel} were '
                                 'announced')
    buf = f.read(numel * storage.dtype.itemsize)
    storage.data = _decode_storage(buf, storage.dtype, numel, 'little' if little_endian else 'big',
                                   f'{path}: storage {key}')
  return obj


def file_format(path: str | os.PathLike) -> str:
  """'zip' or 'legacy' for a torch checkpoint (by its first bytes), else 'unknown'."""
  with open(path, 'rb') as f:
    head = f.read(4)
  return {b'PK\x03\x04': 'zip'}.get(head, 'legacy' if head[:1] == b'\x80' else 'unknown')


def load(path: str | os.PathLike) -> Any:
  """Reads a `torch.save` file; tensors become numpy arrays, containers stay dicts, lists and tuples.

  Raises:
    FileNotFoundError: no such file.
    UnsafeCheckpointError: the pickle names a global outside the allow-list (nothing was run).
    TorchCheckpointError: the file is not a torch checkpoint, or is truncated or corrupt.
  """
  path = os.fspath(path)
  with open(path, 'rb') as f:
    raw = f.read()
  if not raw:
    raise TorchCheckpointError(f'{path}: empty file, not a torch checkpoint')
  try:
    is_zip = zipfile.is_zipfile(io.BytesIO(raw))
  except zipfile.BadZipFile:  # is_zipfile lets some of these through
    is_zip = False
  if raw[:4] == b'PK\x03\x04' and not is_zip:
    raise TorchCheckpointError(f'{path}: a truncated or corrupt zip checkpoint (no zip directory at its end)')
  if is_zip:
    with _corrupt_is_an_error(f'{path}: corrupt zip checkpoint'):
      obj = _load_zip(path, raw)
  elif raw[:1] == b'\x80':  # a pickle protocol >= 2 header: the legacy format
    obj = _load_legacy(path, raw)
  elif tarfile.is_tarfile(path):
    raise TorchCheckpointError(f'{path}: the tar checkpoint format of PyTorch < 0.1.10 is not supported; '
                               'load and re-save it with a newer PyTorch')
  else:
    raise TorchCheckpointError(f'{path}: not a torch checkpoint (neither a zip archive nor a pickle)')
  with _corrupt_is_an_error(f'{path}: corrupt checkpoint'):
    return _materialize(obj, path)
