"""Atomic writing: the one way files and folders of depthnet-jax appear on disk.

Everything is written under a temporary name beside its target and renamed into place when complete, so a
reader never sees half a file, and an interrupted writer (an error, Ctrl-C, SIGKILL) leaves no half-result that
looks whole. The temporary name says who wrote it:

    .<name>.partial-<host>-<pid>-<random>[<ext>]

hidden (leading dot), with the target's extension (tools that pick a format from it still work), and the host
and process id of its writer, so that a later run can tell a dead writer's leftover (`sweep`) from the file of
a live one, including on a disk shared by several machines (other hosts' temporaries are never touched).

Only the standard library: the renderer, the training loop and inference all use it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from typing import Callable, Iterator

from depthnet_jax.common import cli, processes

HOST = re.sub(r'[^A-Za-z0-9_.]', '_', socket.gethostname())[:40] or 'host'
# The host has no '-' (replaced above) and neither has the random part (tempfile's), so the fields split cleanly.
_TEMPORARY = re.compile(r'^\.(?P<name>.+)\.partial-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)-(?P<random>[A-Za-z0-9_]+)'
                        r'(?P<ext>\.[A-Za-z0-9]+)?$')


def temporary_prefix(name: str) -> str:
  """The start of this process's temporary names for a target called `name`."""
  return f'.{name}.partial-{HOST}-{os.getpid()}-'


def parse_temporary(name: str) -> dict[str, str] | None:
  """The fields (name, host, pid, random, ext) of a temporary name, or None if `name` is not one."""
  match = _TEMPORARY.match(name)
  if not match:
    return None
  fields = match.groupdict()
  fields['ext'] = fields['ext'] or ''
  return fields


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def temporary_file(path: str) -> str:
  """Creates an empty temporary file beside `path` (permissions as a plain `open` would give) and returns it."""
  directory, name = os.path.split(os.path.abspath(os.fspath(path)))
  fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(name), suffix=os.path.splitext(name)[1], dir=directory)
  os.close(fd)
  os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make the result private
  return tmp


def temporary_dir(path: str) -> str:
  """Creates an empty temporary folder beside `path` and returns it."""
  directory, name = os.path.split(os.path.abspath(os.fspath(path)))
  tmp = tempfile.mkdtemp(prefix=temporary_prefix(name), dir=directory)
  os.chmod(tmp, 0o777 & ~_umask())
  return tmp


def rename_no_clobber(src: str, dst: str) -> None:
  """Renames src to dst unless dst exists (FileExistsError); atomic where hard links work (link + unlink)."""
  if os.path.isdir(src):
    if os.path.lexists(dst):
      raise FileExistsError(f'{dst} appeared while it was being written; it is left as it is')
    os.rename(src, dst)   # a folder onto an existing non-empty folder fails on its own
    return
  try:
    os.link(src, dst)
  except FileExistsError:
    raise FileExistsError(f'{dst} appeared while it was being written; it is left as it is') from None
  except OSError:  # no hard links on this file system: check, then rename (a narrow race)
    if os.path.lexists(dst):
      raise FileExistsError(f'{dst} appeared while it was being written; it is left as it is') from None
    os.rename(src, dst)
    return
  os.remove(src)


def _remove(path: str) -> None:
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path, ignore_errors=True)
  elif os.path.lexists(path):
    with contextlib.suppress(OSError):
      os.remove(path)


def write_file(path: str | os.PathLike, write: Callable[[str], object], *, overwrite: bool = True) -> str:
  """Calls `write(tmp)` with a temporary path beside `path`, then renames it to `path`; returns `path`.

  The temporary is removed whatever happens (Ctrl-C included). Without `overwrite`, an existing `path` (also one
  that appears while writing) is a FileExistsError and is left as it is.
  """
  path = os.path.abspath(os.fspath(path))
  if not overwrite and os.path.lexists(path):
    raise FileExistsError(f'{path} exists already')
  tmp = ''
  try:
    with processes.signals_deferred():   # Ctrl-C or SIGTERM between the creation and `try` would leave it
      tmp = temporary_file(path)
    write(tmp)
    if overwrite:
      os.replace(tmp, path)
    else:
      rename_no_clobber(tmp, path)
  finally:
    if tmp and os.path.lexists(tmp):
      _remove(tmp)
  return path


