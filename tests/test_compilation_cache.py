"""The persistent compilation cache of train.py and infer.py (`depthnet_jax.compile_cache`): which directory, the
off switch, an unwritable directory (a warning, never a failure), a bad flag (one `error:` line), and a real
second process served from the cache. No training run: every test takes seconds.
"""

import io
import os
import subprocess
import sys

import jax
import pytest
from jax.experimental.compilation_cache import compilation_cache

import infer
from depthnet_jax.common import cli, compile_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG_NAMES = ('jax_compilation_cache_dir', 'jax_enable_compilation_cache',
                 'jax_persistent_cache_min_compile_time_secs')
_ENV_NAMES = (compile_cache.ENV, compile_cache.JAX_ENV, compile_cache.MIN_COMPILE_TIME_ENV,
              compile_cache.ENABLE_ENV, 'XDG_CACHE_HOME')


@pytest.fixture
def jax_config():
  """Restores the JAX options `enable` sets, so that this process's other tests see the conftest's cache."""
  before = {name: getattr(jax.config, name) for name in _CONFIG_NAMES}
  yield jax.config
  for name, value in before.items():
    jax.config.update(name, value)
  # JAX decides once per process whether (and where) it uses the cache, at its first compile: a compile made while a
  # test had the cache off would leave it off for every later test of this worker (each compiling everything anew).
  compilation_cache.reset_cache()


@pytest.fixture
def clean_env(monkeypatch):
  """No cache variable set (the conftest sets JAX_COMPILATION_CACHE_DIR for the session)."""
  for name in _ENV_NAMES:
    monkeypatch.delenv(name, raising=False)
  return monkeypatch


def _unwritable_dir(tmp_path):
  """A directory path that cannot be created: under a regular file (holds for root too), with the reason."""
  blocker = tmp_path / 'blocker'
  blocker.write_text('not a folder')
  return str(blocker / 'cache')


# --- which directory ------------------------------------------------------------------------------------------

def test_directory_precedence(tmp_path, monkeypatch):
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  flag, ours, jaxs, xdg = (str(tmp_path / n) for n in ('flag', 'ours', 'jaxs', 'xdg'))
  everything = {compile_cache.ENV: ours, compile_cache.JAX_ENV: jaxs, 'XDG_CACHE_HOME': xdg}
  assert compile_cache.cache_dir(flag, everything) == flag
  assert compile_cache.cache_dir('', everything) == ours          # '' is the flag's default: not given
  assert compile_cache.cache_dir(None, everything) == ours
  del everything[compile_cache.ENV]
  assert compile_cache.cache_dir(None, everything) == jaxs        # JAX's own variable is respected
  del everything[compile_cache.JAX_ENV]
  assert compile_cache.cache_dir(None, everything) == os.path.join(xdg, 'depthnet-jax', 'jax-compilation-cache')
  home_default = str(tmp_path / 'home' / '.cache' / 'depthnet-jax' / 'jax-compilation-cache')
  assert compile_cache.cache_dir(None, {}) == home_default
  assert compile_cache.cache_dir(None, {'XDG_CACHE_HOME': 'relative/x'}) == home_default  # XDG: absolute only
  assert compile_cache.cache_dir(None, {compile_cache.ENV: ''}) == home_default          # empty = unset


def test_relative_and_home_paths_become_absolute(tmp_path, monkeypatch):
  monkeypatch.setenv('HOME', str(tmp_path))
  monkeypatch.chdir(tmp_path)
  assert compile_cache.cache_dir('rel', {}) == str(tmp_path / 'rel')
  assert compile_cache.cache_dir('~/c', {}) == str(tmp_path / 'c')


# --- enable -----------------------------------------------------------------------------------------------------

def test_enable_sets_the_directory_and_caches_every_compile(tmp_path, jax_config, clean_env):
  directory = str(tmp_path / 'a' / 'cache')
  assert compile_cache.enable(directory, disabled=True) is None
  assert compile_cache.enable(directory) == directory                # a later call is not stuck with the off switch
  assert os.path.isdir(directory) and os.listdir(directory) == []   # created; the write probe is gone
  assert jax_config.jax_compilation_cache_dir == directory and jax_config.jax_enable_compilation_cache is True
  assert jax_config.jax_persistent_cache_min_compile_time_secs == compile_cache.MIN_COMPILE_TIME_SECS == 0


