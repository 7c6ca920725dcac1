"""Hand-made torch checkpoint files for the reader's tests: any global, any tensor record, either container.

`dumps` pickles a tree in which `G` stands for a global (emitted as a GLOBAL opcode, whatever it names),
`R(func, *args)` for a call, `Build(obj, state)` for a BUILD, and `Storage(pid)` for a torch persistent id.
"""

from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class G:

  def __init__(self, module: str, name: str):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle's save_reduce wants a callable; this one is only ever written
    raise AssertionError('never called')


class R:

  def __init__(self, func, *args):
    self.func, self.args = func, args


class Build:

  def __init__(self, obj, state):
    self.obj, self.state = obj, state


class Storage:

  def __init__(self, *pid):
    self.pid = pid


class _Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can be extended
  dispatch = pickle._Pickler.dispatch.copy()

  def persistent_id(self, obj):
    return obj.pid if isinstance(obj, Storage) else None

  def _save_global(self, obj):
    self.write(pickle.GLOBAL + f'{obj.module}\n{obj.name}\n'.encode())

  def _save_reduce(self, obj):
    self.save(obj.func)
    self.save(tuple(obj.args))
    self.write(pickle.REDUCE)

  def _save_build(self, obj):
    self.save(obj.obj)
    self.save(obj.state)
    self.write(pickle.BUILD)

  dispatch[G] = _save_global
  dispatch[R] = _save_reduce
  dispatch[Build] = _save_build


def dumps(obj, protocol: int = 2) -> bytes:
  f = io.BytesIO()
  _Pickler(f, protocol).dump(obj)
  return f.getvalue()


def tensor(storage: Storage, offset, size, stride, *, v2: bool = True):
  """A tensor record: `_rebuild_tensor_v2` (torch >= 0.4) or the 4-argument `_rebuild_tensor` (torch 0.3)."""
  if v2:
    return R(G('torch._utils', '_rebuild_tensor_v2'), storage, offset, tuple(size), tuple(stride), False,
             R(G('collections', 'OrderedDict')))
  return R(G('torch._utils', '_rebuild_tensor'), storage, offset, tuple(size), tuple(stride))


def legacy_file(main_pickle: bytes, storages: dict[str, np.ndarray]) -> bytes:
  """The torch < 1.6 container around an already made object pickle."""
  sys_info = {'protocol_version': 1001, 'little_endian': True, 'type_sizes': {'short': 2, 'int': 4, 'long': 4}}
  out = [pickle.dumps(LEGACY_MAGIC, 2), pickle.dumps(1001, 2), pickle.dumps(sys_info, 2), main_pickle,
         pickle.dumps(list(storages), 2)]
  for array in storages.values():
    out += [np.int64(array.size).tobytes(), np.ascontiguousarray(array).tobytes()]
  return b''.join(out)


def zip_file(main_pickle: bytes, storages: dict[str, np.ndarray]) -> bytes:
  """The torch >= 1.6 container around an already made object pickle."""
  f = io.BytesIO()
  with zipfile.ZipFile(f, 'w', zipfile.ZIP_STORED) as archive:
    archive.writestr('archive/data.pkl', main_pickle)
    archive.writestr('archive/byteorder', 'little')
    for key, array in storages.items():
      archive.writestr(f'archive/data/{key}', np.ascontiguousarray(array).tobytes())
    archive.writestr('archive/version', '3\n')
  return f.getvalue()
