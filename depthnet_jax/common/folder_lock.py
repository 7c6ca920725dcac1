"""One writer per folder: an exclusive lock a command holds on what it writes, from before its first file to its end.

Two commands writing one folder at once mix their results (two train.py in one workdir: a checkpoint marked
committed without its metadata, two event files of duplicate scalars; two infer.py into one --output: the second
run's files under the first's manifest). So every command that writes a folder takes `hold(path, flag)` before it
writes anything there, and a second command on the same path is refused at once, before any work, with one line:

    error: --output /x/out: another command (pid 1234, infer.py --input ...) is writing there; expected a folder
    no other command is writing (wait for it to finish, or choose another)

**What is locked, per command.** A folder a command fills and keeps is locked by a hidden file in it,
`<folder>/.depthnet-lock` (infer.py's `--output`). A path that is replaced or renamed into place as a whole, or
whose folder is checked for foreign files, is locked by a hidden sibling, `<parent>/.<name>.lock` (`beside=True`),
so that unrelated outputs in one parent do not block each other: train.py's workdir (its path check refuses a
folder holding files that are not a run's, a lock inside would be one), the renderer's tree `--out DIR/<R>` (and
its `--contact_sheet`), the evaluate command's `--json` and `--plot` files, torch_import's OUT_DIR (replaced whole
with --overwrite), and a TFDS build's `<data_dir>/<dataset>/<config>/<version>` (TFDS itself lets two builds of
one version run side by side: both generate into their own `incomplete.*` folder and the second fails at its
rename, after all the work). A missing folder (the locked one or the sibling's parent) is created, as the command
would create it anyway, and removed again on the way out if it is still empty. With `jax.distributed`, process 0
of a run holds the workdir for all of its processes (`train.trainer`).

**Why flock.** `fcntl.flock(LOCK_EX | LOCK_NB)` on the open lock file: the kernel releases it when its holder
exits in any way, SIGKILL and power loss included, so a killed run never blocks the next one; the file it leaves
is unlocked, and the next command simply takes it. A pid file alone could not tell a live holder from a dead one
whose pid was reused. (flock works on local file systems and, on Linux, on NFS, where it is a POSIX lock.) The
holder writes its pid, host and command line into the file, which a refused command reads to name it.

**The unlink race.** The lock file is removed on the way out (the disk is left as it was, plus the outputs):
while still locked, then closed. A second command may have opened the file just before it was removed and lock
it just after: it then holds a lock on a file no path names, while a third command creates a new file at the path
and locks that. So after taking the lock, `acquire` checks that the path still names the file it locked (`os.stat`
against `os.fstat`: device and inode), and starts again if not.

Standard library only (and `cli`, `atomic`): the renderer, the TFDS builder and the commands' checks use it before
JAX starts.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from typing import Any, Iterator

from depthnet_jax.common import atomic, cli

LOCK_NAME = '.depthnet-lock'   # the lock file inside a locked folder
LOCK_SUFFIX = '.lock'           # a path locked beside itself: <parent>/.<name>.lock
_ATTEMPTS = 50                  # the unlink race lost this many times in a row would be a bug: stop
_READ_WAIT = 1.0                # seconds a refused command waits for a new holder to write who it is


class HeldError(cli.UserError):
  """Another command holds the lock; `holder`: what it wrote into the lock file (pid, host, command), or {}."""

  def __init__(self, message: str, holder: dict[str, Any]):
    super().__init__(message)
    self.holder = holder


def lock_path(path: str, *, beside: bool = False) -> str:
  """The lock file of `path`: `<path>/.depthnet-lock`, or with `beside` `<parent>/.<name>.lock`.

  Symbolic links are resolved, so every spelling of a path locks the same file.
  """
  real = os.path.realpath(os.path.abspath(os.fspath(path)))
  if not beside:
    return os.path.join(real, LOCK_NAME)
  parent, name = os.path.split(real)
  return os.path.join(parent, f'.{name}{LOCK_SUFFIX}')


class Lock:
  """A held lock (`acquire`); `release` (idempotent) removes its file and the folders `acquire` created, if empty."""

  def __init__(self, path: str, fd: int, created: list[str]):
    self.path, self._fd, self.created = path, fd, created

  @property
  def held(self) -> bool:
    return self._fd is not None

  def release(self) -> None:
    fd, self._fd = self._fd, None
    if fd is None:
      return
    try:
      if _same_file(fd, self.path):   # removed while still locked (see the module docstring: the unlink race)
        os.remove(self.path)
    except OSError:   # the folder went away, or no permission: the file is unlocked anyway once closed
      pass
    finally:
      os.close(fd)
    atomic.remove_empty(self.created)


def acquire(path: str | os.PathLike, flag: str, *, beside: bool = False) -> Lock:
  """Takes the lock of `path` (see `lock_path`) for this process; `release` the returned `Lock` when done.

  Raises:
    HeldError: another command holds it; the message names `flag`, `path` and the holder's pid and command.
    cli.UserError: the lock file cannot be created (a read-only folder, a file in the way).
  """
  path = os.path.abspath(os.fspath(path))
  lock = lock_path(path, beside=beside)
  folder = os.path.dirname(lock)
  created: list[str] = []
  try:
    for _ in range(_ATTEMPTS):
      created += atomic.make_dirs(folder)
      try:
        fd = _open(lock)
      except FileNotFoundError:   # a leaving holder removed the folder it had created: create it again
        continue
      try:
        _flock(fd)
      except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        atomic.remove_empty(created)
        raise refusal(flag, path, holder, beside=beside) from None
      except BaseException:
        os.close(fd)
        raise
      if _same_file(fd, lock):
        _write_holder(fd)
        return Lock(lock, fd, created)
      os.close(fd)   # the unlink race: the file we locked is no longer the lock file; take the one there now
  except OSError as e:
    atomic.remove_empty(created)
    raise cli.UserError(f'{flag} {path}: cannot create or lock its lock file {lock} ({e.strerror or e}); expected a '
                        'folder this user can write in') from None
  atomic.remove_empty(created)
  raise cli.UserError(f'{flag} {path}: its lock file {lock} kept being replaced ({_ATTEMPTS} attempts); expected '
                      'one command at a time to take it')


@contextlib.contextmanager
def hold(path: str | os.PathLike, flag: str, *, beside: bool = False) -> Iterator[Lock]:
  """`with hold(folder, '--output'):` the folder is this command's alone until the block ends (see `acquire`)."""
  lock = acquire(path, flag, beside=beside)
  try:
    yield lock
  finally:
    lock.release()


