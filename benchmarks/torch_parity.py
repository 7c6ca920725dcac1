"""Parity and forward speed of the imported DepthNet against the PyTorch reference, in one run.

For each option set and input size: max |ours - torch| / max |torch| of the eval output and of the worst of
the five train outputs (weights randomised beyond their initialisation, imported from a checkpoint saved as
the original's train.py saves it, in the legacy torch format; depthnet_jax/testing/parity.py, as the tests),
then the eval forward time of both at the same batch on this machine's CPU, and their ratio.

    .venv/bin/python benchmarks/torch_parity.py [--batch 8] [--repeats 5] [--options bn_elu plain ...]
        [--sizes 64x64 37x53 ...] [--smoke]

`--smoke`: bn_elu at 64x64, batch 2 (the shapes of tests/test_parity.py), one repeat (checks that it runs).
"""

from __future__ import annotations

import functools
import pathlib
import re
import sys
import tempfile
import time

from depthnet_jax.common import cli

SIZES = ['64x64', '128x128', '37x53', '256x256']


def _time(fn, repeats):
  fn()  # warm-up (compiles ours)
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best * 1e3


def _size(text: str) -> tuple[int, int]:
  match = re.fullmatch(r'(\d+)x(\d+)', text)
  if not match or min(int(match.group(1)), int(match.group(2))) < 1:
    raise cli.UserError(f'--sizes {text!r}: expected HxW, e.g. 64x64 or 37x53')
  return int(match.group(1)), int(match.group(2))


def _ours_eval(imported, x) -> None:
  import jax
  jax.block_until_ready(imported.forward(x, train=False))


def _theirs_eval(imported, x) -> None:
  import torch
  imported.torch_model.eval()
  with torch.no_grad():
    imported.torch_model(x)


def _row(name: str, imported, size: tuple[int, int], batch: int, repeats: int) -> str:
  """The errors of both modes and the eval forward times of both sides on one random batch."""
  import torch

  from depthnet_jax.testing.parity import relative_error
  x = torch.randn(batch, 6, *size, generator=torch.Generator().manual_seed(size[0]))
  eval_err = relative_error(imported.forward(x, train=False), imported.torch_forward(x, train=False))
  outs, refs = imported.forward(x, train=True), imported.torch_forward(x, train=True)
  train_err = max(relative_error(o, r) for o, r in zip(outs, refs))
  ours = _time(functools.partial(_ours_eval, imported, x), repeats)
  theirs = _time(functools.partial(_theirs_eval, imported, x), repeats)
  return (f'{name:<18} {size[0]:>3}x{size[1]:<4} {eval_err:>13.2e} {train_err:>14.2e} {ours:>9.1f} '
          f'{theirs:>9.1f} {ours / theirs:>10.2f}')


def work(args) -> int:
  from depthnet_jax.testing.parity import OPTIONS
  batch, repeats = (2, 1) if args.smoke else (cli.check_int('--batch', args.batch, 1),
                                              cli.check_int('--repeats', args.repeats, 1))
  names = ['bn_elu'] if args.smoke else [cli.check_choice('--options', n, OPTIONS) for n in args.options or OPTIONS]
  sizes = [(64, 64)] if args.smoke else [_size(text) for text in args.sizes]
  import jax
  import torch

  from depthnet_jax.testing.parity import Imported
  print(f'jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__}, '
        f'{torch.get_num_threads()} torch threads; batch {batch}, best of {repeats}')
  header = (f'{"options":<18} {"size":>8} {"eval rel err":>13} {"train rel err":>14} {"ours ms":>9} '
            f'{"torch ms":>9} {"ours/torch":>10}')
  print(header)
  print('-' * len(header))
  with tempfile.TemporaryDirectory() as tmp:
    for name in names:
      (pathlib.Path(tmp) / name).mkdir()
      imported = Imported(name, pathlib.Path(tmp) / name)
      for size in sizes:
        print(_row(name, imported, size, batch, repeats), flush=True)
  return 0


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--batch', type=int, default=8, help='pairs per forward, >= 1')
  p.add_argument('--repeats', type=int, default=5, help='timed forwards per side (best of), >= 1')
  p.add_argument('--options', nargs='+', default=None, help='option sets of depthnet_jax/testing/parity.py '
                 '(default: all)')
  p.add_argument('--sizes', nargs='+', default=SIZES, help=f'HxW input sizes (default: {" ".join(SIZES)})')
  p.add_argument('--smoke', action='store_true', help='bn_elu, 64x64, batch 2, one repeat: checks that it runs')
  return p


def main(argv: list[str] | None = None) -> int:
  return cli.main(parser(), work, argv)


if __name__ == '__main__':
  sys.exit(main())
