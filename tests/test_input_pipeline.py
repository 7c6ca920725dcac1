"""The grain input pipeline: the original's sampling statistics, eval coverage, sharding, determinism, restore."""

import collections

import numpy as np
import pytest

from depthnet_jax.common import conventions
from depthnet_jax.data import input_pipeline as ip
from tfds_stillbox import codec

S = ip.SHIFT
H, W = 8, 12
TIME_STEP = 0.5


def _scene(scene: int, frames: int) -> dict:
  """A record whose pixels and depth say which frame they are, and which way up they are.

  Frame i: R = 6 i + 5 everywhere, G grows along x, B along y; depth (i + 1)(1 + x / 10 + y / 100).
  The speed encodes the scene: (1, 2, 3) (scene + 1).
  """
  y, x = np.mgrid[:H, :W]
  imgs, depths = [], []
  for i in range(frames):
    rgb = np.stack([np.full((H, W), 6 * i + 5), 20 * x, 30 * y], axis=-1).astype(np.uint8)
    imgs.append(codec.encode_jpeg(rgb, quality=100))
    depths.append(codec.encode_depth((i + 1) * (1 + x / 10 + y / 100)))
  return {'frames': imgs, 'depth': depths, 'time_step': np.float32(TIME_STEP),
          'speed': np.array([1, 2, 3], np.float32) * (scene + 1)}


@pytest.fixture(scope='module')
def long_scenes():
  return [_scene(s, 40) for s in range(10)]


def _frame_index(image: np.ndarray) -> int:
  """Frame index from the normalised R channel."""
  red = image[..., 0] * conventions.STD + conventions.MEAN
  return int(np.round((np.median(red) * 255 - 5) / 6))


def _expected_depth(i1, i2, vflip, hflip):
  y, x = np.mgrid[:H, :W]
  if i1 == i2:
    return np.full((H, W), 100, np.float32)
  depth = (i2 + 1) * (1 + x / 10 + y / 100) * S / abs(i2 - i1)
  if vflip:
    depth = depth[::-1]
  if hflip:
    depth = depth[:, ::-1]
  return np.clip(depth, 0, 100)


def _draws(source, n, seed=0, batch=8):
  frames = ip.frames_per_scene(source)
  steps = ip.steps_per_epoch(len(source), frames, batch)
  sample = ip.TrainSample(source, seed=seed, shift=S, layout=ip.Layout(batch), steps_per_epoch=steps)
  return [sample(k) for k in range(n)]


def test_sample_pair_mapping_from_draws(long_scenes):
  record = long_scenes[0]
  last = ip.sample_pair(record, 40, S, 0.9999, 0.99, False, False, False)
  assert tuple(last['pair']) == (39, 39)                       # i2 = min(T - 1, i1 + shift)
  assert np.all(last['depth'] == 100)                           # i1 == i2 fills the target with 100
  # shift = round(2 S u): 2.49 -> 2, 2.51 -> 3
  assert tuple(ip.sample_pair(record, 40, S, 0.0, 2.49 / 6, False, False, False)['pair']) == (0, 2)
  assert tuple(ip.sample_pair(record, 40, S, 0.0, 2.51 / 6, False, False, False)['pair']) == (0, 3)
  swapped = ip.sample_pair(record, 40, S, 0.25, 0.5, True, True, True)
  assert tuple(swapped['pair']) == (13, 10)
  np.testing.assert_allclose(swapped['depth'], _expected_depth(13, 10, True, True), rtol=1e-6)
  np.testing.assert_allclose(swapped['displacement'], [S * TIME_STEP, S * TIME_STEP * 2, -S * TIME_STEP * 3])
  assert swapped['image_pair'].shape == (H, W, 6) and swapped['image_pair'].dtype == np.float32
  assert (_frame_index(swapped['image_pair'][..., :3]), _frame_index(swapped['image_pair'][..., 3:])) == (13, 10)


