"""Inference: the pinhole FOV math, infer.py against the training evaluation, every output kind, video round trip,
inputs as people have them, and bad inputs."""

import math
import os
import subprocess
import sys

import imageio.v3 as iio
import jax
import numpy as np
import pytest
from conftest import TEST_XLA_FLAGS
from flax import nnx

import infer
from depthnet_jax.checkpoints import checkpointing, loading
from depthnet_jax.common import atomic, colormaps, geometry
from depthnet_jax.data import input_pipeline
from depthnet_jax.infer import footage
from depthnet_jax.infer import predictor as inference
from depthnet_jax.infer.checkpoint_input import CheckpointInputError
from depthnet_jax.infer.frames import FootageError, read_image
from depthnet_jax.model import losses
from tfds_stillbox.render.scenes import render_scene

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _infer(*args, ok=True):
  result = subprocess.run([sys.executable, os.path.join(REPO, 'infer.py'), *map(str, args)],
                          env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu', XLA_FLAGS=TEST_XLA_FLAGS),
                          capture_output=True, text=True, timeout=600, cwd=REPO)
  if ok:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
  return result


def _run(*args):
  """infer.py in this process, its errors raised: the options of a command line, then the run."""
  return footage.run(infer.checked([str(a) for a in args]))


# --- geometry ---------------------------------------------------------------------------------------------------

def test_still_box_focal_lengths():
  for width in (64, 128, 256, 512):
    assert geometry.focal_length(width, 90) == pytest.approx(width / 2)
  assert geometry.crop_width_for_fov(512, 60) == pytest.approx(512 * math.tan(math.pi * 60 / 360))


@pytest.mark.parametrize('fov,height,width', [(60, 480, 640), (45, 720, 1280), (90, 300, 400), (30.5, 99, 131)])
def test_fov_resize_puts_points_where_the_training_camera_would(fov, height, width):
  train_width = 512
  h2, w2 = geometry.size_for_fov(height, width, fov, train_width, 90)
  assert abs(h2 - height * w2 / width) < 1   # the aspect ratio, up to rounding
  rng = np.random.default_rng(0)
  points = rng.uniform([-1, -1, 2], [1, 1, 50], size=(100, 3))
  # the footage's camera: pixel x (from the centre) = f_footage X / Z
  u = geometry.focal_length(width, fov) * points[:, 0] / points[:, 2]
  # after the resize, coordinates scale by w2 / width; the training camera would see f_train X / Z
  f_train = geometry.focal_length(train_width, 90)
  np.testing.assert_allclose(u * w2 / width, f_train * points[:, 0] / points[:, 2], rtol=0.5 / w2 + 1e-9)
  if fov == 90:
    assert w2 == train_width


def test_wider_fov_than_training_is_refused():
  with pytest.raises(ValueError, match='wider than the network'):
    geometry.size_for_fov(480, 640, 100, 512, 90)


# --- outputs ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def scene_frames(tmp_path_factory):
  folder = tmp_path_factory.mktemp('frames')
  scene = render_scene((3, 0), (56, 40), num_frames=5)
  for i, frame in enumerate(scene.frames):
    iio.imwrite(folder / f'frame_{i:03d}.png', frame)
  return folder, scene


def test_infer_writes_every_output_kind(random_checkpoint, scene_frames, tmp_path):
  folder, _ = scene_frames
  result = _infer('--checkpoint', random_checkpoint, '--input', folder, '--output', tmp_path, '--height', 32,
                  '--width', 48, '--output_depth', '--output_disp', '--output_raw', '--output_video')
  assert '5 frames, 4 pairs (shift 1), network input 48x32 (ONNX Runtime)' in result.stdout   # auto, on a CPU
  assert 'pairs/s' in result.stdout
  stems = [f'frame_{i:03d}' for i in range(1, 5)]   # named after the second frame of each pair
  for stem in stems:
    for kind in ('depth', 'disp'):
      image = iio.imread(tmp_path / f'{stem}_{kind}.png')
      assert image.shape == (40, 56, 3) and image.dtype == np.uint8
    raw = np.load(tmp_path / f'{stem}_depth.npy')
    assert raw.shape == (40, 56) and raw.dtype == np.float32 and np.all(np.isfinite(raw))
  gif = iio.imread(tmp_path / 'depth.gif', index=None)
  assert gif.shape[0] == 4 and gif.shape[1:3] == (40, 112)
  assert not [n for n in os.listdir(tmp_path) if '.tmp' in n]