def refusal(flag: str, path: str, holder: dict[str, Any], *, beside: bool = False, note: str = '') -> HeldError:
  """The error of a command refused because `holder` (the lock file's record, or {}) writes `path`."""
  where, what = ('it', 'a path') if beside else ('there', 'a folder')
  return HeldError(f'{flag} {path}: another command ({describe(holder)}) is writing {where}{note}; expected {what} '
                   'no other command is writing (wait for it to finish, or choose another)', holder)


def describe(holder: dict[str, Any]) -> str:
  """'pid 1234, train.py --config ...' (and the host if not this one) of a lock file's record."""
  pid = holder.get('pid')
  text = f'pid {pid}' if isinstance(pid, int) else 'pid unknown'
  host = holder.get('host')
  if host and host != socket.gethostname():
    text += f' on host {host}'
  command = holder.get('command')
  return f'{text}, {command}' if command else text


def read_holder(path: str | os.PathLike, *, beside: bool = False) -> dict[str, Any] | None:
  """The record of the lock file of `path` (pid, host, command, since), or None if there is none. The file is
  left by a killed holder too: `acquire` tells whether it is held."""
  try:
    with open(lock_path(path, beside=beside), 'rb') as f:
      return _parse(f.read())
  except OSError:
    return None


# --- The lock file ---------------------------------------------------------------------------------------------

def _open(lock: str) -> int:
  flags = os.O_CREAT | getattr(os, 'O_NOFOLLOW', 0)
  try:
    return os.open(lock, os.O_RDWR | flags, 0o666)
  except PermissionError:   # another user's file, left by a killed run: lock it read-only, write no record
    return os.open(lock, os.O_RDONLY | flags)


def _flock(fd: int) -> None:
  """flock(LOCK_EX | LOCK_NB); BlockingIOError if another open file holds it (a function: tests wrap it)."""
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      raise BlockingIOError(e.errno, e.strerror) from None
    raise


def _same_file(fd: int, path: str) -> bool:
  """Whether `path` still names the file open as `fd`."""
  try:
    named = os.stat(path, follow_symlinks=False)
  except FileNotFoundError:
    return False
  opened = os.fstat(fd)
  return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _command() -> str:
  """This process's command line as a person typed it (`train.py --workdir ...`, `-m depthnet_jax.evaluate ...`),
  shortened to 200 characters."""
  try:
    with open('/proc/self/cmdline', 'rb') as f:
      argv = [a.decode(errors='replace') for a in f.read().split(b'\0') if a]
  except OSError:
    argv = [sys.executable, *sys.argv]
  if argv and os.path.basename(argv[0]).startswith('python'):
    argv = argv[1:]
  if argv and not argv[0].startswith('-'):
    argv[0] = os.path.basename(argv[0])
  text = ' '.join(shlex.join(argv).split())   # one line, whatever a `-c` program holds
  return text if len(text) <= 200 else text[:197] + '...'


def _write_holder(fd: int) -> None:
  record = {'pid': os.getpid(), 'host': socket.gethostname(), 'command': _command(),
            'since': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
  data = (json.dumps(record) + '\n').encode()
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
  except OSError:   # opened read-only (another user's file) or a full disk: the lock holds without the record
    pass


def _parse(data: bytes) -> dict[str, Any] | None:
  try:
    record = json.loads(data.decode())
  except (UnicodeDecodeError, ValueError):
    return None
  return record if isinstance(record, dict) else None


def _read_holder(fd: int) -> dict[str, Any]:
  """The holder's record; a holder that has just taken the lock may not have written it yet: wait a little."""
  deadline = time.monotonic() + _READ_WAIT
  while True:
    try:
      record = _parse(os.pread(fd, 4096, 0))
    except OSError:
      record = None
    if record is not None or time.monotonic() > deadline:
      return record or {}
    time.sleep(0.02)