def test_enable_respects_what_the_user_set_for_jax(tmp_path, jax_config, clean_env):
  clean_env.setenv(compile_cache.JAX_ENV, str(tmp_path / 'theirs'))
  clean_env.setenv(compile_cache.MIN_COMPILE_TIME_ENV, '2')
  jax_config.update('jax_persistent_cache_min_compile_time_secs', 2.0)   # what JAX read from that variable
  assert compile_cache.enable(None) == str(tmp_path / 'theirs')
  assert jax_config.jax_compilation_cache_dir == str(tmp_path / 'theirs')
  assert jax_config.jax_persistent_cache_min_compile_time_secs == 2.0
  clean_env.setenv(compile_cache.ENV, str(tmp_path / 'ours'))
  assert compile_cache.enable('') == str(tmp_path / 'ours')             # ours first, then JAX's


def test_disabled_returns_none_and_creates_nothing(tmp_path, jax_config, clean_env):
  clean_env.setenv(compile_cache.ENV, str(tmp_path / 'cache'))
  stream = io.StringIO()
  assert compile_cache.enable(None, disabled=True, stream=stream) is None
  assert not (tmp_path / 'cache').exists() and stream.getvalue() == ''
  assert jax_config.jax_enable_compilation_cache is False   # also a JAX_COMPILATION_CACHE_DIR is switched off


def test_unwritable_directory_warns_once_and_continues(tmp_path, jax_config, clean_env):
  directory = _unwritable_dir(tmp_path)
  clean_env.setenv(compile_cache.ENV, directory)
  stream = io.StringIO()
  assert compile_cache.enable(None, stream=stream) is None
  assert stream.getvalue() == (f'warning: compilation cache {directory} is not writable (Not a directory); '
                               'compiling without it\n')
  assert jax_config.jax_enable_compilation_cache is False
  assert float(jax.jit(lambda x: x + 1)(1.0)) == 2.0       # and JAX still works


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes in a read-only folder')
def test_read_only_directory_warns_and_continues(tmp_path, jax_config, clean_env, capsys):
  read_only = tmp_path / 'ro'
  read_only.mkdir(mode=0o500)
  assert compile_cache.enable(str(read_only)) is None
  assert capsys.readouterr().err == (f'warning: compilation cache {read_only} is not writable (Permission denied); '
                                     'compiling without it\n')


def test_a_file_in_the_variables_place_is_a_warning_not_an_error(tmp_path, jax_config, clean_env, capsys):
  a_file = tmp_path / 'a_file'
  a_file.write_text('mine')
  clean_env.setenv(compile_cache.ENV, str(a_file))
  assert compile_cache.enable(None) is None
  assert capsys.readouterr().err == (f'warning: compilation cache {a_file} is not writable (it is a file); '
                                     'compiling without it\n')
  assert a_file.read_text() == 'mine'


# --- the flags ----------------------------------------------------------------------------------------------------

def test_check_flag(tmp_path):
  a_file = tmp_path / 'a_file'
  a_file.write_text('mine')
  compile_cache.check_flag('')
  compile_cache.check_flag('', disabled=True)
  compile_cache.check_flag(str(tmp_path / 'new' / 'cache'))
  assert not (tmp_path / 'new').exists()                    # a check creates nothing
  with pytest.raises(cli.UserError, match=r'^--compilation_cache .*a_file: is a file; expected a directory'):
    compile_cache.check_flag(str(a_file))
  with pytest.raises(cli.UserError, match=r'is under .*a_file, which is a file; expected a directory'):
    compile_cache.check_flag(str(a_file / 'sub'))
  with pytest.raises(cli.UserError, match=r'^--compilation_cache x and --no_compilation_cache: expected at most one'):
    compile_cache.check_flag('x', disabled=True)


def _one_error(err):
  lines = [line for line in err.splitlines() if line.startswith('error: ')]
  assert len(lines) == 1 and 'Traceback' not in err, err
  return lines[0]