def test_training_sampling_statistics(long_scenes):
  samples = _draws(long_scenes, 4000)
  shifts, swaps, vflips, hflips, i1s = collections.Counter(), [], [], [], []
  for s in samples:
    i1, i2 = (int(v) for v in s['pair'])
    image = s['image_pair']
    # frame i1 first, frame i2 second
    assert (_frame_index(image[..., :3]), _frame_index(image[..., 3:])) == (i1, i2)
    vflip = bool(image[1, 0, 2] < image[0, 0, 2])   # B grows along y unless flipped
    hflip = bool(image[0, 1, 1] < image[0, 0, 1])   # G grows along x unless flipped
    np.testing.assert_allclose(s['depth'], _expected_depth(i1, i2, vflip, hflip), rtol=1e-5)
    assert s['depth'].max() <= 100 and s['mask'] == 1
    scene = round(abs(float(s['displacement'][2])) / (S * TIME_STEP * 3)) - 1
    swap_sign = np.sign(s['displacement'][2]) * -1   # +1 when swapped
    expected = S * TIME_STEP * np.array([1, 2, 3]) * (scene + 1) * -swap_sign
    expected *= np.array([-1 if hflip else 1, -1 if vflip else 1, 1])
    np.testing.assert_allclose(s['displacement'], expected, rtol=1e-6)
    vflips.append(vflip)
    hflips.append(hflip)
    if i1 != i2:
      swaps.append(i1 > i2)
      assert swap_sign == (1 if i1 > i2 else -1)
    if min(i1, i2) < 40 - 2 * S:   # the first frame was not clipped: |i2 - i1| is the drawn shift
      shifts[abs(i2 - i1)] += 1
      i1s.append(min(i1, i2) if i1 != i2 else i1)
  assert abs(np.mean(swaps) - 0.5) < 0.04
  assert abs(np.mean(vflips) - 0.5) < 0.04 and abs(np.mean(hflips) - 0.5) < 0.04
  total = sum(shifts.values())
  expected = {0: 1 / 12, 6: 1 / 12, **{k: 1 / 6 for k in range(1, 6)}}
  assert set(shifts) == set(expected)
  for k, p in expected.items():
    assert abs(shifts[k] / total - p) < 0.025, (k, shifts[k] / total, p)
  assert set(i1s) == set(range(40 - 2 * S))
  # clipping happened: some targets reached 100 without i1 == i2
  assert any(s['depth'].max() == 100 and s['pair'][0] != s['pair'][1] for s in samples)


def test_epoch_visits_each_scene_once_per_frame():
  scenes = [_scene(s, 4) for s in range(5)]   # epoch = 20 samples = 5 steps of 4
  samples = _draws(scenes, 40, batch=4)
  for epoch in range(2):
    visited = collections.Counter(round(abs(float(s['displacement'][2])) / (S * TIME_STEP * 3)) - 1
                                  for s in samples[20 * epoch:20 * (epoch + 1)])
    assert visited == {s: 4 for s in range(5)}
  assert [tuple(s['pair']) for s in samples[:20]] != [tuple(s['pair']) for s in samples[20:]]


def test_epoch_drops_the_partial_batch_and_rejects_tiny_epochs():
  assert ip.steps_per_epoch(5, 4, 6) == 3
  with pytest.raises(ValueError, match='no full batch'):
    ip.steps_per_epoch(2, 4, 16)