def test_video_in_video_out(random_checkpoint, scene_frames, tmp_path):
  _, scene = scene_frames
  video = tmp_path / 'clip.mp4'
  iio.imwrite(video, scene.frames, plugin='pyav', codec='libx264', fps=10)
  out = tmp_path / 'out'
  result = _infer('--checkpoint', random_checkpoint, '--input', video, '--output', out, '--frame_shift', 2,
                  '--no_resize', '--output_raw', '--output_video', '--video_format', 'mp4')
  assert '5 frames, 3 pairs (shift 2)' in result.stdout
  assert sorted(n for n in os.listdir(out) if n.endswith('.npy')) == [f'{i:06d}_depth.npy' for i in (2, 3, 4)]
  back = iio.imread(out / 'depth.mp4', plugin='pyav', index=None)
  assert back.shape == (3, 40, 112, 3)


def test_runtimes_agree_on_a_folder_and_a_video(random_checkpoint, scene_frames, tmp_path):
  """infer.py --runtime onnx gives --runtime jax's depths (1e-4 relative) on a folder of frames and on a video."""
  folder, scene = scene_frames
  video = tmp_path / 'clip.mp4'
  iio.imwrite(video, scene.frames, plugin='pyav', codec='libx264', fps=10)
  for source in (folder, video):
    depths = {}
    for runtime in ('jax', 'onnx'):
      out = tmp_path / f'{source.name}-{runtime}'
      _run('--checkpoint', random_checkpoint, '--input', source, '--output', out, '--no_resize', '--output_raw',
           '--runtime', runtime)
      depths[runtime] = np.stack([np.load(out / n) for n in sorted(os.listdir(out)) if n.endswith('.npy')])
    assert depths['jax'].shape == (4, 40, 56)
    error = np.max(np.abs(depths['onnx'] - depths['jax'])) / np.max(np.abs(depths['jax']))
    assert error < 1e-4, (source.name, error)


def test_infer_matches_the_training_evaluation(tiny_run, synth_tiny_dir, tmp_path):
  workdir, _ = tiny_run
  validation = input_pipeline.open_source('tfds_stillbox/synth_tiny', 'validation', synth_tiny_dir)
  record = validation[0]
  folder = tmp_path / 'scene'
  folder.mkdir()
  for i, data in enumerate(record['frames']):   # the stored JPEG bytes, as files
    (folder / f'{i:02d}.jpg').write_bytes(data)
  frames = len(record['frames'])
  pairs = frames - input_pipeline.SHIFT
  # the training code's evaluation of this scene's pairs
  batch = next(iter(input_pipeline.eval_dataset(validation, global_batch_size=pairs)))
  model = checkpointing.load_model(loading.resolve_checkpoint(workdir))
  # jitted: called eagerly the network compiles each of its ~300 operations on its own (10 s)
  graphdef, state = nnx.split(model)
  prediction = np.asarray(jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))(state, batch['image_pair']))
  trained_error = float(losses.depth_metrics(prediction, batch['depth'], batch['mask'])['depth_error'])
  # the predictor on the files, at the network's own output size: the same numbers
  predictor = inference.Predictor.from_checkpoint(workdir)
  images = [read_image(str(folder / f'{i:02d}.jpg')) for i in range(frames)]
  low = predictor.predict_batch(np.stack(images[:pairs]), np.stack(images[input_pipeline.SHIFT:]), None, full=False)
  np.testing.assert_allclose(low, prediction, rtol=1e-4, atol=1e-4)
  # ... so the same depth error as the training evaluation
  infer_error = float(losses.depth_metrics(low, batch['depth'], batch['mask'])['depth_error'])
  assert infer_error == pytest.approx(trained_error, rel=1e-5)
  # infer.py end to end: its .npy files are that prediction, upsampled bilinearly to the input size
  out = tmp_path / 'out'
  _infer('--checkpoint', workdir, '--input', folder, '--output', out, '--frame_shift', input_pipeline.SHIFT,
         '--no_resize', '--output_raw')
  raw = np.stack([np.load(out / f'{i:02d}_depth.npy') for i in range(input_pipeline.SHIFT, frames)])
  upsampled = jax.image.resize(prediction, raw.shape, 'bilinear')
  np.testing.assert_allclose(raw, upsampled, rtol=1e-4, atol=1e-4)


