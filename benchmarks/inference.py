"""Inference throughput: pairs/s of `Predictor.predict_batch` at 64, 256 and 512 (batch 1 and 8), beside the
PyTorch reference model's eval forward on the same CPU in the same run.

    .venv/bin/python benchmarks/inference.py [--sizes 64 256 512 --batches 1 8 --seconds 5]

Ours includes what infer.py does per batch: normalisation, the network, the bilinear upsampling to the input
size and the copy back to the host (frames are given at the network size, so no resize). Torch: the network
only (eval mode, `torch.no_grad`), so the ratio flatters torch slightly. Compile time is excluded and printed.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from flax import nnx

from depthnet_jax.common.conventions import normalize
from depthnet_jax.infer import predictor as inference
from depthnet_jax.model import models


def _rate(fn, batch: int, seconds: float) -> float:
  fn()
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds or count < 3:
    fn()
    count += 1
  return count * batch / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--sizes', type=int, nargs='+', default=[64, 256, 512])
  parser.add_argument('--batches', type=int, nargs='+', default=[1, 8])
  parser.add_argument('--seconds', type=float, default=5.0, help='timed per setting, after one warm-up call')
  args = parser.parse_args()
  import torch

  from depthnet_jax.testing import torch_reference
  torch.set_num_threads(os.cpu_count())
  reference = torch_reference.TorchDepthNet(batch_norm=True, depth_activation='elu').eval()
  predictor = inference.Predictor(models.DepthNet(rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  rows = []
  for size in args.sizes:
    for batch in args.batches:
      first, second = (rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8) for _ in range(2))
      start = time.perf_counter()
      predictor.predict_batch(first, second)
      compile_s = time.perf_counter() - start
      ours = _rate(lambda: predictor.predict_batch(first, second), batch, args.seconds)
      x = torch.from_numpy(normalize(np.concatenate([first, second], -1))).permute(0, 3, 1, 2)

      def torch_forward():
        with torch.no_grad():
          reference(x)

      theirs = _rate(torch_forward, batch, args.seconds)
      rows.append((size, batch, ours, theirs, compile_s))
  print(f'CPU: {os.cpu_count()} cores; BN + elu; torch {torch.__version__} with {torch.get_num_threads()} threads\n')
  print('| input | batch | depthnet-jax pairs/s | PyTorch pairs/s | ours / torch | first call (compile) s |')
  print('|---|---|---|---|---|---|')
  for size, batch, ours, theirs, compile_s in rows:
    print(f'| {size}x{size} | {batch} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f} | {compile_s:.1f} |')


if __name__ == '__main__':
  main()
