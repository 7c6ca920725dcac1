"""Compile once per machine: JAX's persistent compilation cache for `train.py` and `infer.py`.

XLA compiles every jitted function again in each new process. With the persistent cache on, the compiled programs
are written to a directory and a later run with the same shapes, devices and jax version reads them back instead.

    from depthnet_jax.common import compile_cache
    compile_cache.enable(flag_value, disabled=no_cache_flag)   # before the first JAX compile

The directory is, first found:

  1. the `--compilation_cache DIR` flag;
  2. the environment variable DEPTHNET_COMPILATION_CACHE;
  3. JAX's own JAX_COMPILATION_CACHE_DIR, if the user set it (it is respected, not overridden);
  4. `$XDG_CACHE_HOME/depthnet-jax/jax-compilation-cache` (`~/.cache/depthnet-jax/jax-compilation-cache` when
     XDG_CACHE_HOME is unset or not an absolute path).

A cache is an optimisation, never a reason to fail: a directory that cannot be created or written gives one
`warning:` line on stderr and the run compiles without it. Only a `--compilation_cache` flag that can never be a
directory (an existing file, or a path under one) is the user's error (`check_flag`).

Every program is cached, however short its compile: `jax_persistent_cache_min_compile_time_secs` is 0 instead of
JAX's 1 s (unless JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS is set). Building a DepthNet compiles one small
initialiser per weight shape, each under a second but about 10 s together on 2 cores; with JAX's threshold none
of them is cached and a warm train.py start-up saves only the train and eval steps. The cache has no size limit
(JAX's default; the entries of configs/test.py take 1.5 MB): delete the directory to empty it. Whoever can write
in the directory can make these programs run their code (JAX's cache is trusted): keep it private, as the
default one is.

This module imports only the standard library at import time; `enable` imports JAX (never TensorFlow).
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Mapping, TextIO

from depthnet_jax.common import cli

ENV = 'DEPTHNET_COMPILATION_CACHE'
JAX_ENV = 'JAX_COMPILATION_CACHE_DIR'
FLAG = '--compilation_cache'
OFF_FLAG = '--no_compilation_cache'
SUBDIR = os.path.join('depthnet-jax', 'jax-compilation-cache')
MIN_COMPILE_TIME_SECS = 0.0  # JAX's default, 1 s, leaves out every initialiser of the model (module docstring)
MIN_COMPILE_TIME_ENV = 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'
ENABLE_ENV = 'JAX_ENABLE_COMPILATION_CACHE'

FLAG_HELP = (f'directory of the persistent JAX compilation cache (a second run of the same shapes skips XLA '
             f'compilation); default: ${ENV}, else ${JAX_ENV}, else $XDG_CACHE_HOME/{SUBDIR} '
             f'(~/.cache/{SUBDIR})')
OFF_FLAG_HELP = f'compile without the persistent compilation cache (excludes {FLAG})'


def default_dir(environ: Mapping[str, str] | None = None) -> str:
  """`$XDG_CACHE_HOME/depthnet-jax/jax-compilation-cache`, or under `~/.cache` (XDG ignores a relative path)."""
  environ = os.environ if environ is None else environ
  base = environ.get('XDG_CACHE_HOME', '')
  if not os.path.isabs(base):
    base = os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, SUBDIR)


def cache_dir(path: str | None = None, environ: Mapping[str, str] | None = None) -> str:
  """The cache directory, as an absolute path: `path` > DEPTHNET_COMPILATION_CACHE > JAX_COMPILATION_CACHE_DIR >
  the XDG default. An empty string counts as not given.
  """
  environ = os.environ if environ is None else environ
  chosen = path or environ.get(ENV) or environ.get(JAX_ENV) or default_dir(environ)
  return os.path.abspath(os.path.expanduser(os.fspath(chosen)))


def check_flag(path: str | None, disabled: bool = False) -> None:
  """Raises cli.UserError if the flags cannot work: both given, or a path that can never be a directory.

  A path we may merely not write in is not an error here (`enable` warns and compiles without the cache). Creates
  nothing; called with the other flag checks, before any work starts.
  """
  if not path:
    return
  if disabled:
    raise cli.UserError(f'{FLAG} {path} and {OFF_FLAG}: expected at most one of them')
  absolute = os.path.abspath(os.path.expanduser(os.fspath(path)))
  existing = absolute
  while not os.path.exists(existing) and os.path.dirname(existing) != existing:
    existing = os.path.dirname(existing)
  if os.path.exists(existing) and not os.path.isdir(existing):
    where = 'is a file' if existing == absolute else f'is under {existing}, which is a file'
    raise cli.UserError(f'{FLAG} {path}: {where}; expected a directory for the compilation cache (or a path that '
                        'does not exist yet)')


def _unwritable(path: str) -> str | None:
  """Creates `path` if needed and writes a probe file in it: None if that works, else the reason it does not."""
  if os.path.exists(path) and not os.path.isdir(path):
    return 'it is a file'
  try:
    os.makedirs(path, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix='.depthnet-write-probe-', dir=path)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    return e.strerror or str(e) or type(e).__name__
  return None


def enable(path: str | None = None, *, disabled: bool = False, stream: TextIO | None = None) -> str | None:
  """Turns on JAX's persistent compilation cache; call it before the first JAX compile of the process.

  Args:
    path: the cache directory (the `--compilation_cache` flag); None or '' picks it as the module docstring says.
    disabled: `--no_compilation_cache`: the cache stays off, even if JAX_COMPILATION_CACHE_DIR is set.
    stream: where the warning goes (default stderr).

  Returns:
    The absolute cache directory in use, or None when disabled (also by JAX_ENABLE_COMPILATION_CACHE=false) or
    when the directory cannot be written (then one `warning:` line is printed and JAX compiles without a cache).
  """
  import jax  # here, not at the top: the flag checks that precede this must stay light

  if disabled:
    jax.config.update('jax_enable_compilation_cache', False)
    return None
  directory = cache_dir(path)
  reason = _unwritable(directory)
  if reason is not None:
    print(f'warning: compilation cache {directory} is not writable ({reason}); compiling without it',
          file=stream or sys.stderr, flush=True)
    jax.config.update('jax_enable_compilation_cache', False)  # also when JAX_COMPILATION_CACHE_DIR named it
    return None
  jax.config.update('jax_compilation_cache_dir', directory)
  if ENABLE_ENV not in os.environ:  # undo an earlier call's off switch (not the user's JAX_ENABLE_...=false)
    jax.config.update('jax_enable_compilation_cache', True)
  if MIN_COMPILE_TIME_ENV not in os.environ:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_TIME_SECS)
  return directory if jax.config.jax_enable_compilation_cache else None
