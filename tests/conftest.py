"""Shared test set-up: JAX on the CPU, the PyTorch reference on fixed threads."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
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


@pytest.fixture(scope='session')
def synth_tiny_dir(tmp_path_factory):
  """A data_dir holding `tfds_stillbox/synth_tiny` (12 rendered 32x32 scenes of 6 frames), built once per run."""
  import tensorflow_datasets as tfds  # noqa: F401
  from tfds_stillbox import tfds_stillbox_dataset_builder as stillbox
  data_dir = tmp_path_factory.mktemp('tfds_data')
  stillbox.Builder(config='synth_tiny', data_dir=str(data_dir)).download_and_prepare()
  return str(data_dir)


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory, synth_tiny_dir):
  """(workdir, completed process) of `train.py --config configs/test.py` for 6 steps on synth_tiny."""
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  workdir = str(tmp_path_factory.mktemp('tiny_run'))
  result = subprocess.run([sys.executable, os.path.join(repo, 'train.py'), '--config',
                           os.path.join(repo, 'configs', 'test.py'), '--workdir', workdir,
                           f'--config.data_dir={synth_tiny_dir}'],
                          env=dict(os.environ, PYTHONPATH=repo, JAX_PLATFORMS='cpu', XLA_FLAGS=''),
                          capture_output=True, text=True, timeout=600, cwd=repo)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
  return workdir, result


def pytest_sessionfinish(session, exitstatus):
  if _OWN_CACHE:
    import shutil
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)
