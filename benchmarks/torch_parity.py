"""Parity and forward speed of the imported DepthNet against the PyTorch reference, in one run.

For each option set and input size: max |ours - torch| / max |torch| of the eval output and of the worst of
the five train outputs (weights randomised beyond their initialisation, imported from a checkpoint saved as
the original's train.py saves it, in the legacy torch format; depthnet_jax/testing/parity.py, as the tests),
then the eval forward time of both at the same batch on this machine's CPU, and their ratio.

    .venv/bin/python benchmarks/torch_parity.py [--batch 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import jax
import torch

from depthnet_jax.testing.parity import OPTIONS, Imported, relative_error

SIZES = [(64, 64), (128, 128), (37, 53), (256, 256)]


def _time(fn, repeats):
  fn()  # warm-up (compiles ours)
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best * 1e3


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  print(f'jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__}, '
        f'{torch.get_num_threads()} torch threads; batch {args.batch}, best of {args.repeats}')
  header = (f'{"options":<18} {"size":>8} {"eval rel err":>13} {"train rel err":>14} {"ours ms":>9} '
            f'{"torch ms":>9} {"ours/torch":>10}')
  print(header)
  print('-' * len(header))
  with tempfile.TemporaryDirectory() as tmp:
    for name in OPTIONS:
      (pathlib.Path(tmp) / name).mkdir()
      imported = Imported(name, pathlib.Path(tmp) / name)
      for size in SIZES:
        x = torch.randn(args.batch, 6, *size, generator=torch.Generator().manual_seed(size[0]))
        eval_err = relative_error(imported.forward(x, train=False), imported.torch_forward(x, train=False))
        outs, refs = imported.forward(x, train=True), imported.torch_forward(x, train=True)
        train_err = max(relative_error(o, r) for o, r in zip(outs, refs))
        ours = _time(lambda: jax.block_until_ready(imported.forward(x, train=False)), args.repeats)
        imported.torch_model.eval()
        with torch.no_grad():
          theirs = _time(lambda: imported.torch_model(x), args.repeats)
        print(f'{name:<18} {size[0]:>3}x{size[1]:<4} {eval_err:>13.2e} {train_err:>14.2e} {ours:>9.1f} '
              f'{theirs:>9.1f} {ours / theirs:>10.2f}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
