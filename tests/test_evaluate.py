"""`python -m depthnet_jax.evaluate` and the one evaluation behind it (`evaluation.evaluate`): the original protocol
gives `losses.depth_metrics` of the split's pairs (what training logs and eval_only prints), the followup protocol
a NumPy implementation of test_depth.py's steps; example pictures; PyTorch checkpoints and Still Box trees as
inputs; the JSON and the plot; user errors.

The command runs in-process (`command.main`) on conftest's tiny dataset and tiny trained run; the model's
compiled step is shared by every test of the worker (`evaluate._STEPS`)."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from configs import test as test_config
from depthnet_jax.checkpoints import loading
from depthnet_jax.common.conventions import denormalize, normalize
from depthnet_jax.data import input_pipeline, sharding
from depthnet_jax.evaluation import command, evaluate
from depthnet_jax.model import losses
from depthnet_jax.train import trainer as train_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIFT = 3


def _evaluate(capsys, *argv):
  """(exit code, stdout, stderr) of the command run in-process."""
  code = command.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err


def _json(path):
  with open(path) as f:
    return json.load(f)


@pytest.fixture(scope='module')
def trees(tmp_path_factory):
  """Two rendered Still Box trees of 2 scenes x 5 frames at 32x32 (4 pairs each): the camera moving 0.1 m per
  frame (Still Box's, a factor of 1) and 0.2 m (a pair moves 0.6 m: the followup protocol scales by 2)."""
  from tfds_stillbox.render import export
  root = tmp_path_factory.mktemp('trees')
  return {step: export.export(str(root / f'step{step}'), 32, 2, seed=3, num_frames=5, step=step)
          for step in (0.1, 0.2)}


@pytest.fixture(scope='module')
def model(tiny_run):
  return loading.load_any(tiny_run[0])


# --- NumPy references -------------------------------------------------------------------------------------------

def _tree_pairs(root):
  """(frames i and i + 3 as uint8 [H, W, 6], raw depth of frame i + 3, |3 time_step speed|) of every pair of a
  tree, read with json, OpenCV and NumPy only (not through tfds_stillbox.tree or the input pipeline)."""
  import cv2
  for folder in sorted((f for f in os.listdir(root) if f.isdigit()), key=int):
    meta = _json(os.path.join(root, folder, 'metadata.json'))
    for scene in meta['scenes']:
      def frame(name, folder=folder):
        return cv2.cvtColor(cv2.imread(os.path.join(root, folder, name)), cv2.COLOR_BGR2RGB)
      for i in range(len(scene['imgs']) - SHIFT):
        pair = np.concatenate([frame(scene['imgs'][i]), frame(scene['imgs'][i + SHIFT])], axis=-1)
        depth = np.load(os.path.join(root, folder, scene['depth'][i + SHIFT])).astype(np.float64)
        yield pair, depth, SHIFT * scene['time_step'] * np.linalg.norm(scene['speed'])


def _predict(model, pairs):
  """The model's depth of each uint8 pair."""
  return _network(model, normalize(np.stack(pairs)))


def _network(model, inputs):
  """The model's depth of normalised pairs (jitted: op by op, the first call would compile each op, about 12 s)."""
  import jax
  from flax import nnx
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
  return np.asarray(forward(state, inputs), np.float64)


def _upsample(x, size):
  """torch's interpolate(mode='bilinear', align_corners=False) of one [h, w] map, written out."""
  def axis(n_out, n_in):
    src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
    i0 = np.floor(src).astype(int)
    return i0, np.minimum(i0 + 1, n_in - 1), src - i0
  (y0, y1, ly), (x0, x1, lx) = axis(size[0], x.shape[0]), axis(size[1], x.shape[1])
  rows = x[y0] * (1 - ly)[:, None] + x[y1] * ly[:, None]
  return rows[:, x0] * (1 - lx) + rows[:, x1] * lx


def _compute_errors(gt, pred):
  """test_depth.py's compute_errors."""
  thresh = np.maximum(gt / pred, pred / gt)
  return {'mean_abs': np.mean(np.abs(gt - pred)), 'abs_rel': np.mean(np.abs(gt - pred) / gt),
          'abs_log': np.mean(np.abs(np.log(gt) - np.log(pred))), 'sq_rel': np.mean((gt - pred) ** 2 / gt),
          'rmse': np.sqrt(np.mean((gt - pred) ** 2)), 'rmse_log': np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2)),
          'delta1': np.mean(thresh < 1.25), 'delta2': np.mean(thresh < 1.25 ** 2),
          'delta3': np.mean(thresh < 1.25 ** 3)}


