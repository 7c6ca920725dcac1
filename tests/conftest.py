"""Shared test set-up: JAX on the CPU, the PyTorch reference on fixed threads."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# XLA's backend optimisation off for the session and the train.py / infer.py processes it starts (they inherit it;
# tests that set XLA_FLAGS for a child add to TEST_XLA_FLAGS). The suite is compile-bound: its programs run for
# milliseconds, and at -O0 XLA compiles about twice as fast (configs/test.py's 6-step run: 18 s instead of 30 s,
# the same losses and metrics to the printed digits). What is tested (values to the parity tolerances, bit-exact
# resume within a setting, devices and processes against one) holds at any optimisation level; the benchmarks and
# `make demo` run at XLA's default.
# Two more flags make XLA's CPU compiles cheaper still (the same 6-step run from an empty compilation cache, idle
# 2 cores: 27.8 s and 34 s of CPU at -O0, 17.4 s and 20 s with both, the same losses and metrics to the printed
# digits): its older loop emitters instead of the fusion emitters, and its code generated in one piece. An XLA
# that does not know a flag aborts at start, so they are used only if a child process with them starts JAX; the
# answer goes to the environment, where the pytest-xdist workers find it (one probe a run).
_O0 = '--xla_backend_optimization_level=0'
_CHEAPER = '--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1'


def _test_xla_flags() -> str:
  flags = os.environ.get('DEPTHNET_TEST_XLA_FLAGS')
  if flags is None:
    import subprocess
    import sys
    probe = subprocess.run([sys.executable, '-c', 'import jax; jax.jit(lambda x: x + 1)(1.0).block_until_ready()'],
                           env=dict(os.environ, XLA_FLAGS=f'{_O0} {_CHEAPER}', JAX_PLATFORMS='cpu'),
                           capture_output=True, timeout=300)
    flags = os.environ['DEPTHNET_TEST_XLA_FLAGS'] = f'{_O0} {_CHEAPER}' if probe.returncode == 0 else _O0
  return flags


TEST_XLA_FLAGS = _test_xla_flags()
if TEST_XLA_FLAGS not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + TEST_XLA_FLAGS).strip()
# train.py and infer.py would prefer a developer's own DEPTHNET_COMPILATION_CACHE to the session's cache below.
os.environ.pop('DEPTHNET_COMPILATION_CACHE', None)
# One persistent compilation cache for the session, inherited by the train.py subprocesses of the tests: the same
# train step compiles once, not once per process. Every compile is cached, the small ones too: building a
# DepthNet compiles one initialiser per weight shape, about 10 s per process on 2 cores, 1 s from the cache.
_OWN_CACHE = None
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  import tempfile
  _OWN_CACHE = os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='depthnet-jax-test-cache-')
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'


import pytest  # noqa: E402


def _once_per_run(tmp_path_factory, name: str, make) -> str:
  """The path `name`, made by `make(path)` once per test run: with pytest-xdist the first worker to get here makes it
  (under the run's temporary directory, shared by the workers) while the others wait, then all use it."""
  import fcntl
  import shutil
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent   # above each worker's own base directory: the run's
  path, done = root / name, root / f'{name}.done'
  with open(root / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)   # released when the file is closed
    if not done.exists():
      if path.exists():
        shutil.rmtree(path)   # a failed attempt of another worker
      path.mkdir()
      make(path)
      done.touch()
  return str(path)


@pytest.fixture(scope='session')
def synth_tiny_dir(tmp_path_factory):
  """A data_dir holding `tfds_stillbox/synth_tiny` (12 rendered 32x32 scenes of 6 frames), built once per run."""
  def build(data_dir):
    import tensorflow_datasets as tfds  # noqa: F401

    from tfds_stillbox import tfds_stillbox_dataset_builder as stillbox
    stillbox.Builder(config='synth_tiny', data_dir=str(data_dir)).download_and_prepare()
  return _once_per_run(tmp_path_factory, 'tfds_data', build)


@pytest.fixture(scope='session')
def random_checkpoint(tmp_path_factory):
  """A model checkpoint of a full-size DepthNet (BN + elu) with NumPy-drawn weights (Flax's initialisers would
  compile per weight shape), recording no image size, FOV or displacement, as checkpoints of older versions."""
  from depthnet_jax.checkpoints import checkpointing
  from depthnet_jax.testing.random_models import random_depthnet
  path = tmp_path_factory.mktemp('random_model') / 'ckpt'
  checkpointing.save_model(path, random_depthnet())
  return str(path)


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory, synth_tiny_dir):
  """(workdir, printed output) of training `configs/test.py` for 6 steps on synth_tiny, once per run.

  In-process: `train_lib.train_and_evaluate`, what train.py runs (tests/test_train.py runs train.py itself). The
  workers share the workdir: tests only read it (or copy it).
  """
  def train(workdir):
    import contextlib
    import io

    from configs import test as test_config
    from depthnet_jax.train import trainer as train_lib
    config = test_config.get_config()
    config.data_dir = synth_tiny_dir
    config.lock()   # as train.py's --config gives it
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      train_lib.train_and_evaluate(config, str(workdir), config_source=test_config.__file__)
    (workdir.parent / 'tiny_run.out').write_text(out.getvalue())
  workdir = _once_per_run(tmp_path_factory, 'tiny_run', train)
  with open(os.path.join(os.path.dirname(workdir), 'tiny_run.out')) as f:
    return workdir, f.read()


def pytest_sessionfinish(session, exitstatus):
  if _OWN_CACHE:
    import shutil
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)
