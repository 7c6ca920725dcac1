"""Where the time of a DepthNet forward goes, block by block: our jitted blocks against the PyTorch reference's.

    .venv/bin/python benchmarks/layer_profile.py [--batch 32 --size 64]

Each encoder block (3x3 conv + BN + ReLU) and decoder block (4x4 stride-2 transposed conv, 3x3 conv, BN, ReLU) is
timed alone, eval mode, on its input shape of a `--size` input, with the same block of the PyTorch reference on
the same CPU in the same run. The slow rows show what a performance push on XLA:CPU should look at.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from depthnet_jax.model import models


def _ms(fn, repeats: int = 10) -> float:
  fn()
  start = time.perf_counter()
  for _ in range(repeats):
    fn()
  return (time.perf_counter() - start) / repeats * 1000


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--size', type=int, default=64)
  args = parser.parse_args()
  import torch

  from depthnet_jax.testing import torch_reference
  torch.set_num_threads(os.cpu_count())
  ours = models.DepthNet(rngs=nnx.Rngs(0))
  ours.eval()
  theirs = torch_reference.TorchDepthNet(batch_norm=True, depth_activation='elu').eval()
  shapes, h = [], args.size
  for name, cin, _, stride in torch_reference.ENCODER:
    shapes.append((name, (args.batch, h, h, cin)))
    h = -(-h // stride)
  for k, cin in ((5, 512), (4, 513), (3, 385), (2, 193)):
    shapes.append((f'deconv{k}', (args.batch, -(-args.size // 2 ** (k + 1)), -(-args.size // 2 ** (k + 1)), cin)))
  print(f'batch {args.batch}, {args.size}x{args.size} input, eval mode, {os.cpu_count()} cores, '
        f'torch {torch.get_num_threads()} threads\n')
  print('| block | input (NHWC) | depthnet-jax ms | PyTorch ms | ours / torch |')
  print('|---|---|---|---|---|')
  total = [0.0, 0.0]
  for name, shape in shapes:
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    block = getattr(ours, name)
    f = nnx.jit(lambda block, x: block(x))
    mine = _ms(lambda: jax.block_until_ready(f(block, x)))
    xt = torch.tensor(np.asarray(x)).permute(0, 3, 1, 2).contiguous()
    tblock = getattr(theirs, name)

    def run_torch():
      with torch.no_grad():
        tblock(xt)

    ref = _ms(run_torch)
    total[0] += mine
    total[1] += ref
    print(f'| {name} | {"x".join(map(str, shape))} | {mine:.2f} | {ref:.2f} | {mine / ref:.1f}x |')
  print(f'| all blocks | | {total[0]:.2f} | {total[1]:.2f} | {total[0] / total[1]:.1f}x |')


if __name__ == '__main__':
  main()
