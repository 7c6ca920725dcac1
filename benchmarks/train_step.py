"""Milliseconds per training step: our jitted step against the PyTorch reference with torch's SGD, same CPU, same run.

    .venv/bin/python benchmarks/train_step.py [--shapes 32x64 8x256 --impls xla patches --bf16 32x64 --steps 10]
        [--smoke]

Each shape `BxS` (batch B of SxS pairs, BN + elu) is a whole step on both sides: forward in train mode (5 scales),
multiscale L1 loss against the area-downsampled target, backward, SGD(momentum 0.9, dampening 0.9, weight decay
4e-4) update. Ours is timed once per convolution implementation (`--impls`: XLA's convolution and patches +
matrix product; 'auto' picks patches on CPU) and in bfloat16 compute for the shapes of `--bf16`; PyTorch once per
shape, in a child process of its own (no JAX runtime beside it) started before and after ours; each side's median
of `--steps` steps after `--warmup` (2) untimed ones. The FLOPs of our step come from XLA's cost analysis (of the
XLA-conv step: the useful work); the machine's peak is estimated from the CPU flags and clock (printed) unless
`--peak_gflops` is given. The XLA flags in force and the CPU's vector extensions are printed with the table. Our
weights are drawn by NumPy (`testing.random_models`: no initialiser to compile); a step's cost does not depend on
them. Our step is benchmarks/profile_step.py's `compiled_step`, the program that script profiles. `--smoke`: one
shape 2x16, patches, float32, one timed step and no warm-up, PyTorch once (checks that it runs, measures nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

from profile_step import compiled_step  # benchmarks/profile_step.py, beside this file: the same program

from depthnet_jax.common import cli

WEIGHTS = (0.32, 0.08, 0.02, 0.01, 0.005)


def _peak_gflops() -> tuple[float, str]:
  """FP32 peak of this machine: cores x clock x FLOPs/cycle (from the vector extensions), with the assumption."""
  flags = open('/proc/cpuinfo').read()
  per_cycle = 64 if ' avx512f' in flags else 32 if (' avx2' in flags and ' fma' in flags) else 16
  mhz = None
  try:
    out = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
    match = re.search(r'CPU max MHz:\s*([\d.]+)', out)
    mhz = float(match.group(1)) if match else None
  except OSError:
    pass
  if mhz is None:
    mhz = float(re.search(r'cpu MHz\s*:\s*([\d.]+)', flags).group(1))
  cores = os.cpu_count()
  peak = cores * mhz / 1000 * per_cycle
  return peak, (f'{cores} cores x {mhz / 1000:.2f} GHz x {per_cycle} FP32 FLOP/cycle '
                f'({"AVX-512" if per_cycle == 64 else "AVX2+FMA" if per_cycle == 32 else "SSE"}, 2 FMA units assumed)')


def _time(fn, steps: int) -> list[float]:
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append((time.perf_counter() - start) * 1000)
  return times


def _isa() -> str:
  flags = set(open('/proc/cpuinfo').read().split())
  found = [f for f in ('avx512f', 'avx512_bf16', 'amx_bf16', 'avx2', 'fma') if f in flags]
  return ' '.join(found) or 'none of avx512f/avx2/fma'


def _ours(batch: int, size: int, steps: int, warmup: int, conv_impl: str, compute_dtype: str):
  """(ms of each timed step, compile seconds, FLOPs of a step) of our jitted step, after `warmup` steps."""
  import jax
  compiled, state, data, compile_s = compiled_step(batch, size, conv_impl, compute_dtype)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get('flops', float('nan')))
  holder = [state]

  def run():
    holder[0], _, _ = compiled(holder[0], data)
    jax.block_until_ready(holder[0].params)

  for _ in range(warmup):
    run()
  return _time(run, steps), compile_s, flops


def _torch(batch: int, size: int, steps: int, warmup: int, data):
  import torch
  import torch.nn.functional as F

  from depthnet_jax.testing import torch_reference
  torch.set_num_threads(os.cpu_count())
  model = torch_reference.TorchDepthNet(batch_norm=True, depth_activation='elu')
  model.train()
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, dampening=0.9, weight_decay=4e-4)
  x = torch.tensor(data[0]).permute(0, 3, 1, 2).contiguous()
  target = torch.tensor(data[1])[:, None]

  def run():
    opt.zero_grad()
    outputs = model(x)
    loss = sum(w * (o - F.adaptive_avg_pool2d(target, o.shape[-2:])).abs().mean() for w, o in zip(WEIGHTS, outputs))
    loss.backward()
    opt.step()

  for _ in range(warmup):
    run()
  return _time(run, steps), torch.get_num_threads()


def _torch_in_child(batch: int, size: int, steps: int, warmup: int) -> tuple[list[float], int]:
  """`_torch` in a process of its own (this script with --torch_child): no JAX thread pool beside it."""
  out = subprocess.run([sys.executable, __file__, '--torch_child', f'{batch}x{size}', '--steps', str(steps),
                        '--warmup', str(warmup)], capture_output=True, text=True, check=True).stdout
  result = json.loads(out.strip().splitlines()[-1])
  return result['times'], result['threads']


def _data(batch: int, size: int):
  """The step's random batch (as profile_step.compiled_step draws it): image pairs and depths, float32 NumPy."""
  import numpy as np
  rng = np.random.default_rng(0)
  return (rng.normal(size=(batch, size, size, 6)).astype(np.float32),
          rng.uniform(1, 100, size=(batch, size, size)).astype(np.float32))