@pytest.mark.parametrize('process_count', [1, 2])
def test_eval_covers_every_pair_once_with_padding(process_count):
  scenes = [_scene(s, 6) for s in range(5)]   # 5 x 3 pairs = 15 -> 4 global batches of 4, one padded row
  per_process = [list(ip.eval_dataset(scenes, global_batch_size=4, process_index=p, process_count=process_count))
                 for p in range(process_count)]
  assert len({len(batches) for batches in per_process}) == 1 and len(per_process[0]) == 4
  seen = collections.Counter()
  for batches in per_process:
    for b in batches:
      assert b['image_pair'].shape == (4 // process_count, H, W, 6)
      for image, depth, mask, disp, pair in zip(b['image_pair'], b['depth'], b['mask'], b['displacement'],
                                                b['pair']):
        assert tuple(pair) == (_frame_index(image[..., :3]), _frame_index(image[..., 3:]))
        assert pair[1] - pair[0] == S
        # the depth of frame i + S as it is (S / |i2 - i1| = 1), no flip
        np.testing.assert_allclose(depth, _expected_depth(pair[0], pair[1], False, False), rtol=1e-5)
        if mask:
          seen[(round(float(disp[2]) / (S * TIME_STEP * 3)) - 1, int(pair[0]))] += 1
  assert sum(float(b['mask'].sum()) for batches in per_process for b in batches) == 15
  assert seen == {(s, i): 1 for s in range(5) for i in range(3)}


def test_processes_read_disjoint_rows_of_the_same_global_batches(long_scenes):
  whole = list(ip.train_dataset(long_scenes, global_batch_size=4, seed=3)[:6])
  halves = [list(ip.train_dataset(long_scenes, global_batch_size=4, seed=3, process_index=p, process_count=2)[:6])
            for p in range(2)]
  for step in range(6):
    for key in whole[step]:
      np.testing.assert_array_equal(np.concatenate([halves[0][step][key], halves[1][step][key]]), whole[step][key])
  with pytest.raises(ValueError, match='multiple of the process count'):
    ip.train_dataset(long_scenes, global_batch_size=3, seed=0, process_index=0, process_count=2)


def test_seed_changes_the_stream_and_is_reproducible(long_scenes):
  a = ip.train_dataset(long_scenes, global_batch_size=4, seed=0)[:3]
  b = ip.train_dataset(long_scenes, global_batch_size=4, seed=0)[:3]
  c = ip.train_dataset(long_scenes, global_batch_size=4, seed=1)[:3]
  assert all(np.array_equal(x['image_pair'], y['image_pair']) for x, y in zip(a, b))
  assert not all(np.array_equal(x['pair'], y['pair']) for x, y in zip(a, c))


def _same(batches_a, batches_b):
  return all(np.array_equal(a[k], b[k]) for a, b in zip(batches_a, batches_b) for k in a) and \
      len(batches_a) == len(batches_b)


@pytest.fixture(scope='module')
def tiny_train(synth_tiny_dir):
  return ip.open_source('tfds_stillbox/synth_tiny', 'train', synth_tiny_dir)


def test_tfds_source_batches(tiny_train, synth_tiny_dir):
  ds = ip.train_dataset(tiny_train, global_batch_size=4, seed=0)
  batch = next(ip.make_iterator(ds))
  assert batch['image_pair'].shape == (4, 32, 32, 6) and batch['image_pair'].dtype == np.float32
  assert batch['depth'].shape == (4, 32, 32) and batch['depth'].dtype == np.float32
  assert batch['mask'].shape == (4,) and batch['displacement'].shape == (4, 3)
  assert 0 <= batch['depth'].min() and batch['depth'].max() <= 100
  # the normalisation maps [0, 255] to [-2.5, 2.5]
  assert -2.5 <= batch['image_pair'].min() and batch['image_pair'].max() <= 2.5
  validation = ip.open_source('tfds_stillbox/synth_tiny', 'validation', synth_tiny_dir)
  batches = list(ip.make_iterator(ip.eval_dataset(validation, global_batch_size=4)))
  assert sum(float(b['mask'].sum()) for b in batches) == len(validation) * (6 - S)


def test_iterator_state_restores_the_stream(tiny_train):
  ds = ip.train_dataset(tiny_train, global_batch_size=4, seed=0)
  it = ip.make_iterator(ds)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(4)]
  restored = ip.make_iterator(ds)
  restored.set_state(state)
  assert _same([next(restored) for _ in range(4)], expected)
  assert _same([next(ip.make_iterator(ds, start_step=3)) for _ in range(1)], expected[:1])


@pytest.mark.slow   # make test's budget (docs/testing.md)
def test_worker_processes_give_the_same_batches_and_restore(tiny_train):
  ds = ip.train_dataset(tiny_train, global_batch_size=4, seed=0)
  reference = [next(it) for it in [ip.make_iterator(ds)] for _ in range(7)]
  it = ip.make_iterator(ds, worker_count=2)
  first = [next(it) for _ in range(3)]
  state = it.get_state()
  rest = [next(it) for _ in range(4)]
  assert _same(first + rest, reference)
  restored = ip.make_iterator(ds, worker_count=2)
  restored.set_state(state)
  assert _same([next(restored) for _ in range(4)], reference[3:])


def test_missing_dataset_says_what_to_build(tmp_path):
  with pytest.raises(ip.DatasetNotBuiltError, match='tfds build tfds_stillbox --config synth64'):
    ip.open_source('tfds_stillbox/synth64', 'train', str(tmp_path))
  with pytest.raises(ip.DatasetNotBuiltError, match='--manual_dir'):
    ip.open_source('tfds_stillbox/64', 'train', str(tmp_path))
