"""How a run ends when something outside it ends it: its workers die with it, SIGTERM is Ctrl-C, a full disk is said.

Workers. The renderer (`tfds_stillbox.render.export`: a ProcessPoolExecutor on forkserver, else spawn) and the
input pipeline (grain's spawned workers, `worker_count` > 0) compute in child processes. `init_worker(owner)`, their
initializer, makes each worker end when the process that started the pool (its owner) ends, however it ends
(SIGKILL included): a thread of the worker waits on the owner's pidfd (Linux >= 5.3; elsewhere it polls twice a
second) and then kills the worker. Where the worker's parent is not the owner but the forkserver, the kernel is also
asked to kill the worker when that parent dies (`prctl(PR_SET_PDEATHSIG, SIGKILL)`); not where the parent is the
owner itself, because the signal follows the parent *thread*, and grain starts its workers from threads that end.
Workers ignore SIGINT: Ctrl-C reaches the whole process group, and the owner alone stops its pool.

Why the workers of a killed `tfds build` lived on (reparented to init), when `python -m tfds_stillbox.render`, which
shuts its pool down on SIGTERM, left none: a forkserver exits at EOF on its "alive" pipe, but Python hands the write
end of that pipe to every worker the forkserver forks; and a ProcessPoolExecutor worker blocks on its call queue,
whose pipe it holds both ends of. With the owner gone nobody closed anything, so nothing ever saw an EOF. Once the
workers end with their owner, the forkserver and multiprocessing's resource tracker see EOF and exit too.

SIGTERM. Within `sigterm_as_interrupt()`, SIGTERM raises `Terminated` in the main thread. It is a KeyboardInterrupt,
so whatever clean-up Ctrl-C runs runs (`finally`, `with`, `except KeyboardInterrupt`: saves in flight finished,
temporaries removed, pools shut down), and a SystemExit with code 143, so a program that does not catch it (`tfds
build`) ends after those clean-ups with the exit code that the signal's default action would have given without
them. `cli.run`, behind every command, catches it: one `error: terminated (SIGTERM); ...` line and exit code 143;
where no command is above (the renderer's pool under `tfds build`), `sigterm_as_interrupt(say_at_exit=True)`
prints that line when the interpreter exits.

Full disks. `disk_full(error)`: ENOSPC or EDQUOT anywhere in an exception's chain, as an OSError's errno or in the
message of a library that reports it as text (TensorStore, under Orbax: `... No space left on device
[os_error_code='28']`); `free_space(path)`: what is left on the file system of `path`, for the message.

Only the standard library: the renderer's worker processes import it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import logging
import os
import re
import select
import shutil
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterator

EXIT_INTERRUPTED = 130                       # 128 + SIGINT: Ctrl-C
EXIT_TERMINATED = 128 + int(signal.SIGTERM)  # 143
TERMINATED_MESSAGE = 'terminated (SIGTERM); temporary files were removed, finished outputs kept'
_PR_SET_PDEATHSIG = 1                        # linux/prctl.h
_POLL_SECONDS = 0.5


class Terminated(KeyboardInterrupt, SystemExit):
  """SIGTERM, raised in the main thread: caught as Ctrl-C is (KeyboardInterrupt), or, if nothing catches it, the
  end of the program with exit code 143 (SystemExit) after every clean-up on the way out."""

  def __init__(self, *args):
    super().__init__(*args)
    self.code = EXIT_TERMINATED


def _raise_terminated(signum, frame) -> None:
  del frame
  signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM does not interrupt the clean-up (SIGKILL does)
  raise Terminated(signum)


def _say_terminated() -> None:
  print(f'\nerror: {TERMINATED_MESSAGE}', file=sys.stderr, flush=True)   # the newline: after a progress bar


def _raise_terminated_and_say(signum, frame) -> None:
  atexit.unregister(_say_terminated)   # once, however many times SIGTERM came
  atexit.register(_say_terminated)
  _raise_terminated(signum, frame)


@contextlib.contextmanager
def sigterm_as_interrupt(*, say_at_exit: bool = False) -> Iterator[bool]:
  """Within: SIGTERM raises `Terminated` in the main thread (yields True), where it had its default action.

  Elsewhere (not the main thread, or a handler someone else installed, e.g. an outer `sigterm_as_interrupt`)
  nothing changes and it yields False. The previous handler is restored on the way out.

  `say_at_exit`: for code that runs under a program that handles no signal (the renderer's pool under `tfds
  build`), the `error: terminated (SIGTERM); ...` line that `cli.run` would print is printed when the interpreter
  exits, after every clean-up. At exit, because the signal may arrive anywhere the handler is installed: in a
  generator's consumer as well (TFDS's writer, between two scenes), where no `except` of ours sees it.
  """
  if threading.current_thread() is not threading.main_thread() or (
      signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
    yield False
    return
  previous = signal.signal(signal.SIGTERM, _raise_terminated_and_say if say_at_exit else _raise_terminated)
  try:
    yield True
  finally:
    signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_deferred(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
  """Within (in the main thread): Ctrl-C and SIGTERM wait for the block to end, then act as they would have.

  For work that must not stop half-way, such as the start of an asynchronous checkpoint save: interrupted there,
  Orbax's threads would go on creating its temporary folder after the clean-up had run. Ignored signals stay
  ignored; elsewhere than the main thread nothing changes.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  received: list[int] = []
  previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in signals
              if signal.getsignal(sig) not in (signal.SIG_IGN, None)}
  try:
    yield
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
    for signum in dict.fromkeys(received):
      signal.raise_signal(signum)


# --- Workers --------------------------------------------------------------------------------------------------

def init_worker(owner: int, *unused) -> None:
  """A worker process's initializer: it ends with `owner`, and with a parent that is not the owner; SIGINT ignored.

  ProcessPoolExecutor: `initializer=init_worker, initargs=(os.getpid(),)`. grain: `worker_init_fn=
  functools.partial(init_worker, os.getpid())` (grain's worker index and count are ignored).
  """
  del unused
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  parent = os.getppid()
  if parent != owner:   # a forkserver, single-threaded: its main thread lives as long as it does
    die_with_parent(parent)
  die_with(owner)


def die_with_parent(parent: int) -> bool:
  """Linux: the kernel kills this process (SIGKILL) when its parent thread ends; False elsewhere.

  `parent` is the parent's pid as read before: if it ended before the request was made, this process ends now.
  """
  if not sys.platform.startswith('linux'):
    return False
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
      return False
  except (OSError, AttributeError):
    return False
  if os.getppid() != parent:
    _kill_self()
  return True


def die_with(pid: int) -> threading.Thread:
  """Starts a daemon thread that kills this process (SIGKILL) as soon as process `pid` has ended."""
  try:
    fd = os.pidfd_open(pid)
  except ProcessLookupError:   # it has ended already
    fd = None
    _kill_self()
  except (AttributeError, OSError):   # no pidfd (not Linux, or a kernel before 5.3): poll
    fd = None
  thread = threading.Thread(target=_kill_self_after, args=(pid, fd), name=f'die-with-{pid}', daemon=True)
  thread.start()
  return thread


def _kill_self_after(pid: int, fd: int | None) -> None:
  if fd is not None:
    select.select([fd], [], [])   # readable once the process has ended
  else:
    while _running(pid):
      time.sleep(_POLL_SECONDS)
  _kill_self()


def _running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _kill_self() -> None:
  os.kill(os.getpid(), signal.SIGKILL)


# --- Full disks -----------------------------------------------------------------------------------------------

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_TEXT_CODE = re.compile(r"os_error_code='?(\d+)")   # TensorStore's status messages
_TEXT_REASONS = tuple(os.strerror(code) for code in DISK_FULL_ERRNOS)


def _chain(error: BaseException | None) -> Iterator[BaseException]:
  seen: set[int] = set()
  while error is not None and id(error) not in seen and len(seen) < 20:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def says_disk_full(text: str) -> bool:
  """Whether a message says the disk (or the user's quota) is full: the OS's words, or TensorStore's error code."""
  return any(int(code) in DISK_FULL_ERRNOS for code in _TEXT_CODE.findall(text)) or any(
      reason in text for reason in _TEXT_REASONS)


def disk_full(error: BaseException | None) -> bool:
  """Whether `error`, or an error it was raised from or during, says the disk (or the user's quota) is full."""
  return any((isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS) or says_disk_full(str(e)) for e in _chain(error))


@contextlib.contextmanager
def on_disk_full(error: Callable[[], BaseException], *clean_ups: Callable[[], Any]) -> Iterator[None]:
  """Within: an Exception that says the disk is full runs `clean_ups` (their own errors ignored), then raises
  `error()` from it (after the clean-ups, so that its message may say what they freed); others pass unchanged."""
  try:
    yield
  except Exception as e:
    if not disk_full(e):
      raise
    for clean_up in clean_ups:
      with contextlib.suppress(Exception):
        clean_up()
    raise error() from e


class _NotDiskFull(logging.Filter):
  """Drops the records of modules under `where` (a path part) that are about a full disk, tracebacks included."""

  def __init__(self, where: str):
    super().__init__()
    self.where = where

  def filter(self, record: logging.LogRecord) -> bool:
    return self.where not in record.pathname or not (
        says_disk_full(record.getMessage()) or (record.exc_info is not None and disk_full(record.exc_info[1])))


def hide_disk_full_logs(logger: logging.Logger, where: str) -> None:
  """Installs (once per logger and `where`) a filter of the full-disk records of a library's modules: a library
  that logs every failed write of its threads with a traceback (Orbax: ~1800 lines for one full disk), when the
  caller reports the full disk itself, in one line. Its other records pass."""
  if not any(isinstance(f, _NotDiskFull) and f.where == where for f in logger.filters):
    logger.addFilter(_NotDiskFull(where))


def folder_size(path: str | os.PathLike) -> int:
  """The bytes of the files under `path` (0 if it cannot be read)."""
  total = 0
  for folder, _, names in os.walk(os.fspath(path)):
    for name in names:
      with contextlib.suppress(OSError):
        total += os.lstat(os.path.join(folder, name)).st_size
  return total


def format_bytes(count: float) -> str:
  """'512 bytes', '3.4 MiB', '1.2 GiB'."""
  if count < 1024:
    return f'{int(count)} bytes'
  for unit in ('KiB', 'MiB', 'GiB', 'TiB'):
    count /= 1024
    if count < 1024 or unit == 'TiB':
      return f'{count:.1f} {unit}'
  raise AssertionError('unreachable')


def free_space(path: str | os.PathLike) -> str:
  """'3.4 MiB free' on the file system of `path` (or of its nearest existing parent); 'free space unknown'."""
  path = os.path.abspath(os.fspath(path))
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  try:
    return f'{format_bytes(shutil.disk_usage(path).free)} free'
  except OSError:
    return 'free space unknown'