def test_infer_refuses_a_file_as_the_cache_before_any_work(tmp_path, capsys):
  a_file = tmp_path / 'a_file'
  a_file.write_bytes(b'mine')
  out = tmp_path / 'out'
  common = ['--checkpoint', tmp_path / 'ckpt', '--input', tmp_path / 'frames', '--output', out]
  for extra, expected in [
      (['--compilation_cache', a_file], f'error: --compilation_cache {a_file}: is a file; expected a directory for '
                                        'the compilation cache (or a path that does not exist yet)'),
      (['--compilation_cache', a_file / 'c'], f'error: --compilation_cache {a_file / "c"}: is under {a_file}, which '
                                              'is a file; expected a directory for the compilation cache (or a path '
                                              'that does not exist yet)'),
      (['--compilation_cache', tmp_path / 'c', '--no_compilation_cache'],
       f'error: --compilation_cache {tmp_path / "c"} and --no_compilation_cache: expected at most one of them')]:
    code = infer.main([str(a) for a in common + extra])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == '' and _one_error(captured.err) == expected and captured.err == expected + '\n'
  assert a_file.read_bytes() == b'mine' and sorted(os.listdir(tmp_path)) == ['a_file']


def test_infer_command_refuses_a_file_as_the_cache(tmp_path):
  """As a user runs it: exit 1, one line, nothing written."""
  a_file = tmp_path / 'a_file'
  a_file.write_bytes(b'mine')
  result = subprocess.run([sys.executable, os.path.join(REPO, 'infer.py'), '--checkpoint', str(tmp_path / 'ckpt'),
                           '--input', str(tmp_path / 'frames'), '--output', str(tmp_path / 'out'),
                           '--compilation_cache', str(a_file)],
                          env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu'), capture_output=True, text=True,
                          timeout=120, cwd=REPO)
  assert result.returncode == 1 and result.stdout == ''
  assert _one_error(result.stderr) == (f'error: --compilation_cache {a_file}: is a file; expected a directory for '
                                       'the compilation cache (or a path that does not exist yet)')
  assert sorted(os.listdir(tmp_path)) == ['a_file']


def test_train_command_refuses_a_file_as_the_cache_before_jax(tmp_path):
  a_file = tmp_path / 'a_file'
  a_file.write_bytes(b'mine')
  workdir = tmp_path / 'run'
  result = subprocess.run([sys.executable, os.path.join(REPO, 'train.py'), '--config',
                           os.path.join(REPO, 'configs', 'test.py'), '--workdir', str(workdir),
                           '--compilation_cache', str(a_file)],
                          env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu'), capture_output=True, text=True,
                          timeout=120, cwd=REPO)
  assert result.returncode == 1, result.stderr
  assert _one_error(result.stderr) == (f'error: --compilation_cache {a_file}: is a file; expected a directory for '
                                       'the compilation cache (or a path that does not exist yet)')
  assert not workdir.exists()


def test_help_documents_both_flags():
  text = infer.parser().format_help()
  assert '--compilation_cache DIR' in text and '--no_compilation_cache' in text
  result = subprocess.run([sys.executable, os.path.join(REPO, 'train.py'), '--helpfull'],
                          env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=120, cwd=REPO)
  assert '--compilation_cache' in result.stdout and '--[no]no_compilation_cache' in result.stdout


# --- the real thing: process 2 reads what process 1 compiled -----------------------------------------------------

_SNIPPET = """
import sys
from depthnet_jax.common import compile_cache
directory = compile_cache.enable(sys.argv[1])
import jax, jax.numpy as jnp
events = []
jax.monitoring.register_event_listener(lambda name, **kwargs: events.append(name))
x = jnp.arange(64.0).reshape(8, 8)
jax.jit(lambda a: jnp.tanh(a @ a.T) + 1)(x).block_until_ready()
print(directory, events.count('/jax/compilation_cache/cache_hits'), events.count('/jax/compilation_cache/cache_misses'),
      'tensorflow' in sys.modules)
"""


def test_second_process_is_served_from_the_cache(tmp_path):
  directory = str(tmp_path / 'cache')
  env = {k: v for k, v in os.environ.items() if k not in _ENV_NAMES and not k.startswith('JAX_PERSISTENT_CACHE')}
  env.update(PYTHONPATH=REPO, JAX_PLATFORMS='cpu')

  def run():
    result = subprocess.run([sys.executable, '-c', _SNIPPET, directory], env=env, capture_output=True, text=True,
                            timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    used, hits, misses, tensorflow = result.stdout.split()
    assert used == directory and tensorflow == 'False'
    return int(hits), int(misses), sorted(os.listdir(directory))

  hits, misses, entries = run()
  assert hits == 0 and misses >= 2 and len(entries) >= 2    # the jitted function and jnp.arange's programs
  hits, misses, entries_after = run()
  assert hits >= 2 and misses == 0 and entries_after == entries