def _shape(text: str) -> tuple[int, int]:
  """'BxS' -> (B, S); anything else is the user's error, naming the flag."""
  match = re.fullmatch(r'(\d+)x(\d+)', text.lower())
  if not match or int(match.group(1)) < 2 or int(match.group(2)) < 1:
    raise cli.UserError(f'--shapes {text!r}: expected BxS, a batch B >= 2 (BatchNorm) of SxS pairs, e.g. 32x64')
  return int(match.group(1)), int(match.group(2))


def _table(batch: int, size: int, runs: list[tuple[str, str]], steps: int, warmup: int,
           torch_runs: int) -> tuple[list, float]:
  """(name, impl, dtype, median ms, compile s) of our step per (impl, dtype) and of PyTorch's, and the FLOPs of our
  XLA-conv step (the first run's if there is none). PyTorch runs in a child before ours and, with `torch_runs` 2,
  after them too (the same machine state)."""
  theirs, threads = _torch_in_child(batch, size, steps, warmup)
  results, useful_flops = [], None
  for impl, dtype in runs:
    times, compile_s, flops = _ours(batch, size, steps, warmup, impl, dtype)
    if useful_flops is None or (impl == 'xla' and dtype == 'float32'):
      useful_flops = flops
    results.append(('depthnet-jax (jit)', impl, dtype, statistics.median(times), compile_s))
  if torch_runs > 1:
    theirs += _torch_in_child(batch, size, steps, warmup)[0]
  results.append((f'PyTorch ({threads} threads)', 'oneDNN', 'float32', statistics.median(theirs), float('nan')))
  return results, useful_flops


def work(args) -> int:
  steps, warmup = (1, 0) if args.smoke else (cli.check_int('--steps', args.steps, 1),
                                              cli.check_int('--warmup', args.warmup, 0))
  if args.torch_child:
    batch, size = _shape(args.torch_child)
    times, threads = _torch(batch, size, steps, warmup, _data(batch, size))
    print(json.dumps({'times': times, 'threads': threads}))
    return 0
  shapes, impls, bf16 = (['2x16'], ['patches'], []) if args.smoke else (args.shapes, args.impls, args.bf16)
  for text in shapes + bf16:
    _shape(text)
  peak, assumption = _peak_gflops()
  if args.peak_gflops is not None:
    peak, assumption = cli.check_float('--peak_gflops', args.peak_gflops, 0, low_open=True), 'given with --peak_gflops'
  import importlib.metadata

  import jax

  from depthnet_jax.model import conv
  torch_version = importlib.metadata.version('torch')   # torch itself runs in the child processes only
  print(f'jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} cores), torch {torch_version}; '
        f'BN + elu, SGD step, median of {steps} steps')
  print(f'CPU: {_isa()}; XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}; conv_impl auto = '
        f'{conv.resolve_impl("auto")}')
  print(f'peak: {peak:.0f} GFLOP/s = {assumption}\n')
  print('| shape | step | conv | dtype | median ms | images/s | GFLOP/s | of peak | compile s | vs torch |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  for text in shapes:
    batch, size = _shape(text)
    runs = [(impl, 'float32') for impl in impls] + ([('auto', 'bfloat16')] if text in bf16 else [])
    rows, useful_flops = _table(batch, size, runs, steps, warmup, torch_runs=1 if args.smoke else 2)
    torch_median = rows[-1][3]
    for name, impl, dtype, median, compile_s in rows:
      gflops = useful_flops / 1e9 / (median / 1000)
      shown_impl = f'{impl} ({conv.resolve_impl(impl)})' if impl == 'auto' else impl
      print(f'| {batch}x{size}x{size} | {name} | {shown_impl} | {dtype} | {median:.1f} | {batch / median * 1000:.1f} | '
            f'{gflops:.1f} | {gflops / peak:.1%} | {compile_s:.1f} | {median / torch_median:.2f}x |', flush=True)
  print('\nGFLOP/s of every row use the FLOP count of our XLA-conv step (the same computation); "vs torch" is the '
        'time ratio, lower is faster.')
  return 0


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--shapes', nargs='+', default=['32x64', '8x256'], help='BxS: batch B of SxS pairs')
  p.add_argument('--impls', nargs='+', default=['xla', 'patches'], choices=['xla', 'patches', 'auto'])
  p.add_argument('--bf16', nargs='*', default=['32x64'], help='shapes also timed in bfloat16 (auto conv)')
  p.add_argument('--steps', type=int, default=10, help='timed steps per side, >= 1')
  p.add_argument('--warmup', type=int, default=2, help='untimed steps per side before the timed ones, >= 0')
  p.add_argument('--peak_gflops', type=float, default=None, help='override the estimated FP32 peak')
  p.add_argument('--smoke', action='store_true', help='2x16, patches, one step, no warm-up: checks that it runs')
  p.add_argument('--torch_child', default=None, help=argparse.SUPPRESS)
  return p


def main(argv: list[str] | None = None) -> int:
  return cli.main(parser(), work, argv)


if __name__ == '__main__':
  sys.exit(main())
