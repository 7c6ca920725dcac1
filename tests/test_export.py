"""`python -m depthnet_jax.export`: the ONNX graph against the original's network (PyTorch's reference DepthNet, every
option), at square, rectangular and odd sizes and batch sizes in one session; the command's outputs and errors."""

import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from depthnet_jax.checkpoints import export_command, loading
from depthnet_jax.model import onnx_graph, runtimes
from depthnet_jax.testing import parity

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(REPO, 'models', 'reference64')


@pytest.fixture(scope='module', params=sorted(parity.OPTIONS))
def imported(request, tmp_path_factory):
  return parity.Imported(request.param, tmp_path_factory.mktemp(request.param))


def test_onnx_graph_equals_the_original_network(imported):
  """ONNX Runtime on the exported graph = the PyTorch reference in eval mode, 1e-5 relative, with one session for
  every size and batch (the graph's N, H and W are dynamic; the crops follow odd sizes as the original's)."""
  model = imported.model
  model.eval()
  session = ort.InferenceSession(onnx_graph.build(model).SerializeToString(), runtimes.session_options(),
                                 providers=['CPUExecutionProvider'])
  torch.manual_seed(3)
  for batch, height, width in ((2, 64, 64), (1, 64, 96), (3, 45, 67)):
    x = torch.randn(batch, 6, height, width)
    ours = session.run(None, {onnx_graph.INPUT: x.numpy()})[0]
    expected = imported.torch_forward(x, train=False)
    assert ours.shape == tuple(expected.shape)
    assert parity.relative_error(ours, expected) < 1e-5, (batch, height, width)


def _export(*args, ok=True, capsys):
  """The command run in-process (its flags as a user types them): (stdout, stderr); asserts its exit code."""
  code = export_command.main([str(a) for a in args])
  out, err = capsys.readouterr()
  assert (code == 0) == ok, err
  return out, err


def test_export_onnx_of_the_shipped_model(tmp_path, capsys):
  """The command's graph (replacing an older file, with --overwrite) passes onnx.checker, has dynamic N/H/W and the
  checkpoint's record as metadata."""
  out = tmp_path / 'reference64.onnx'
  out.write_text('an older export')
  stdout, _ = _export('--checkpoint', SHIPPED, '--format', 'onnx', '--out', out, '--overwrite', capsys=capsys)
  assert f'wrote    {out}' in stdout
  graph = onnx.load(out)
  onnx.checker.check_model(graph, full_check=True)
  meta = {p.key: p.value for p in graph.metadata_props}
  assert (meta['train_height'], meta['train_width'], meta['train_fov'], meta['nominal_displacement']) == (
      '64', '64', '90.0', '0.3')
  assert meta['model.batch_norm'] == 'True' and meta['model.depth_activation'] == 'elu'
  dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
  assert dims == ['batch', 6, 'height', 'width']
  assert sorted(os.listdir(tmp_path)) == ['reference64.onnx']   # no lock or temporary left behind


def test_export_pth_round_trip(tmp_path, capsys):
  """The .pth.tar of the shipped model loads in torch (weights_only) into the original's DepthNet (strict), and
  torch_import reads back its arrays bit for bit."""
  from flax import nnx

  from depthnet_jax.checkpoints import torch_import
  from depthnet_jax.testing import torch_reference
  out = tmp_path / 'DepthNet_elu_bn_64.pth.tar'
  _export('--checkpoint', SHIPPED, '--format', 'pth', '--out', out, capsys=capsys)
  loaded = torch.load(out, weights_only=True)
  assert loaded['arch'] == 'DepthNet_elu_bn' and loaded['bn'] is True and loaded['activation_function'] == 'elu'
  assert not any(k.startswith('module.') for k in loaded['state_dict'])
  torch_reference.TorchDepthNet(batch_norm=True, depth_activation='elu').load_state_dict(loaded['state_dict'])
  ours = nnx.state(loading.load_any(SHIPPED)).to_pure_dict()
  back = nnx.state(torch_import.load(out)).to_pure_dict()
  flat_ours, flat_back = (dict(torch_import._flatten(t)) for t in (ours, back))
  assert flat_ours.keys() == flat_back.keys()
  for key, value in flat_ours.items():
    assert np.array_equal(np.asarray(value), np.asarray(flat_back[key])), key


