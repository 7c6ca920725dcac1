"""Each shipped reference model (models/reference64, 128 and 256; docs/reference_models.md) keeps the figure
recorded when it was trained: its depth error on the regression set (scenes of a seed the training data does not
use, rendered here by `python -m tfds_stillbox.render` as the recipe says) must stay within 5 % of the value in its
metadata. It fails if the model code, the renderer, the evaluation or (through the original's own PyTorch file of
the same weights) the importer drift. Every entry point loads it: the evaluation command, infer.py, the Predictor
and a warm start."""

import json
import os
import re

import jax
import numpy as np
import pytest
from flax import nnx

import infer
from depthnet_jax.checkpoints import checkpointing, loading, torch_import
from depthnet_jax.evaluation import command
from depthnet_jax.infer import predictor as inference
from depthnet_jax.model.spec import ModelSpec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 0.05
# name -> (training size, dataset, fewest training scenes, the model it was warm-started from)
SHIPPED = {
    'reference64': (64, 'tfds_stillbox/synth64_large', 10000, ''),
    'reference128': (128, 'tfds_stillbox/synth128_large', 3000, 'models/reference64'),
    'reference256': (256, 'tfds_stillbox/synth256_large', 800, 'models/reference128'),
}
REFERENCE = os.path.join(REPO, 'models', 'reference64')   # the one the PyTorch-file test uses


@pytest.fixture(scope='module', params=sorted(SHIPPED, key=lambda n: SHIPPED[n][0]))
def shipped(request):
  return request.param


@pytest.fixture(scope='module')
def reference(shipped):
  return os.path.join(REPO, 'models', shipped)


@pytest.fixture(scope='module')
def recorded(reference):
  return checkpointing.read_model_config(reference)


_TREES = {}


def render_regression_set(tmp_path_factory, recorded) -> str:
  """The regression set as the recipe renders it: `--out DIR --resolution R --scenes N --seed S` (once a session
  per set)."""
  from tfds_stillbox.render import cli
  r = recorded['reference']['regression']
  key = (r['resolution'], r['scenes'], r['seed'])
  if key not in _TREES:
    out = tmp_path_factory.mktemp('regression')
    assert cli.main(['--out', str(out), '--resolution', str(r['resolution']), '--scenes', str(r['scenes']),
                     '--seed', str(r['seed']), '--jobs', '1']) == 0
    _TREES[key] = str(out / str(r['resolution']))
  return _TREES[key]


@pytest.fixture(scope='module')
def regression_tree(tmp_path_factory, recorded):
  return render_regression_set(tmp_path_factory, recorded)


def _depth_error(capsys, checkpoint, tree, json_path):
  code = command.main(['--checkpoint', str(checkpoint), '--stillbox_tree', tree, '--json', str(json_path)])
  out, err = capsys.readouterr()
  assert code == 0, err
  with open(json_path) as f:
    return json.load(f)['metrics']['depth_error']


def test_its_metadata_records_what_it_was_trained_on(shipped, recorded):
  size, dataset, scenes, warm_from = SHIPPED[shipped]
  ref = recorded['reference']
  assert recorded['image_size'] == [size, size] and recorded['fov'] == 90.0 and recorded['displacement'] == 0.3
  assert ref['name'] == shipped and ref['resolution'] == size and ref['regression']['resolution'] == size
  assert ref['dataset'] == dataset and ref['train_scenes'] > scenes
  assert ref['config'].get('init_from', '') == warm_from
  assert os.path.isfile(os.path.join(REPO, ref['recipe']))
  assert ref['config']['dataset'] == ref['dataset'] and ref['config']['solver'] in ('adam', 'sgd')
  assert 0 < ref['best_step'] <= ref['steps'] and ref['batch_size'] == ref['config']['batch_size']
  assert re.fullmatch(r'[0-9a-f]{40}', ref['commit'])
  assert ref['validation']['model_original']['depth_error'] < ref['validation']['mean_original']['depth_error'] / 2
  assert ref['regression']['depth_error'] > 0