# --- inputs as people have them, and bad ones -------------------------------------------------------------------

def test_gray_rgba_and_16_bit_frames_are_converted(random_checkpoint, tmp_path):
  rng = np.random.default_rng(0)
  gray = rng.integers(0, 255, (24, 32), dtype=np.uint8)
  iio.imwrite(tmp_path / 'a.png', gray)
  iio.imwrite(tmp_path / 'b.png', np.dstack([gray, gray, gray, np.full_like(gray, 128)]))
  iio.imwrite(tmp_path / 'c.png', gray.astype(np.uint16) * 257)
  converted = [read_image(str(tmp_path / n)) for n in ('a.png', 'b.png', 'c.png')]
  for image in converted:
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 1], gray)
  summary = _run('--checkpoint', random_checkpoint, '--input', tmp_path, '--output', tmp_path / 'out', '--no_resize',
                 '--output_raw')
  assert '3 frames, 2 pairs' in summary


def _frames(folder, sizes):
  folder.mkdir(parents=True, exist_ok=True)
  for i, (h, w) in enumerate(sizes):
    iio.imwrite(folder / f'{i}.png', np.zeros((h, w, 3), np.uint8))
  return folder


def test_bad_inputs_name_the_file(random_checkpoint, tmp_path):
  run = ('--checkpoint', random_checkpoint, '--output', tmp_path / 'out', '--no_resize')
  mixed = _frames(tmp_path / 'mixed', [(16, 16), (16, 16), (16, 24)])
  with pytest.raises(FootageError, match=r'2\.png: frame size 24x16 differs'):
    _run('--input', mixed, *run)
  corrupt = _frames(tmp_path / 'corrupt', [(16, 16), (16, 16)])
  (corrupt / '1.png').write_bytes(b'not a png at all')
  with pytest.raises(FootageError, match=r'1\.png: cannot read the image'):
    _run('--input', corrupt, *run)
  few = _frames(tmp_path / 'few', [(16, 16), (16, 16)])
  with pytest.raises(FootageError, match='2 frame.*frame_shift 3 need at least 4'):
    _run('--input', few, '--frame_shift', 3, *run)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FootageError, match='no frames with extensions'):
    _run('--input', tmp_path / 'empty', *run)
  with pytest.raises(FootageError, match='no such folder'):
    _run('--input', tmp_path / 'nowhere', *run)
  with pytest.raises(CheckpointInputError, match='no_ckpt: no such file or directory'):
    _run('--checkpoint', tmp_path / 'no_ckpt', '--input', few, '--output', tmp_path / 'out')
  with pytest.raises(CheckpointInputError, match='neither a depthnet-jax checkpoint'):
    _run('--checkpoint', few, '--input', few, '--output', tmp_path / 'out')
  assert not (tmp_path / 'out').exists()   # every one of them found before anything was written
  result = _infer('--checkpoint', random_checkpoint, '--input', tmp_path / 'empty', '--output', tmp_path / 'o',
                  ok=False)
  assert result.returncode == 1 and 'error:' in result.stderr and 'no frames' in result.stderr


