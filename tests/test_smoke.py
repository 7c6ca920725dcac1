"""Every benchmark and script runs: each file of benchmarks/ and scripts/ with `--smoke` (tiny sizes, a step or
two, outputs in this test's folder; the benchmarks of `SLOW` in `make test-slow`), as a user starts it
(`python FILE --smoke`, a process of its own, from the repository), exits 0 and prints what it is for (a table
row, a file written).

Nothing else runs these files, so without this an API change breaks them silently. The files are found by
listing the two folders: a new one is covered at once, and fails here until it takes `--smoke` (and the
argument helpers of `depthnet_jax.common.cli`). The session's fixtures stand in for what a file would otherwise
build or train (`--data_dir` of the built synth_tiny, a copy of the trained tiny run as `--workdir`, the random
checkpoint); the processes inherit the session's persistent compilation cache, so a program another test or
smoke run compiled is read back, not compiled again.
"""

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = ('benchmarks', 'scripts')
FILES = sorted(f'{folder}/{name}' for folder in FOLDERS for name in os.listdir(os.path.join(REPO, folder))
               if name.endswith('.py') and not name.startswith('_'))
TIMEOUT_S = 300
# Every benchmark's smoke run is in `make test-slow` (make test's budget): they time code the suite tests elsewhere.
SLOW = {f for f in FILES if f.startswith('benchmarks/')}


def _copy_of_tiny_run(fixtures, tmp_path) -> str:
  """The trained tiny run, copied (its command resumes it and writes there; the session's copy is shared)."""
  workdir = tmp_path / 'run'
  shutil.copytree(fixtures('tiny_run')[0], workdir)
  return str(workdir)


# The flags each file is given beyond `--smoke`, from the session's fixtures (`fixtures(name)`) and this test's
# folder, and what its output must show. A file not listed gets `--smoke` alone and must print something.
CASES = {
    'benchmarks/checksums.py': (lambda f, tmp: [], r'training save, SGD-momentum +\d+ +\d+ +\d+ +[\d.]+'),
    'benchmarks/inference.py': (lambda f, tmp: ['--checkpoint', f('random_checkpoint')],
                                r'\| 32x32 \| 1 \| [\d.]+ \| [\d.]+ \| [\d.]+ \|'),
    'benchmarks/input_pipeline.py': (lambda f, tmp: ['--data_dir', f('synth_tiny_dir')],
                                     r'\| pipeline 32, 1 workers +\| pairs/s +\| +[\d.]+ \| +[\d.]+x \|'),
    'benchmarks/layer_profile.py': (lambda f, tmp: [], r'\| all blocks \| \| [\d.]+ \| [\d.]+ \| [\d.]+x \|'),
    'benchmarks/profile_step.py': (lambda f, tmp: ['--out', str(tmp)], r'-- by kind[\s\S]+wrote .*hlo_patches_2x16'),
    'benchmarks/torch_parity.py': (lambda f, tmp: [], r'bn_elu +64x64 +\d\.\d+e-0[5-9] +\d\.\d+e-0[5-9]'),
    'benchmarks/train_step.py': (lambda f, tmp: [], r'\| 2x16x16 \| depthnet-jax \(jit\) \| patches \| float32 \|'),
    'scripts/demo.py': (lambda f, tmp: ['--data_dir', f('synth_tiny_dir'), '--workdir', _copy_of_tiny_run(f, tmp),
                                        '--out', str(tmp / 'out')], r'wrote .*inference\.png'),
    'scripts/import_demo.py': (lambda f, tmp: ['--out', str(tmp)], r'max \|JAX - PyTorch\| / max \|PyTorch\| = '),
    'scripts/learning_curve.py': (lambda f, tmp: ['--workdir', f('tiny_run')[0], '--out', str(tmp / 'curve.png')],
                                  r'wrote .*curve\.png: \d+ train points'),
    'scripts/motion_check.py': (lambda f, tmp: ['--checkpoint', f('tiny_run')[0], '--out', str(tmp),
                                                '--json', str(tmp / 'figures.json')], r'far_40_400 auto +error'),
    'scripts/reference.py': (lambda f, tmp: ['--steps', '6', '--data_dir', f('synth_tiny_dir'), '--workdir',
                                             _copy_of_tiny_run(f, tmp), '--out', str(tmp / 'out')],
                             r'exported .*reference64'),
}
FILES_WRITTEN = {   # beside the output: files that must exist afterwards (relative to the test's folder)
    'benchmarks/profile_step.py': ['hlo_patches_2x16.txt'],
    'scripts/demo.py': ['out/examples.png', 'out/inference.png'],
    'scripts/import_demo.py': ['imported', 'frames.png', 'depth.png'],
    'scripts/learning_curve.py': ['curve.png', 'curve.csv'],
    'scripts/motion_check.py': ['figures.json'],
    'scripts/reference.py': ['out/reference64', 'out/summary.json', 'out/learning_curve.png'],
}
# Files whose smoke runs compile the same program: they run one after the other (in any order, on any worker), so
# that the second reads it from the session's persistent compilation cache instead of compiling it too.
SAME_PROGRAM = {
    'benchmarks/profile_step.py': 'train_step_2x16',   # profile_step.compiled_step, both
    'benchmarks/train_step.py': 'train_step_2x16',
    'benchmarks/inference.py': 'predictor_32x32',      # Predictor of a loaded BN + elu checkpoint, 1x32x32
    'scripts/import_demo.py': 'predictor_32x32',
}