def test_it_is_float32(reference, recorded):
  model = loading.load_any(reference)
  leaves = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]
  assert leaves and all(x.dtype == np.float32 for x in leaves)
  assert model.spec == ModelSpec(**{k: recorded[k] for k in ModelSpec().to_dict()})


def test_its_depth_error_on_the_regression_set_is_the_recorded_one(capsys, tmp_path, reference, recorded,
                                                                     regression_tree):
  expected = recorded['reference']['regression']['depth_error']
  measured = _depth_error(capsys, reference, regression_tree, tmp_path / 'reference.json')
  assert abs(measured - expected) <= TOLERANCE * expected, (measured, expected)


def test_the_original_pytorch_file_of_its_weights_gives_the_same_figure(capsys, tmp_path, tmp_path_factory):
  """The weights of reference64 as the original's train.py saves them (DataParallel state_dict in its checkpoint
  dict, torch's zip format), imported on the fly by the evaluation: the same depth error as the Orbax checkpoint.
  Once, not per model: the importer is the same for every model, and each evaluation costs the suite seconds."""
  import torch

  from depthnet_jax.testing import torch_reference
  model = loading.load_any(REFERENCE)
  torch_model = torch_reference.TorchDepthNet(batch_norm=True, depth_activation='elu', clamp=False)
  missing, unexpected = torch_model.load_state_dict(
      {k: torch.from_numpy(v) for k, v in torch_import.to_state_dict(model).items()}, strict=False)
  assert not unexpected and all(k.endswith('num_batches_tracked') for k in missing)
  path = tmp_path / 'model_best.pth.tar'
  regression_tree = render_regression_set(tmp_path_factory, checkpointing.read_model_config(REFERENCE))
  torch_reference.save(torch_reference.checkpoint_dict(torch_model), path, legacy=False)
  ours = _depth_error(capsys, REFERENCE, regression_tree, tmp_path / 'ours.json')
  imported = _depth_error(capsys, path, regression_tree, tmp_path / 'imported.json')
  assert imported == pytest.approx(ours, rel=1e-5)


def test_infer_predictor_and_warm_start_load_it(capsys, tmp_path, shipped, reference, regression_tree):
  import shutil

  from tfds_stillbox import tree
  scene = tree.list_scenes(regression_tree)[0]
  frames = tmp_path / 'frames'   # one scene's first 5 frames, as a camera's folder of pictures
  frames.mkdir()
  for name in scene.scene['imgs'][:5]:
    shutil.copy(os.path.join(scene.folder, name), frames)
  code = infer.main(['--checkpoint', reference, '--input', str(frames), '--output', str(tmp_path / 'out'),
                     '--frame_shift', '3', '--output_raw'])
  out, err = capsys.readouterr()
  assert code == 0, err
  written = sorted(n for n in os.listdir(tmp_path / 'out') if n.endswith('_depth.npy'))
  assert written
  depth = np.load(tmp_path / 'out' / written[0])
  size = SHIPPED[shipped][0]
  assert depth.shape == (size, size) and np.all(np.isfinite(depth)) and 1 < float(np.median(depth)) < 100

  predictor = inference.Predictor.from_checkpoint(reference)
  assert predictor.train_size == (size, size) and predictor.displacement == 0.3

  model = loading.load_any(reference)
  _, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  warm_params, warm_stats = loading.warm_start(reference, model.spec, params, stats)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(warm_params)))
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(warm_stats)))


def test_infer_help_says_which_camera_it_fits(shipped, recorded):
  """`infer.py --help` lists it with the network input width the FOV rule gives it at 90, 70 and 60 degrees."""
  from depthnet_jax.common import geometry
  line = next(x for x in infer.SHIPPED_MODELS.splitlines() if x.strip().startswith(f'models/{shipped} '))
  width = recorded['image_size'][1]
  widths = [geometry.size_for_fov(480, 640, fov, width, 90.0)[1] for fov in (90, 70, 60)]
  assert re.sub(r'\s+', ' ', line).split(' px')[0].endswith(' / '.join(map(str, widths))), (line, widths)
