"""The TFDS builder: rendered and real-layout configs, splits, record format, bad trees, and the `tfds` CLI."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_stillbox import codec
from tfds_stillbox import tfds_stillbox_dataset_builder as stillbox
from tfds_stillbox.render import scenes
from tfds_stillbox.tree import StillBoxFormatError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DUMMY = os.path.join(REPO, 'tfds_stillbox', 'dummy_data')
TFDS_CLI = os.path.join(os.path.dirname(sys.executable), 'tfds')


def _build(data_dir, config, manual_dir=None):
  builder = stillbox.Builder(config=config, data_dir=str(data_dir))
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
  builder.download_and_prepare(download_config=download_config)
  return builder


def _records(builder, split):
  source = builder.as_data_source(split=split)
  return [source[i] for i in range(len(source))]


def _tiny(**changes):
  fields = dict(name='tiny_test', source='synth', resolution=[24, 16], num_scenes=6, num_frames=4, seed=5, jobs=1)
  fields.update(changes)
  return stillbox.StillBoxConfig(**fields)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  return _build(tmp_path_factory.mktemp('tiny'), _tiny())


def test_rendered_config_records(tiny):
  assert tiny.info.splits['train'].num_examples == 5
  assert tiny.info.splits['validation'].num_examples == 1
  train, validation = _records(tiny, 'train'), _records(tiny, 'validation')
  ids = {r['id'].decode() for r in train} | {r['id'].decode() for r in validation}
  assert ids == {f'synth/24x16/5/{i}' for i in range(6)}
  for record in train + validation:
    assert len(record['frames']) == len(record['depth']) == 4
    index = int(record['id'].decode().rsplit('/', 1)[1])
    scene = scenes.render_scene((5, index), (24, 16), fov=90.0, num_frames=4)
    for t in range(4):
      frame = codec.decode_jpeg(record['frames'][t])
      assert frame.shape == (16, 24, 3) and frame.dtype == np.uint8
      assert np.abs(frame.astype(int) - scene.frames[t]).mean() < 8  # JPEG loss only
      depth = codec.decode_depth(record['depth'][t])
      assert depth.dtype == np.float32
      np.testing.assert_array_equal(depth, scene.depth[t])
    np.testing.assert_array_equal(record['speed'], scene.speed)
    assert record['time_step'] == pytest.approx(scene.time_step)
    assert (record['height'], record['width'], record['fov']) == (16, 24, 90.0)


def test_build_is_deterministic(tiny, tmp_path):
  again = _build(tmp_path, _tiny())
  for split in ('train', 'validation'):
    a = sorted(_records(tiny, split), key=lambda r: r['id'])
    b = sorted(_records(again, split), key=lambda r: r['id'])
    assert [r['id'] for r in a] == [r['id'] for r in b]
    for x, y in zip(a, b):
      assert x['frames'] == y['frames'] and x['depth'] == y['depth']


def test_split_is_by_scene_and_deterministic():
  ids = [f's{i}' for i in range(1000)]
  train, validation = stillbox.split_scenes(ids, 90)
  assert len(train) == 900 and len(validation) == 100 and not train & validation
  assert stillbox.split_scenes(list(reversed(ids)), 90) == (train, validation)  # order of discovery is irrelevant
  # Adding scenes keeps the split a function of the set only; tiny sets keep one validation scene.
  assert len(stillbox.split_scenes(['a', 'b'], 90)[1]) == 1


def test_real_layout_from_dummy_data(tmp_path):
  builder = _build(tmp_path, '64', manual_dir=DUMMY)
  records = _records(builder, 'train') + _records(builder, 'validation')
  # An independent look at the tree: every scene of every metadata.json, files as listed.
  expected = {}
  for k in sorted(os.listdir(os.path.join(DUMMY, '64'))):
    with open(os.path.join(DUMMY, '64', k, 'metadata.json')) as f:
      for i, scene in enumerate(json.load(f)['scenes']):
        expected[f'{k}/{i}'] = (os.path.join(DUMMY, '64', k), scene)
  assert sorted(r['id'].decode() for r in records) == sorted(expected)
  assert builder.info.splits['validation'].num_examples >= 1
  for record in records:
    folder, scene = expected[record['id'].decode()]
    for name, data in zip(scene['imgs'], record['frames']):
      with open(os.path.join(folder, name), 'rb') as f:
        assert f.read() == data  # JPEG bytes passed through, not re-encoded
    for name, data in zip(scene['depth'], record['depth']):
      np.testing.assert_array_equal(codec.decode_depth(data), np.load(os.path.join(folder, name)).astype(np.float32))
    np.testing.assert_allclose(record['speed'], scene['speed'])
    assert (record['height'], record['width']) == (64, 64)


def _broken_tree(tmp_path, breakage):
  root = tmp_path / 'manual'
  shutil.copytree(DUMMY, root)
  folder = root / '64' / '0'
  with open(folder / 'metadata.json') as f:
    scene = json.load(f)['scenes'][1]
  target = breakage(folder, scene)
  return root, target


def _negative_depth(folder, scene):
  path = folder / scene['depth'][2]
  depth = np.load(path)
  depth[5, 7] = -1.5
  np.save(path, depth)
  return path


def _edit_scene_1(**fields):
  def edit(folder, scene):
    path = folder / 'metadata.json'
    metadata = json.loads(path.read_text())
    metadata['scenes'][1].update(fields)
    path.write_text(json.dumps(metadata))   # NaN as Python's json writes it
    return path
  return edit


BREAKAGES = {
    'missing metadata': (lambda folder, scene: (os.remove(folder / 'metadata.json'), folder / 'metadata.json')[1],
                         'missing: every sub-folder'),
    'missing frame': (lambda folder, scene: (os.remove(folder / scene['imgs'][2]), folder / scene['imgs'][2])[1],
                      'listed in scene 0/1 but missing'),
    'missing depth': (lambda folder, scene: (os.remove(folder / scene['depth'][0]), folder / scene['depth'][0])[1],
                      'listed in scene 0/1 but missing'),
    'corrupt jpeg': (lambda folder, scene: ((folder / scene['imgs'][1]).write_bytes(b'\xff\xd8garbage'),
                                            folder / scene['imgs'][1])[1], 'not a readable image'),
    'depth shape': (lambda folder, scene: (np.save(folder / scene['depth'][3], np.zeros((32, 32), np.float32)),
                                           folder / scene['depth'][3])[1], r'depth map of shape \(32, 32\)'),
    'negative depth': (_negative_depth, r'depth map of scene 0/1 holds values below 0 \(min -1.5 m\); expected '
                                        'depths >= 0 m'),
    'nan speed': (_edit_scene_1(speed=[0.1, float('nan'), 1.0]),
                  r"scenes\[1\]: 'speed' \[0.1, nan, 1.0\]: expected 3 finite numbers"),
    'zero time step': (_edit_scene_1(time_step=0), r"scenes\[1\]: 'time_step' 0: expected a finite number of "
                                                   'seconds > 0'),
}


@pytest.mark.parametrize('name', list(BREAKAGES))
def test_bad_tree_fails_with_the_file_and_leaves_no_dataset(tmp_path, name):
  breakage, message = BREAKAGES[name]
  manual, target = _broken_tree(tmp_path, breakage)
  data_dir = tmp_path / 'data'
  with pytest.raises(StillBoxFormatError, match=message) as info:
    _build(data_dir, '64', manual_dir=str(manual))
  assert str(target) in str(info.value)
  with pytest.raises((AssertionError, ValueError)):   # not built: TFDS asks for the manual download
    tfds.data_source('tfds_stillbox/64', data_dir=str(data_dir), split='train')
  finished = data_dir / 'tfds_stillbox' / '64' / '1.0.0'
  assert not finished.exists()  # a half-finished build never looks finished


def test_skip_bad_scenes_reports_and_builds_the_rest(tmp_path, capsys):
  manual, _ = _broken_tree(tmp_path, BREAKAGES['missing frame'][0])
  config = stillbox.StillBoxConfig(name='64_lenient', resolution=64, skip_bad_scenes=True)
  builder = _build(tmp_path / 'data', config, manual_dir=str(manual))
  total = sum(builder.info.splits[s].num_examples for s in ('train', 'validation'))
  with open(os.path.join(DUMMY, '64', '0', 'metadata.json')) as f0, \
       open(os.path.join(DUMMY, '64', '1', 'metadata.json')) as f1:
    scenes = len(json.load(f0)['scenes']) + len(json.load(f1)['scenes'])
  assert total == scenes - 1
  assert 'skipped 1 of' in capsys.readouterr().out


def _cli(*args):
  return subprocess.run([TFDS_CLI, 'build', 'tfds_stillbox', *map(str, args)], cwd=REPO, capture_output=True,
                        text=True, timeout=600)


# `tfds build tfds_stillbox ...` as a user runs it (each a process of its own, about 12 s on 2 cores: the command
# imports TensorFlow). The real Still Box's config (from --manual_dir) in `make test`; a rendered one in
# `make test-slow` (conftest builds synth_tiny through the same builder in-process for every run).
def test_tfds_cli_builds_a_real_config(tmp_path):
  result = _cli('--config', '64', '--manual_dir', DUMMY, '--data_dir', tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert len(tfds.data_source('tfds_stillbox/64', data_dir=str(tmp_path), split='validation')) >= 1


@pytest.mark.slow
def test_tfds_cli_builds_a_rendered_config(tmp_path):
  result = _cli('--config', 'synth_tiny', '--data_dir', tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  source = tfds.data_source('tfds_stillbox/synth_tiny', data_dir=str(tmp_path), split='train')
  assert len(source) == 10 and codec.decode_jpeg(source[0]['frames'][0]).shape == (32, 32, 3)
  assert any(p.endswith('.array_record-00000-of-00001') for p in os.listdir(tmp_path / 'tfds_stillbox' /
                                                                              'synth_tiny' / '1.0.0'))


BAD_CONFIGS = [
    ('{"num_scenes": 0}', r"num_scenes=0: expected an integer >= 2 \(the train and validation splits need a scene"),
    ('{"num_scenes": 1}', r'num_scenes=1: expected an integer >= 2'),
    ('{"fov": 0}', r'fov=0: expected a number of degrees in \(0, 180\)'),
    ('{"fov": 180}', r'fov=180: expected a number of degrees in \(0, 180\)'),
    ('{"num_frames": 0}', r'num_frames=0: expected an integer >= 2 \(a training pair needs two frames of a scene\)'),
    ('{"num_frames": 200000, "resolution": 32}', r'num_frames=200000: expected at most 163840 frames at 32x32'),
    ('{"resolution": 0}', r'resolution=0: expected an integer like 64 or a list \[width, height\], each from 1 to '
                          '4096'),
    ('{"resolution": [96, 0]}', r'resolution=\[96, 0\]: expected an integer like 64'),
    ('{"resolution": "96x64"}', r"resolution='96x64': expected an integer like 64"),
    ('{"train_percent": 0}', r'train_percent=0: expected a number in \(0, 100\)'),
    ('{"train_percent": 100}', r'train_percent=100: expected a number in \(0, 100\)'),
    ('{"train_percent": -5}', r'train_percent=-5: expected a number in \(0, 100\)'),
    ('{"seed": -1}', r'seed=-1: expected an integer >= 0'),
    ('{"jobs": -1}', r'jobs=-1: expected an integer >= 0'),
    ('{"source": "synthetic"}', r"source='synthetic': expected 'manual' or 'synth'"),
    ('{"skip_bad_scenes": "yes"}', r"skip_bad_scenes='yes': expected true or false"),
]


@pytest.mark.parametrize('fields, message', BAD_CONFIGS, ids=[f for f, _ in BAD_CONFIGS])
def test_json_config_out_of_range_is_refused_naming_the_field(fields, message):
  """`tfds build tfds_stillbox --config '{...}'` makes the config as `StillBoxConfig(**json.loads(text))`."""
  text = json.dumps({'name': 'bad', 'source': 'synth', 'num_scenes': 10, **json.loads(fields)})
  with pytest.raises(ValueError, match=f"^StillBoxConfig 'bad': {message}"):
    stillbox.StillBoxConfig(**json.loads(text))  # refused before a Builder exists, so before any data_dir


def test_valid_configs_are_kept_and_normalised():
  assert all(c.name for c in stillbox.Builder.BUILDER_CONFIGS)  # the built-in configs pass their own checks
  config = stillbox.StillBoxConfig(**json.loads(
      '{"name": "ok", "source": "synth", "resolution": [96, 64], "num_scenes": 2.0, "fov": 60, "train_percent": 50}'))
  assert (config.resolution, config.num_scenes, config.fov, config.train_percent) == ([96, 64], 2, 60.0, 50.0)
  assert isinstance(config.num_scenes, int) and config.folder == '96x64'
  # A real-data config ignores num_scenes (its tree decides), so its default 0 is fine.
  assert stillbox.StillBoxConfig(name='m', resolution=128).num_scenes == 0