def _damaged_copy(tmp_path):
  copy = tmp_path / 'damaged'
  shutil.copytree(SHIPPED, copy)
  biggest = max((os.path.join(d, f) for d, _, fs in os.walk(copy) for f in fs), key=os.path.getsize)
  with open(biggest, 'r+b') as f:
    f.seek(os.path.getsize(biggest) // 2)
    f.write(b'\xff' * 64)
  return copy


def test_the_command_runs_as_python_m(tmp_path):
  """`python -m depthnet_jax.export` is the command (a user error: one line, exit 1, nothing written)."""
  import subprocess
  import sys
  result = subprocess.run([sys.executable, '-m', 'depthnet_jax.export', '--checkpoint', SHIPPED, '--format', 'tflite',
                           '--out', tmp_path / 'm.onnx'], capture_output=True, text=True, cwd=REPO, timeout=120)
  assert result.returncode == 1 and result.stderr.startswith("error: argument --format: invalid choice: 'tflite'")
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('case', ['format', 'exists', 'unwritable', 'damaged', 'inside', 'suffix'])
def test_export_errors_are_one_line_and_write_nothing(tmp_path, case, capsys):
  out = tmp_path / 'out' / 'model.onnx'
  out.parent.mkdir()
  args = ['--checkpoint', SHIPPED, '--format', 'onnx', '--out', out]
  if case == 'format':
    args[3] = 'tflite'
  elif case == 'exists':
    out.write_text('mine')
  elif case == 'unwritable':
    out = tmp_path / 'file' / 'model.onnx'
    (tmp_path / 'file').write_text('a file, not a folder')
    args[-1] = out
  elif case == 'damaged':
    args[1] = _damaged_copy(tmp_path)
  elif case == 'inside':
    args[1] = tmp_path / 'out'
    shutil.copytree(SHIPPED, tmp_path / 'out', dirs_exist_ok=True)
  elif case == 'suffix':
    args[-1] = out.with_suffix('.pb')
  before = sorted(os.listdir(out.parent)) if out.parent.is_dir() else None
  _, stderr = _export(*args, ok=False, capsys=capsys)
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), stderr
  assert 'Traceback' not in stderr
  if case == 'exists':
    assert out.read_text() == 'mine'
  if before is not None:
    assert sorted(os.listdir(out.parent)) == before   # nothing half-written, no temporary



def test_the_runtime_caches_its_graph_in_the_compilation_cache(tmp_path, capsys):
  """`--runtime onnx` exports the graph once per weights into <cache>/onnx-graphs/ and reads it back; a cache it
  cannot write is one warning, the graph kept in memory."""
  from depthnet_jax.testing.random_models import random_depthnet
  model = random_depthnet(2)
  first = runtimes.OnnxNetwork(model, cache=str(tmp_path / 'cache'))
  assert first.graph_path == str(tmp_path / 'cache' / runtimes.GRAPH_DIR / f'depthnet-{runtimes.digest(model)}.onnx')
  stamp = os.stat(first.graph_path).st_mtime_ns
  again = runtimes.OnnxNetwork(model, cache=str(tmp_path / 'cache'))
  assert again.graph_path == first.graph_path and os.stat(first.graph_path).st_mtime_ns == stamp
  other = random_depthnet(3)
  assert runtimes.digest(other) != runtimes.digest(model)
  (tmp_path / 'file').write_text('not a folder')
  in_memory = runtimes.OnnxNetwork(other, cache=str(tmp_path / 'file'))
  assert in_memory.graph_path is None
  assert capsys.readouterr().err.startswith('warning: ONNX graph cache')
  import jax
  jax.config.update('jax_enable_compilation_cache', False)   # --no_compilation_cache: no graph written either
  try:
    assert runtimes.OnnxNetwork(other).graph_path is None and capsys.readouterr().err == ''
  finally:
    jax.config.update('jax_enable_compilation_cache', True)
  frames = np.random.default_rng(0).integers(0, 256, (2, 1, 32, 48, 3), dtype=np.uint8)
  np.testing.assert_array_equal(first(*frames), again(*frames))


def test_the_runtime_runs_large_batches_in_pieces_with_the_same_depths(monkeypatch):
  from depthnet_jax.testing.random_models import random_depthnet
  network = runtimes.OnnxNetwork(random_depthnet(4))
  first, second = np.random.default_rng(1).integers(0, 256, (2, 5, 32, 48, 3), dtype=np.uint8)
  whole = network(first, second)
  monkeypatch.setattr(runtimes, 'CHUNK_PIXELS', 2 * 32 * 48)   # runs of 2, 2 and 1 pairs
  runs = []
  monkeypatch.setattr(network, '_run', lambda a, b, run=network._run: runs.append(len(a)) or run(a, b))
  np.testing.assert_allclose(network(first, second), whole, rtol=1e-6, atol=1e-6)
  assert runs == [2, 2, 1] and whole.shape == (5, 8, 12)
