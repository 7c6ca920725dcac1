"""`make demo-import`: import a PyTorch DepthNet checkpoint without PyTorch and run it on two frames.

1. makes a DepthNet checkpoint with PyTorch (random weights, elu + BN) as the original wrote the published
   ones: the 2017 train.py's dict (arch 'DepthNet_elu_bn', `best_EPE`, no `module.` prefix) in the legacy
   torch format; the repository ships no weights and nothing is downloaded;
2. converts it with `python -m depthnet_jax.torch_import` into an Orbax checkpoint;
3. renders two frames of a camera translating sideways past a near and a far textured plane;
4. runs the imported model on them, checks it against PyTorch, and writes the frames and the depth map.

The weights are random, so the depth map shows the network running, not a learned depth (`make demo` trains
one).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np


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


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default='demo_out', help='output directory')
  parser.add_argument('--size', type=int, default=128, help='frame size in pixels')
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  started = time.time()

  import torch

  from depthnet_jax.testing import torch_reference  # the PyTorch reference DepthNet of the tests
  ckpt_path = os.path.join(args.out, 'DepthNet_random_elu_bn.pth.tar')
  print(f'[1/4] PyTorch: a randomly initialised DepthNet (elu + BN) -> {ckpt_path} (arch DepthNet_elu_bn, the '
        'published weights\' layout and legacy torch format)')
  torch.manual_seed(0)
  reference = torch_reference.randomize(torch_reference.TorchDepthNet(batch_norm=True, depth_activation='elu'))
  torch_reference.save(torch_reference.checkpoint_dict_2017(reference), ckpt_path, legacy=True)

  imported = os.path.join(args.out, 'imported')
  command = [sys.executable, '-m', 'depthnet_jax.torch_import', ckpt_path, imported, '--overwrite']
  print(f'[2/4] python {" ".join(command[1:])}')
  subprocess.run(command, check=True)

  import imageio.v3 as iio
  import jax.numpy as jnp

  from depthnet_jax.checkpoints import checkpointing
  frame1, frame2 = render_pair(args.size)
  print(f'[3/4] two {args.size}x{args.size} frames of a camera translating 0.3 m past a plane at 4 m and a wall '
        'at 40 m')
  iio.imwrite(os.path.join(args.out, 'frames.png'), np.concatenate([frame1, frame2], axis=1))

  model = checkpointing.load_model(imported)
  pair = np.concatenate([frame1, frame2], axis=-1).astype(np.float32)
  pair = (pair / 255.0 - 0.5) / 0.2  # the original's normalisation
  depth = np.asarray(model(jnp.asarray(pair[None])))[0]
  reference.eval()
  with torch.no_grad():
    expected = reference(torch.from_numpy(pair.transpose(2, 0, 1)[None].copy()))[0].numpy()
  rel = float(np.abs(depth - expected).max() / np.abs(expected).max())
  print(f'[4/4] depth {depth.shape[0]}x{depth.shape[1]} (1/4 of the input), {depth.min():.3f} .. '
        f'{depth.max():.3f} m; max |JAX - PyTorch| / max |PyTorch| = {rel:.2e}')
  grey = (255 * (depth - depth.min()) / max(float(np.ptp(depth)), 1e-6)).astype(np.uint8)
  iio.imwrite(os.path.join(args.out, 'depth.png'), np.kron(grey, np.ones((4, 4), np.uint8)))
  print(f'wrote {args.out}/frames.png and {args.out}/depth.png (random weights: the map shows the network '
        f'running, not learned depth) in {time.time() - started:.1f} s')
  return 0 if rel <= 1e-5 else 1


if __name__ == '__main__':
  sys.exit(main())