@contextlib.contextmanager
def _one_at_a_time(tmp_path_factory, group: str | None):
  """Holds the run-wide lock of `group` (none if None): a file lock under the run's temporary directory, shared by
  the pytest-xdist workers as conftest's `_once_per_run` shares it."""
  if group is None:
    yield
    return
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent
  with open(root / f'smoke-{group}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)   # released when the file is closed
    yield


@pytest.mark.parametrize('path', [pytest.param(f, marks=pytest.mark.slow) if f in SLOW else f for f in FILES])
def test_smoke_run(path, request, tmp_path, tmp_path_factory):
  flags, expected = CASES.get(path, (lambda f, tmp: [], r'\S'))
  argv = [sys.executable, path, '--smoke', *flags(request.getfixturevalue, tmp_path)]
  with _one_at_a_time(tmp_path_factory, SAME_PROGRAM.get(path)):
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)
  output = result.stdout + result.stderr
  assert result.returncode == 0, f'{" ".join(argv)} exited {result.returncode}:\n{output[-4000:]}'
  assert re.search(expected, result.stdout), f'{path}: no match for {expected!r} in:\n{result.stdout[-4000:]}'
  for name in FILES_WRITTEN.get(path, []):
    assert (tmp_path / name).exists(), f'{path} did not write {name}'


def test_every_file_takes_smoke_and_the_cli_helpers():
  """Statically, in milliseconds: each file defines `--smoke` and starts through `cli.main` (one `error:` line,
  exit 1, `--debug`); every case above is of a file that exists."""
  for path in FILES:
    with open(os.path.join(REPO, path)) as f:
      source = f.read()
    assert "add_argument('--smoke'" in source, f'{path}: no --smoke flag'
    assert 'cli.main(' in source and 'cli.ArgumentParser(' in source, f'{path}: not started through cli.main'
    assert "add_argument('--debug'" not in source, f'{path}: defines --debug itself (cli.ArgumentParser does)'
  assert set(CASES) <= set(FILES), f'cases of files that do not exist: {sorted(set(CASES) - set(FILES))}'
  assert SLOW <= set(FILES), f'slow files that do not exist: {sorted(SLOW - set(FILES))}'


def test_a_usage_error_is_one_error_line(tmp_path):
  """A script's mistake is one `error:` line and exit 1, before any work (scripts/reference.py's --steps)."""
  result = subprocess.run([sys.executable, 'scripts/reference.py', '--steps', '0', '--out', str(tmp_path / 'x')],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 1 and result.stderr.strip().splitlines() == [
      "error: --steps=0: expected an integer from 1 to 23000 (configs/reference64.py's num_train_steps: --steps "
      'stops its schedule earlier)'], result.stderr
  assert not (tmp_path / 'x').exists()