def _bins(gt, pred):
  """Pixels, mean |error| and mean |error| / gt per 10 m bin of gt (the last one closed at 100 m)."""
  index = np.minimum((gt // 10).astype(int), 9)
  out = []
  for k in range(10):
    sel = index == k
    n = int(sel.sum())
    err = np.abs(pred[sel] - gt[sel])
    out.append((n, err.mean() if n else None, (err / gt[sel]).mean() if n else None))
  return out


def _assert_bins(bins, expected):
  assert [b['pixels'] for b in bins] == [n for n, _, _ in expected]
  for b, (n, mae, rel) in zip(bins, expected):
    assert (b['mean_abs_error'] is None) == (n == 0)
    if n:
      assert b['mean_abs_error'] == pytest.approx(mae, rel=1e-5, abs=1e-5)
      assert b['abs_rel'] == pytest.approx(rel, rel=1e-5, abs=1e-6)


# --- The protocols --------------------------------------------------------------------------------------------

def test_original_protocol_equals_training_evaluation(model, tiny_run, synth_tiny_dir, tmp_path, capsys):
  """The command and train.py's eval_only (the same evaluation as training's) print what training logged: the mean
  over the split's pairs of `losses.depth_metrics`, taken here over all of them at once (no batches to merge)."""
  workdir, trained = tiny_run
  code, out, err = _evaluate(capsys, '--checkpoint', workdir, '--dataset', 'tfds_stillbox/synth_tiny',
                             '--data_dir', synth_tiny_dir, '--json', tmp_path / 'm.json', '--batch_size', 4)
  assert code == 0, err
  assert 'evaluated 6/6 pairs' in err   # progress
  document = _json(tmp_path / 'm.json')
  ours = document['metrics']
  assert list(ours) == list(losses.METRIC_NAMES)
  printed = dict(line.split() for line in out.splitlines() if line.split() and line.split()[0] in ours)
  assert {k: float(v) for k, v in printed.items()} == ours

  config = test_config.get_config()
  config.data_dir = synth_tiny_dir
  config.eval_only = True
  trainer = train_lib.Trainer(config)
  eval_only = train_lib.eval_only(trainer, workdir, config)
  lines = dict(line.split() for line in capsys.readouterr().out.splitlines() if line.startswith('eval_'))
  assert {k: float(lines[f'eval_{k}']) for k in ours} == eval_only
  # the model's predictions in batches of 4 (as the other tests', one compiled forward), the metrics of the 6 pairs
  batches = list(input_pipeline.eval_dataset(trainer.eval_source, global_batch_size=4))
  assert len(batches) == 2 and sum(b['mask'].sum() for b in batches) == 6
  batch = {k: np.concatenate([b[k] for b in batches]) for k in ('image_pair', 'depth', 'mask')}
  prediction = np.concatenate([_network(model, b['image_pair']) for b in batches]).astype(np.float32)
  import jax
  direct = jax.jit(losses.depth_metrics)(prediction, batch['depth'], batch['mask'])
  for k in ours:
    assert ours[k] == pytest.approx(float(direct[k]), rel=1e-6), k
  logged = trained.split('eval at step 6: ')[1].splitlines()[0]   # what training logged at its last evaluation
  assert f'depth_error {ours["depth_error"]:.4g}' in logged
  # every pixel of the 6 pairs at the network's 8x8 output has a target > 1e-3 m
  assert document['pairs'] == document['images'] == 6
  assert document['pixels'] == sum(b['pixels'] for b in document['bins']) == 6 * 8 * 8
  assert document['scale_factor']['applied'] is False
  assert document['runtime'] == 'jax'
  # ONNX Runtime computes the network, the same JAX code the metrics: the same figures to 1e-4
  code, _, err = _evaluate(capsys, '--checkpoint', workdir, '--dataset', 'tfds_stillbox/synth_tiny', '--data_dir',
                           synth_tiny_dir, '--json', tmp_path / 'onnx.json', '--batch_size', 4, '--runtime', 'onnx')
  assert code == 0, err
  onnx_document = _json(tmp_path / 'onnx.json')
  assert onnx_document['runtime'] == 'onnx'
  assert onnx_document['metrics'] == pytest.approx(ours, rel=1e-4)
  assert onnx_document['pixels'] == document['pixels']


def test_example_pictures_are_an_option_of_the_evaluation(model, synth_tiny_dir):
  """`images=N`: N strips (frame 1, frame 2, truth, prediction) of pairs of the first batch, spread over it; the
  figures as without them (the same compiled step)."""
  from flax import nnx
  source = input_pipeline.open_source('tfds_stillbox/synth_tiny', 'validation', synth_tiny_dir)
  mesh = sharding.make_mesh()
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  params, stats = sharding.replicate((params, stats), mesh)
  plain = evaluate.evaluate(graphdef, params, stats, source, batch_size=4, mesh=mesh)
  shown = evaluate.evaluate(graphdef, params, stats, source, batch_size=4, mesh=mesh, images=3)
  assert plain.pictures is None and shown.metrics == plain.metrics
  assert shown.pictures.shape == (3, 32, 4 * 32, 3) and shown.pictures.dtype == np.uint8
  first = next(iter(input_pipeline.eval_dataset(source, global_batch_size=4)))
  frames = denormalize(first['image_pair'])
  for picture, row in zip(shown.pictures, (0, 1, 3)):   # rows 0, 1.5 -> 1, 3 of the 4 real pairs
    np.testing.assert_array_equal(picture[:, :32], frames[row, ..., :3])
    np.testing.assert_array_equal(picture[:, 32:64], frames[row, ..., 3:])


def test_followup_protocol_equals_numpy_test_depth(model, trees, tiny_run, tmp_path, capsys):
  """On scenes where a pair moves 0.6 m: scale by 2, upsample, clamp, mask, crop, per-image metrics, averaged."""
  pairs, depths, moved = zip(*_tree_pairs(trees[0.2]))
  assert len(pairs) == 4 and np.allclose(moved, 0.6)
  predictions = _predict(model, pairs)
  per_image, gts, preds = [], [], []
  for prediction, gt, d in zip(predictions, depths, moved):
    pred = np.clip(_upsample(prediction * d / 0.3, gt.shape), 1e-3, 80)
    h, w = gt.shape
    crop = np.zeros_like(gt, bool)
    crop[int(0.05 * h):int(0.95 * h), int(0.05 * w):int(0.95 * w)] = True
    mask = (gt > 1e-3) & (gt < 80) & crop
    per_image.append(_compute_errors(gt[mask], pred[mask]))
    gts.append(gt[mask])
    preds.append(pred[mask])
  expected = {k: np.mean([e[k] for e in per_image]) for k in per_image[0]}

  code, out, err = _evaluate(capsys, '--checkpoint', tiny_run[0], '--stillbox_tree', trees[0.2], '--protocol',
                             'followup', '--json', tmp_path / 'f.json')
  assert code == 0, err
  document = _json(tmp_path / 'f.json')
  assert list(document['metrics']) == list(losses.FOLLOWUP_METRIC_NAMES)
  for k, v in expected.items():
    assert document['metrics'][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
  assert document['scale_factor'] == {'applied': True, 'min': 2.0, 'max': 2.0, 'nominal_displacement': 0.3,
                                      'displacement_min': 0.6, 'displacement_max': 0.6}
  assert 'scale factor d / nominal applied to the predictions: 2 ' in out
  assert document['pixels'] == sum(len(g) for g in gts) == sum(b['pixels'] for b in document['bins'])
  _assert_bins(document['bins'], _bins(np.concatenate(gts), np.concatenate(preds)))
  assert document['bins'][8]['pixels'] == document['bins'][9]['pixels'] == 0   # the mask stops below 80 m
  code, _, err = _evaluate(capsys, '--checkpoint', tiny_run[0], '--stillbox_tree', trees[0.2], '--protocol',
                           'followup', '--json', tmp_path / 'onnx.json', '--runtime', 'onnx')
  assert code == 0, err
  assert _json(tmp_path / 'onnx.json')['metrics'] == pytest.approx(document['metrics'], rel=1e-4)


def test_still_box_tree_json_and_plot(model, trees, tiny_run, tmp_path, capsys):
  """A rendered tree, the original protocol: metrics and bins as NumPy computes them, the JSON, the PNG."""
  pairs, depths, _ = zip(*_tree_pairs(trees[0.1]))
  predictions = _predict(model, pairs)
  targets = np.clip(np.stack(depths), 0, 100).reshape(4, 8, 4, 8, 4).mean(axis=(2, 4))   # area 32x32 -> 8x8
  code, out, err = _evaluate(capsys, '--checkpoint', tiny_run[0], '--stillbox_tree', trees[0.1], '--json',
                             tmp_path / 'r.json', '--plot', tmp_path / 'r.png', '--batch_size', 3)
  assert code == 0, err
  document = _json(tmp_path / 'r.json')
  assert document['metrics']['depth_error'] == pytest.approx(np.abs(predictions - targets).mean(), rel=1e-5)
  _assert_bins(document['bins'], _bins(targets.ravel(), predictions.ravel()))
  assert document['pixels'] == 4 * 8 * 8 == sum(b['pixels'] for b in document['bins'])
  assert document['data'] == {'stillbox_tree': trees[0.1], 'scenes': 2, 'frames': 5, 'height': 32, 'width': 32}
  assert document['protocol'] == 'original' and document['shift'] == 3 and document['pairs'] == 4
  assert document['checkpoint']['resolved'] == os.path.join(tiny_run[0], 'best', '6')
  assert document['checkpoint']['nominal_displacement'] == 0.3 and document['checkpoint']['batch_norm'] is True
  assert document['scale_factor']['applied'] is False and document['scale_factor']['displacement_min'] == 0.3
  assert [(b['depth_min'], b['depth_max']) for b in document['bins']] == [(10.0 * k, 10.0 * k + 10) for k in
                                                                           range(10)]
  import imageio.v3 as iio
  image = iio.imread(tmp_path / 'r.png')
  assert image.shape == (540, 900, 3) and image.dtype == np.uint8
  assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10   # more than a blank canvas
  assert sorted(os.listdir(tmp_path)) == ['r.json', 'r.png']   # no temporaries left
  assert f'wrote {tmp_path / "r.png"}' in out
  # the same files again: refused without --overwrite, replaced with it
  code, _, err = _evaluate(capsys, '--checkpoint', tiny_run[0], '--stillbox_tree', trees[0.1], '--plot',
                           tmp_path / 'r.png')
  assert code == 1 and err.startswith('error: --plot ') and 'exists already' in err
  code, _, err = _evaluate(capsys, '--checkpoint', tiny_run[0], '--stillbox_tree', trees[0.1], '--plot',
                           tmp_path / 'r.png', '--overwrite')
  assert code == 0, err


def _write_pth(model, path):
  """The model's weights as the original's train.py saves them (DataParallel's `module.` keys, torch's layouts,
  the zip container), written without torch."""
  from flax import nnx

  from depthnet_jax.checkpoints import torch_import
  from depthnet_jax.testing.pickle_craft import G, Storage, dumps, tensor, zip_file
  state, storages = {}, {}
  for leaf_path, value in torch_import._flatten(nnx.state(model).to_pure_dict()).items():
    key, layout = torch_import._torch_key(leaf_path)
    array = np.asarray(value, np.float32)
    if layout == 'conv':      # HWIO -> OIHW
      array = array.transpose(3, 2, 0, 1)
    elif layout == 'deconv':  # ours is torch's IOHW kernel flipped in both spatial axes, as HWIO
      array = array.transpose(2, 3, 0, 1)[:, :, ::-1, ::-1]
    array = np.ascontiguousarray(array)
    name = str(len(storages))
    storages[name] = array.reshape(-1)
    storage = Storage('storage', G('torch', 'FloatStorage'), name, 'cpu', array.size)
    state[f'module.{key}'] = tensor(storage, 0, array.shape, tuple(s // 4 for s in array.strides))
  checkpoint = {'epoch': 1, 'arch': 'DepthNet_elu_bn', 'state_dict': state, 'best_error': 30.0, 'bn': True,
                'with_confidence': False, 'activation_function': 'elu', 'clamp': False, 'mean': [0.5] * 3,
                'std': [0.2] * 3}
  path.write_bytes(zip_file(dumps(checkpoint), storages))
  return path


def test_a_pytorch_checkpoint_gives_the_figures_of_the_same_weights(model, trees, tiny_run, tmp_path, capsys):
  pth = _write_pth(model, tmp_path / 'model_best.pth.tar')
  results = {}
  for name, checkpoint in (('orbax', tiny_run[0]), ('torch', pth)):
    code, _, err = _evaluate(capsys, '--checkpoint', checkpoint, '--stillbox_tree', trees[0.1], '--protocol',
                             'followup', '--json', tmp_path / f'{name}.json')
    assert code == 0, err
    results[name] = _json(tmp_path / f'{name}.json')
  assert results['torch']['metrics'] == pytest.approx(results['orbax']['metrics'], rel=1e-6)
  assert results['torch']['checkpoint']['resolved'] == str(pth)
  assert results['torch']['checkpoint']['displacement_recorded'] is False   # PyTorch weights: 0.3 m assumed
  assert results['torch']['scale_factor']['min'] == results['torch']['scale_factor']['max'] == 1.0


def test_upsampling_and_crop_are_test_depths():
  rng = np.random.default_rng(0)
  for src, dst in (((8, 8), (32, 32)), ((3, 5), (10, 17)), ((9, 13), (33, 50))):
    x = rng.uniform(0, 100, src).astype(np.float32)
    np.testing.assert_allclose(np.asarray(losses.upsample_bilinear(x[None], dst))[0], _upsample(x, dst),
                               rtol=1e-5, atol=1e-4)
  crop = losses.border_crop(100, 64)
  assert np.flatnonzero(crop[:, 10]).tolist() == list(range(5, 95))    # generate_mask: [-95, -5, 5, 95] at 100
  assert np.flatnonzero(crop[50]).tolist() == list(range(3, 60))       # int(3.2), int(60.8)


# --- User errors ----------------------------------------------------------------------------------------------

def _not_still_box(tmp_path):
  (tmp_path / 'nostillbox' / '0').mkdir(parents=True)
  return tmp_path / 'nostillbox'


@pytest.mark.parametrize('case', [
    'missing_checkpoint', 'not_a_checkpoint', 'bad_pth', 'no_data', 'both_data', 'split_with_tree', 'shift_zero',
    'shift_too_large', 'batch_size', 'protocol', 'unknown_dataset', 'unknown_split', 'not_still_box',
    'still_box_root', 'existing_json', 'plot_extension', 'json_folder_is_a_file', 'int_flag'])
def test_user_errors_are_one_line_and_write_nothing(case, tiny_run, synth_tiny_dir, trees, tmp_path, capsys):
  workdir = tiny_run[0]
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'kept.json').write_text('{"mine": 1}')
  bad_pth = tmp_path / 'bad.pth.tar'
  bad_pth.write_bytes(b'not a torch file')
  data = ['--dataset', 'tfds_stillbox/synth_tiny', '--data_dir', synth_tiny_dir]
  tree = ['--stillbox_tree', trees[0.1]]
  json_out = ['--json', out / 'm.json', '--plot', out / 'm.png']
  argv, expected = {
      'missing_checkpoint': (['--checkpoint', tmp_path / 'nothere', *data], '--checkpoint .*nothere: does not exist'),
      'not_a_checkpoint': (['--checkpoint', out, *data], '--checkpoint .*out: .*neither a depthnet-jax checkpoint'),
      'bad_pth': (['--checkpoint', bad_pth, *data], '--checkpoint .*bad.pth.tar: '),
      'no_data': (['--checkpoint', workdir], '--dataset and --stillbox_tree: expected exactly one .* got neither'),
      'both_data': (['--checkpoint', workdir, *data, *tree], 'exactly one of them .* got both'),
      'split_with_tree': (['--checkpoint', workdir, *tree, '--split', 'train'], "--split='train': only with --dataset"),
      'shift_zero': (['--checkpoint', workdir, *data, '--shift', 0], '--shift=0: expected an integer >= 1'),
      'shift_too_large': (['--checkpoint', workdir, *data, '--shift', 6],
                          '--shift=6: expected an integer from 1 to 5 .*6 frames'),
      'batch_size': (['--checkpoint', workdir, *data, '--batch_size', -2], '--batch_size=-2: expected an integer >= 1'),
      'protocol': (['--checkpoint', workdir, *data, '--protocol', 'kitti'],
                   "argument --protocol: invalid choice: 'kitti'"),
      'unknown_dataset': (['--checkpoint', workdir, '--dataset', 'tfds_stillbox/synth_tiyn', '--data_dir',
                           synth_tiny_dir], "--dataset='tfds_stillbox/synth_tiyn': .*did you mean synth_tiny"),
      'unknown_split': (['--checkpoint', workdir, *data, '--split', 'testing'], "--split='testing': "),
      'not_still_box': (['--checkpoint', workdir, '--stillbox_tree', _not_still_box(tmp_path)],
                        '--stillbox_tree .*nostillbox: not a Still Box tree: .*metadata.json: missing'),
      'still_box_root': (['--checkpoint', workdir, '--stillbox_tree', os.path.dirname(trees[0.1])],
                         'looks like a Still Box root: pass a resolution folder, e.g. --stillbox_tree .*32'),
      'existing_json': (['--checkpoint', workdir, *data, '--json', out / 'kept.json'],
                        '--json .*kept.json: exists already; .*--overwrite'),
      'plot_extension': (['--checkpoint', workdir, *data, '--plot', out / 'm.jpg'], '--plot .*m.jpg: expected a file '
                         'name ending in .png'),
      'json_folder_is_a_file': (['--checkpoint', workdir, *data, '--json', out / 'kept.json' / 'm.json'],
                                '--json .*m.json: its folder .*kept.json: is a file'),
      'int_flag': (['--checkpoint', workdir, *data, '--shift', 'three'],
                   "argument --shift: invalid int value: 'three'"),
  }[case]
  if case not in ('existing_json', 'plot_extension', 'json_folder_is_a_file'):
    argv = argv + json_out
  code, stdout, err = _evaluate(capsys, *argv)
  assert code == 1
  assert err.startswith('error: ') and err.count('\n') == 1 and 'Traceback' not in err, err
  assert re.search(expected, err), err
  assert stdout == ''
  assert sorted(os.listdir(out)) == ['kept.json'] and (out / 'kept.json').read_text() == '{"mine": 1}'


def test_help_and_flag_errors_do_not_start_jax(tmp_path):
  """--help and a flag error are answered before JAX (or TensorFlow, Orbax) is imported."""
  code = ('import sys; from depthnet_jax import evaluate; rc = evaluate.main(sys.argv[1:]); '
          'assert not {"jax", "tensorflow", "orbax"} & set(sys.modules), sorted(sys.modules); sys.exit(rc)')

  def run(*argv):
    return subprocess.run([sys.executable, '-c', code, *argv], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))

  result = run('--checkpoint', tmp_path, '--dataset', 'x', '--shift', '0')
  assert result.returncode == 1 and result.stderr == 'error: --shift=0: expected an integer >= 1\n', result.stderr
  result = run('--help')
  assert result.returncode == 0 and '--stillbox_tree' in result.stdout and '--protocol' in result.stdout
  result = subprocess.run([sys.executable, '-m', 'depthnet_jax.evaluate', '--checkpoint', tmp_path / 'none',
                           '--dataset', 'x', '--debug'], capture_output=True, text=True, timeout=120, cwd=REPO)
  assert result.returncode == 1 and 'Traceback' in result.stderr
  assert result.stderr.splitlines()[-1].startswith('error: --checkpoint ')


@pytest.mark.slow
def test_choose_shift_by_either_runtime(trees, tiny_run, tmp_path, capsys):
  """--choose_shift (the follow-up's choice among each scene's candidate pairs) gives the same figures whether JAX
  or ONNX Runtime computes the candidates (1e-4 relative; the same choice on these scenes)."""
  documents = {}
  for runtime in ('jax', 'onnx'):
    code, _, err = _evaluate(capsys, '--checkpoint', tiny_run[0], '--stillbox_tree', trees[0.2], '--protocol',
                             'followup', '--choose_shift', '--runtime', runtime, '--json', tmp_path / f'{runtime}.json')
    assert code == 0, err
    documents[runtime] = _json(tmp_path / f'{runtime}.json')
  assert documents['onnx']['runtime'] == 'onnx' and documents['onnx']['choose_shift'] is True
  assert documents['onnx']['metrics'] == pytest.approx(documents['jax']['metrics'], rel=1e-4)
  assert documents['onnx']['images'] == documents['jax']['images'] == 2
