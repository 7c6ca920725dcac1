"""Where the time of a DepthNet forward goes, block by block: our jitted blocks against the PyTorch reference's.

    .venv/bin/python benchmarks/layer_profile.py [--batch 32 --size 64 --repeats 10] [--smoke]

Each encoder block (3x3 conv + BN + ReLU) and decoder block (4x4 stride-2 transposed conv, 3x3 conv, BN, ReLU) is
timed alone, eval mode, on its input shape of a `--size` input, with the same block of the PyTorch reference on
the same CPU in the same run. The slow rows show what a performance push on XLA:CPU should look at. Our weights are
drawn by NumPy (`testing.random_models`: no initialiser to compile); the times do not depend on them. `--smoke`:
batch 1, 16x16, one repeat (checks that it runs, measures nothing).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from depthnet_jax.common import cli
from depthnet_jax.testing.random_models import random_depthnet


def _ms(fn, repeats: int) -> float:
  fn()
  start = time.perf_counter()
  for _ in range(repeats):
    fn()
  return (time.perf_counter() - start) / repeats * 1000


@nnx.jit
def _block_forward(block, x):
  return block(x)


def _ours(block, x) -> None:
  jax.block_until_ready(_block_forward(block, x))


def _theirs(block, x) -> None:
  import torch
  with torch.no_grad():
    block(x)


def _shapes(batch: int, size: int) -> list[tuple[str, tuple[int, ...]]]:
  """(block name, NHWC input shape) of every block for a `size` x `size` input."""
  from depthnet_jax.testing import torch_reference
  shapes, h = [], size
  for name, cin, _, stride in torch_reference.ENCODER:
    shapes.append((name, (batch, h, h, cin)))
    h = -(-h // stride)
  for k, cin in ((5, 512), (4, 513), (3, 385), (2, 193)):
    shapes.append((f'deconv{k}', (batch, -(-size // 2 ** (k + 1)), -(-size // 2 ** (k + 1)), cin)))
  return shapes


def work(args) -> int:
  batch, size, repeats = (1, 16, 1) if args.smoke else (
      cli.check_int('--batch', args.batch, 1), cli.check_int('--size', args.size, 1),
      cli.check_int('--repeats', args.repeats, 1))
  import torch

  from depthnet_jax.testing import torch_reference
  torch.set_num_threads(os.cpu_count())
  ours = random_depthnet()
  ours.eval()
  theirs = torch_reference.TorchDepthNet(batch_norm=True, depth_activation='elu').eval()
  print(f'batch {batch}, {size}x{size} input, eval mode, {os.cpu_count()} cores, '
        f'torch {torch.get_num_threads()} threads\n')
  print('| block | input (NHWC) | depthnet-jax ms | PyTorch ms | ours / torch |')
  print('|---|---|---|---|---|')
  total = [0.0, 0.0]
  for name, shape in _shapes(batch, size):
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    mine = _ms(functools.partial(_ours, getattr(ours, name), x), repeats)
    xt = torch.tensor(np.asarray(x)).permute(0, 3, 1, 2).contiguous()
    ref = _ms(functools.partial(_theirs, getattr(theirs, name), xt), repeats)
    total[0] += mine
    total[1] += ref
    print(f'| {name} | {"x".join(map(str, shape))} | {mine:.2f} | {ref:.2f} | {mine / ref:.1f}x |', flush=True)
  print(f'| all blocks | | {total[0]:.2f} | {total[1]:.2f} | {total[0] / total[1]:.1f}x |')
  return 0


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--batch', type=int, default=32, help='pairs per forward, >= 1')
  p.add_argument('--size', type=int, default=64, help='the square input size the block shapes come from, >= 1')
  p.add_argument('--repeats', type=int, default=10, help='timed calls per block after one warm-up, >= 1')
  p.add_argument('--smoke', action='store_true', help='batch 1, 16x16, one repeat: checks that it runs')
  return p


def main(argv: list[str] | None = None) -> int:
  return cli.main(parser(), work, argv)


if __name__ == '__main__':
  sys.exit(main())