@contextlib.contextmanager
def writing_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[str]:
  """`with writing_dir(target) as tmp:` fill the folder `tmp`; on success it becomes `target`, else it is removed.

  With `overwrite`, an existing `target` is replaced (moved aside, then removed once the new one is in place);
  without, an existing `target` is a FileExistsError.
  """
  path = os.path.abspath(os.fspath(path))
  if not overwrite and os.path.lexists(path):
    raise FileExistsError(f'{path} exists already')
  tmp = ''
  try:
    with processes.signals_deferred():   # as in write_file
      tmp = temporary_dir(path)
    yield tmp
    if overwrite and os.path.lexists(path):
      old = temporary_dir(path)
      os.rmdir(old)
      os.rename(path, old)
      os.rename(tmp, path)
      _remove(old)
    else:
      rename_no_clobber(tmp, path)
  finally:
    if tmp and os.path.lexists(tmp):
      _remove(tmp)


def write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> str:
  def write(tmp):
    with open(tmp, 'wb') as f:
      f.write(data)
  return write_file(path, write, overwrite=overwrite)


def write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> str:
  return write_bytes(path, text.encode('utf-8'), overwrite=overwrite)


def write_png(path: str | os.PathLike, image, *, overwrite: bool = True) -> str:
  """An image (uint8 [H, W, 3]) as PNG, or JPEG if `path` ends in .jpg/.jpeg."""
  import imageio.v3 as iio  # imageio only when a picture is written
  ext = os.path.splitext(os.fspath(path))[1].lower() or '.png'
  return write_file(path, lambda tmp: iio.imwrite(tmp, image, extension=ext), overwrite=overwrite)


def write_npy(path: str | os.PathLike, array, *, overwrite: bool = True) -> str:
  import numpy as np

  def write(tmp):
    with open(tmp, 'wb') as f:
      np.save(f, np.asarray(array), allow_pickle=False)
  return write_file(path, write, overwrite=overwrite)


def sweep(folder: str, *, accept: Callable[[dict[str, str], str], bool] = lambda fields, path: True,
          log: Callable[[str], object] | None = None) -> list[str]:
  """Removes the temporaries in `folder` of writers of this host that are no longer running.

  `accept(fields, path)` narrows what is removed (e.g. only temporaries of our own output names, or only
  folders). A live writer's temporaries, other hosts' (a shared disk), and names not of our scheme are left
  alone. Returns the removed paths; `log(line)` is called for each.
  """
  removed = []
  try:
    names = sorted(os.listdir(folder))
  except OSError:
    return removed
  for name in names:
    fields = parse_temporary(name)
    if fields is None or fields['host'] != HOST:
      continue
    pid = int(fields['pid'])
    path = os.path.join(folder, name)
    if pid == os.getpid() or cli.pid_alive(pid) or os.path.islink(path) or not accept(fields, path):
      continue
    try:
      if os.path.isdir(path):
        shutil.rmtree(path)
      else:
        os.remove(path)
    except OSError:  # another run sweeping the same folder, or no permission: not ours to fail on
      continue
    removed.append(path)
    if log:
      log(f'removed {path}: left by process {pid}, which is no longer running')
  return removed


def make_dirs(path: str) -> list[str]:
  """os.makedirs(path, exist_ok=True); returns the folders it created, deepest first (for `remove_empty`)."""
  created = []
  path = os.path.abspath(path)
  while not os.path.isdir(path):
    created.append(path)
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  os.makedirs(created[0] if created else path, exist_ok=True)
  return created


def remove_empty(folders: list[str]) -> None:
  """Removes the folders (deepest first) that `make_dirs` created, if they are still empty."""
  for folder in folders:
    try:
      os.rmdir(folder)
    except OSError:
      return