def test_writes_are_atomic(tmp_path, monkeypatch):
  def broken_save(f, array, allow_pickle):
    f.write(b'partial')
    raise OSError('disk full')
  monkeypatch.setattr(np, 'save', broken_save)
  with pytest.raises(OSError):
    atomic.write_npy(str(tmp_path / 'x_depth.npy'), np.zeros((2, 2), np.float32))
  assert os.listdir(tmp_path) == []


def test_colormaps():
  depth = np.array([[0.0, 50.0, 100.0, 250.0]])
  rgb = colormaps.depth_to_rgb(depth)
  assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
  assert rgb[0, 3].tolist() == rgb[0, 2].tolist()           # beyond 100 m: the last colour
  assert rgb[0, 2, 0] == 255 and rgb[0, 2, 2] == 0            # far is red
  disp = colormaps.disparity_to_rgb(np.array([[1.0, 2.0, 4.0]]))
  assert disp[0, 0].tolist() == [255, 255, 255] and disp[0, 2].sum() < disp[0, 1].sum()


def test_pytorch_checkpoint_on_the_fly_and_one_compile_per_shape(tmp_path):
  """Both runtimes give the original's run_inference depths; JAX compiles once per input shape."""
  import torch

  from depthnet_jax.testing import torch_reference
  torch.manual_seed(0)
  reference = torch_reference.randomize(torch_reference.TorchDepthNet(batch_norm=True, depth_activation='elu'), 4)
  path = tmp_path / 'DepthNet_elu_bn_512.pth.tar'
  torch_reference.save(torch_reference.checkpoint_dict(reference), path,
                       legacy=False)
  rng = np.random.default_rng(1)
  frames = rng.integers(0, 256, (3, 24, 40, 3), dtype=np.uint8)
  x = torch.tensor(np.concatenate([frames[0], frames[1]], -1)[None], dtype=torch.float32).permute(0, 3, 1, 2)
  with torch.no_grad():
    expected = torch.nn.functional.interpolate(reference.eval()((x / 255 - 0.5) / 0.2)[:, None], (24, 40),
                                               mode='bilinear', align_corners=False)[0, 0].numpy()
  for runtime in ('jax', 'onnx'):
    predictor = inference.Predictor.from_checkpoint(path, runtime=runtime)
    assert predictor.runtime == runtime
    assert predictor.default_size() == (512, 512)   # the original's inference size, for PyTorch weights
    depth = predictor.predict(frames[0], frames[1])
    assert depth.shape == (24, 40) and depth.dtype == np.float32
    predictor.predict(frames[1], frames[2])
    predictor.predict(frames[0], frames[2], size=(32, 32))
    if runtime == 'jax':
      assert predictor._network._forward._cache_size() == 2      # one compile per input shape
    np.testing.assert_allclose(depth, expected, rtol=1e-4, atol=1e-4)   # as the original's run_inference


@pytest.mark.parametrize('low, high', [((16, 16), (64, 64)), ((17, 12), (67, 45)), ((16, 16), (20, 100)),
                                       ((128, 128), (24, 40)), ((9, 9), (9, 9))])
def test_upsampling_is_jax_image_resize(low, high):
  """Both ways of `predictor.upsample` (OpenCV enlarging, the weight products shrinking) are jax.image.resize's
  bilinear resize (half-pixel centres, antialiased when shrinking), the Predictor's before either runtime."""
  depth = np.random.default_rng(0).uniform(1, 100, (2, *low)).astype(np.float32)
  expected = np.asarray(jax.image.resize(depth, (2, *high), 'bilinear'))
  # OpenCV rounds its weights to float32 at non-integer factors: 1.5e-5 relative at worst here
  np.testing.assert_allclose(inference.upsample(depth, high), expected, rtol=3e-5, atol=1e-5)
