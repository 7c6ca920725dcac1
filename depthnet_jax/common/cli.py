"""What every command does with a user's mistake: one `error:` line, a non-zero exit, a traceback only on request.

Every command of the project (train.py, infer.py, `python -m depthnet_jax.evaluate`, `python -m
depthnet_jax.torch_import`, `python -m tfds_stillbox.render`, the scripts and benchmarks) runs its work through
`run`: a `UserError` (or another exception the command declares as the user's) becomes a single line on stderr,
`error: <what, which file/flag/field, the value, what was expected>`, and exit code 1; Ctrl-C is one line and
exit code 130. With `--debug` (or the environment variable DEPTHNET_DEBUG=1) the traceback is printed above that
line. The argparse commands build their flags on `ArgumentParser` (usage errors are `UserError`s too, and
`--debug` is defined there) and start with `main(parser, work, argv)`.

The `check_*` helpers state each flag's valid range once, where the flag is read, and are called before any
work starts (no model loaded, no file written).
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
import sys
import tempfile
import traceback
from typing import Any, Callable, Iterable

from depthnet_jax.common import processes

DEBUG_ENV = 'DEPTHNET_DEBUG'


class UserError(ValueError):
  """A mistake the user can fix; the message names the file, flag or field, its value and what was expected."""


def debug_enabled(flag: bool = False) -> bool:
  return bool(flag) or os.environ.get(DEBUG_ENV, '').strip().lower() not in ('', '0', 'false', 'no')


def one_line(error: BaseException | str) -> str:
  """An error message as one line: its lines joined with '; ', surrounding blanks dropped."""
  text = str(error) if not isinstance(error, str) else error
  if isinstance(error, KeyError) and len(error.args) == 1:
    text = str(error.args[0])  # KeyError's str() is the repr of its key
  parts = [p.strip() for p in text.splitlines() if p.strip()]
  return '; '.join(parts) or type(error).__name__


def report(error: BaseException | str, *, debug: bool = False, stream=None) -> None:
  """Prints `error: <message>` on one line (after the traceback, with debug)."""
  stream = stream or sys.stderr
  if debug and isinstance(error, BaseException):
    traceback.print_exception(error, file=stream)
  stream.flush()
  print(f'error: {one_line(error)}', file=stream, flush=True)


def run(work: Callable[[], Any], *, debug: bool = False,
        user_errors: tuple[type[BaseException], ...] = ()) -> int:
  """Runs `work()`; a user error -> one `error:` line and 1, Ctrl-C -> 130, SIGTERM -> the same clean-up as Ctrl-C
  (`processes.sigterm_as_interrupt`, unless the command handles SIGTERM itself) and 143; returns work's int result
  or 0."""
  debug = debug_enabled(debug)
  try:
    with processes.sigterm_as_interrupt():
      result = work()
  except processes.Terminated:
    report(processes.TERMINATED_MESSAGE, debug=debug)
    return processes.EXIT_TERMINATED
  except KeyboardInterrupt as e:
    report('interrupted (Ctrl-C); temporary files were removed, finished outputs kept', debug=debug)
    del e
    return processes.EXIT_INTERRUPTED
  except (UserError, *user_errors) as e:
    report(e, debug=debug)
    return 1
  return int(result) if isinstance(result, int) and not isinstance(result, bool) else 0


class ArgumentParser(argparse.ArgumentParser):
  """argparse for every command: a usage error is a `UserError` (one `error:` line, exit 1, instead of argparse's
  usage and exit 2), abbreviated flags are refused, and `--debug` is defined.

  `usage_hint`, if given, is added to usage errors: `<message> (usage: <hint>; --help lists the flags)`.
  """

  def __init__(self, *args, usage_hint: str = '', **kwargs):
    kwargs.setdefault('allow_abbrev', False)
    super().__init__(*args, **kwargs)
    self.usage_hint = usage_hint
    self.add_argument('--debug', action='store_true',
                      help=f'print the traceback of an error too (or set {DEBUG_ENV}=1)')

  def error(self, message):
    hint = f'usage: {self.usage_hint}; ' if self.usage_hint else ''
    raise UserError(f'{message} ({hint}--help lists the flags)')


def main(parser: argparse.ArgumentParser, work: Callable[[argparse.Namespace], Any], argv: list[str] | None = None,
         *, user_errors: tuple[type[BaseException], ...] = ()) -> int:
  """A command's whole life: parses `argv` (default sys.argv[1:]) with `parser`, runs `work(args)` through `run`
  (one `error:` line and 1 for a user error, 130 for Ctrl-C, the traceback too with --debug); the exit code."""
  argv = sys.argv[1:] if argv is None else list(argv)
  return run(lambda: work(parser.parse_args(argv)), debug='--debug' in argv, user_errors=user_errors)


# --- Valid ranges -------------------------------------------------------------------------------------------

def _fail(name: str, value: Any, expected: str) -> UserError:
  return UserError(f'{name}={value!r}: expected {expected}')


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None, why: str = '') -> int:
  """`value` as an int in [minimum, maximum] (either bound optional); `name` is the flag or field.

  A whole float (3.0) and NumPy integers count as integers. `why`, if given, is added to the message in
  parentheses (e.g. '0: one per core').
  """
  expected = _int_range(minimum, maximum) + (f' ({why})' if why else '')
  if isinstance(value, bool) or not isinstance(value, (numbers.Integral, numbers.Real)) or (
      not isinstance(value, numbers.Integral) and (not math.isfinite(value) or value != int(value))):
    raise _fail(name, value, expected)
  if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
    raise _fail(name, value, expected)
  return int(value)


def _int_range(minimum, maximum) -> str:
  if minimum is not None and maximum is not None:
    return f'an integer from {minimum} to {maximum}'
  if minimum is not None:
    return f'an integer >= {minimum}'
  if maximum is not None:
    return f'an integer <= {maximum}'
  return 'an integer'


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False) -> float:
  """`value` as a finite float in the interval given by low/high (each bound closed unless `*_open`)."""
  expected = _float_range(low, high, low_open, high_open)
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
    raise _fail(name, value, expected)
  value = float(value)
  if low is not None and (value < low or (low_open and value == low)):
    raise _fail(name, value, expected)
  if high is not None and (value > high or (high_open and value == high)):
    raise _fail(name, value, expected)
  return value


def _float_range(low, high, low_open, high_open) -> str:
  if low is not None and high is not None:
    return f'a number in {"(" if low_open else "["}{low:g}, {high:g}{")" if high_open else "]"}'
  if low is not None:
    return f'a number {">" if low_open else ">="} {low:g}'
  if high is not None:
    return f'a number {"<" if high_open else "<="} {high:g}'
  return 'a finite number'


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
  choices = list(choices)
  if value not in choices:
    raise _fail(name, value, f'one of {", ".join(map(repr, choices))}')
  return value


# --- Messages and processes ---------------------------------------------------------------------------------

def shown_names(names: Iterable[str], limit: int = 5) -> str:
  """'a, b, c' or 'a, b, c, d, e and 3 more': the names a message shows."""
  names = list(names)
  more = f' and {len(names) - limit} more' if len(names) > limit else ''
  return ', '.join(names[:limit]) + more


def pid_alive(pid: int) -> bool:
  """Whether process `pid` (of this host) may still be running; True when unsure, so callers leave its files.

  A PID reused by a program that is not Python cannot be one of our writers, so it counts as dead.
  """
  if pid <= 0:
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except (PermissionError, OverflowError):
    return True
  try:
    with open(f'/proc/{pid}/cmdline', 'rb') as f:
      return b'python' in f.read()
  except OSError:
    return True


# --- Paths ----------------------------------------------------------------------------------------------------

def check_writable_dir(path: str, name: str) -> str:
  """Checks, without creating anything, that `path` is (or can be created as) a writable directory.

  The nearest existing ancestor must be a directory in which a file can really be created (a probe file is
  created and removed at once; permission bits alone say nothing for root or on read-only mounts).
  """
  if not os.fspath(path):
    raise UserError(f'{name}={path!r}: expected a folder path')
  path = os.path.abspath(os.fspath(path))
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f'{name} {path}: is a file, expected a directory (or a path that does not exist yet)')
  existing = path
  while not os.path.exists(existing):
    parent = os.path.dirname(existing)
    if parent == existing:
      break
    existing = parent
  if not os.path.isdir(existing):
    raise UserError(f'{name} {path}: {existing} is a file, so the directory cannot be created there')
  try:
    fd, probe = tempfile.mkstemp(prefix='.depthnet-write-probe-', dir=existing)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise UserError(f'{name} {path}: cannot write in {existing} ({e.strerror or e}); expected a writable '
                    'directory') from None
  return path


def check_output_file(flag: str, path: str | None, overwrite: bool, extensions: tuple[str, ...]) -> str | None:
  """The absolute path of an output file flag (None if not given): a file name with one of `extensions`, not a
  folder, not existing unless `overwrite`, in a folder that exists or can be created and is writable."""
  if path is None:
    return None
  if not path:
    raise UserError(f'{flag}=\'\': expected a file path')
  path = os.path.abspath(path)
  if not path.lower().endswith(extensions):
    raise UserError(f'{flag} {path}: expected a file name ending in {" or ".join(extensions)}')
  if os.path.isdir(path):
    raise UserError(f'{flag} {path}: is a directory, expected a file path')
  if os.path.lexists(path) and not overwrite:
    raise UserError(f'{flag} {path}: exists already; expected a new file (or pass --overwrite to replace it)')
  check_writable_dir(os.path.dirname(path), f'{flag} {path}: its folder')   # created if missing
  return path
