"""`make demo-import`: import a PyTorch DepthNet checkpoint without PyTorch and run it on two frames.

1. makes a DepthNet checkpoint with PyTorch (random weights, elu + BN) as the original wrote the published
   ones: the 2017 train.py's dict (arch 'DepthNet_elu_bn', `best_EPE`, no `module.` prefix) in the legacy
   torch format; the repository ships no weights and nothing is downloaded;
2. converts it with `python -m depthnet_jax.torch_import` into an Orbax checkpoint;
3. renders two frames of a camera translating sideways past a near and a far textured plane;
4. runs the imported model on them (`infer.predictor.Predictor`, as infer.py does), checks it against PyTorch, and
   writes the frames and the depth map.

The weights are random, so the depth map shows the network running, not a learned depth (`make demo` trains
one). `--smoke`: 32x32 frames, outputs in a new temporary folder unless `--out` is given (checks that it runs).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from depthnet_jax.common import cli


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """Smooth random RGB texture in [0, 255]."""
  noise = rng.uniform(0, 1, (h // 8 + 2, w // 8 + 2, 3))
  big = np.kron(noise, np.ones((8, 8, 1)))[:h, :w]
  return (255 * (0.25 + 0.5 * big + 0.25 * rng.uniform(0, 1, (h, w, 3)))).clip(0, 255)


def render_pair(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Two uint8 frames: the camera moves right by 0.3 m; a plane at 4 m in front of a wall at 40 m.

  With the Still Box focal length (size / 2 px, 90 degrees), a point at depth z shifts by f * 0.3 / z px.
  """
  rng = np.random.default_rng(seed)
  f = size / 2
  far, near = _texture(rng, size, size + 64), _texture(rng, size, size + 64)
  frames = []
  for t in (0.0, 0.3):
    far_shift, near_shift = int(round(f * t / 40)), int(round(f * t / 4))
    img = far[:, 32 + far_shift:32 + far_shift + size].copy()
    lo, hi = size // 4, 3 * size // 4
    img[lo:hi, lo:hi] = near[lo:hi, 32 + lo + near_shift:32 + hi + near_shift]
    frames.append(img.astype(np.uint8))
  return frames[0], frames[1]


def work(args) -> int:
  size = 32 if args.smoke else cli.check_int('--size', args.size, 8)
  out = args.out or (tempfile.mkdtemp(prefix='depthnet-import-demo-') if args.smoke else 'demo_out')
  cli.check_writable_dir(out, '--out')
  os.makedirs(out, exist_ok=True)
  started = time.time()

  import torch

  from depthnet_jax.testing import torch_reference  # the PyTorch reference DepthNet of the tests
  ckpt_path = os.path.join(out, 'DepthNet_random_elu_bn.pth.tar')
  print(f'[1/4] PyTorch: a randomly initialised DepthNet (elu + BN) -> {ckpt_path} (arch DepthNet_elu_bn, the '
        'published weights\' layout and legacy torch format)')
  torch.manual_seed(0)
  reference = torch_reference.randomize(torch_reference.TorchDepthNet(batch_norm=True, depth_activation='elu'))
  torch_reference.save(torch_reference.checkpoint_dict_2017(reference), ckpt_path, legacy=True)

  imported = os.path.join(out, 'imported')
  command = [sys.executable, '-m', 'depthnet_jax.torch_import', ckpt_path, imported, '--overwrite']
  print(f'[2/4] python {" ".join(command[1:])}', flush=True)
  subprocess.run(command, check=True)   # a process of its own: the import runs without PyTorch

  import imageio.v3 as iio

  from depthnet_jax.common.conventions import normalize
  from depthnet_jax.infer import predictor
  frame1, frame2 = render_pair(size)
  print(f'[3/4] two {size}x{size} frames of a camera translating 0.3 m past a plane at 4 m and a wall '
        'at 40 m')
  iio.imwrite(os.path.join(out, 'frames.png'), np.concatenate([frame1, frame2], axis=1))

  # As infer.py runs it: the network's own output (1/4 of the input size), the frames normalised as the original
  depth = predictor.Predictor.from_checkpoint(imported).predict_batch(frame1[None], frame2[None], full=False)[0]
  pair = normalize(np.concatenate([frame1, frame2], axis=-1))   # (x / 255 - 0.5) / 0.2, the original's
  reference.eval()
  with torch.no_grad():
    expected = reference(torch.from_numpy(pair.transpose(2, 0, 1)[None].copy()))[0].numpy()
  rel = float(np.abs(depth - expected).max() / np.abs(expected).max())
  print(f'[4/4] depth {depth.shape[0]}x{depth.shape[1]} (1/4 of the input), {depth.min():.3f} .. '
        f'{depth.max():.3f} m; max |JAX - PyTorch| / max |PyTorch| = {rel:.2e}')
  grey = (255 * (depth - depth.min()) / max(float(np.ptp(depth)), 1e-6)).astype(np.uint8)
  iio.imwrite(os.path.join(out, 'depth.png'), np.kron(grey, np.ones((4, 4), np.uint8)))
  print(f'wrote {out}/frames.png and {out}/depth.png (random weights: the map shows the network '
        f'running, not learned depth) in {time.time() - started:.1f} s')
  if rel > 1e-5:
    cli.report(f'the imported model differs from PyTorch: max |JAX - PyTorch| / max |PyTorch| = {rel:.2e}; '
               'expected at most 1e-5')
    return 1
  return 0


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--out', default=None, help='output directory (default demo_out)')
  p.add_argument('--size', type=int, default=128, help='frame size in pixels, >= 8')
  p.add_argument('--smoke', action='store_true', help='32x32 frames, a temporary --out: checks that it runs')
  return p


def main(argv: list[str] | None = None) -> int:
  return cli.main(parser(), work, argv)


if __name__ == '__main__':
  sys.exit(main())
