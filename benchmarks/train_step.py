"""Milliseconds per training step: our jitted step against the PyTorch reference with torch's SGD, same CPU, same run.

    .venv/bin/python benchmarks/train_step.py [--shapes 32x64 8x256 --impls xla patches --bf16 32x64 --steps 10]

Each shape `BxS` (batch B of SxS pairs, BN + elu) is a whole step on both sides: forward in train mode (5 scales),
multiscale L1 loss against the area-downsampled target, backward, SGD(momentum 0.9, dampening 0.9, weight decay
4e-4) update. Ours is timed once per convolution implementation (`--impls`: XLA's convolution and patches +
matrix product; 'auto' picks patches on CPU) and in bfloat16 compute for the shapes of `--bf16`; PyTorch once per
shape, in a child process of its own (no JAX runtime beside it) started before and after ours; each side's median
of `--steps` steps after 2 warm-ups. The
FLOPs of our step come from XLA's cost analysis (of the XLA-conv step: the useful work); the machine's peak is
estimated from the CPU flags and clock (printed) unless `--peak_gflops` is given. The XLA flags in force and the
CPU's vector extensions are printed with the table.
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

import jax
import jax.numpy as jnp
import numpy as np

from depthnet_jax.checkpoints.train_state import TrainState
from depthnet_jax.model import conv
from depthnet_jax.testing import config_files
from depthnet_jax.train import optim
from depthnet_jax.train import trainer as train_lib

# configs/ is not installed: configs/default.py is loaded by path, from the repository this script is in.
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', 'default.py')

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


def _ours(batch: int, size: int, steps: int, data, conv_impl: str, compute_dtype: str):
  config = config_files.get_config(DEFAULT_CONFIG)
  config.lr_schedule = 'constant'
  config.conv_impl, config.compute_dtype = conv_impl, compute_dtype
  model = train_lib.create_model(config)
  train_def, _, params, stats = train_lib.split_model(model)
  schedule = optim.make_schedule(config, 1)
  tx = optim.create_optimizer('sgd', schedule)
  state = TrainState(params=params, batch_stats=stats, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32))
  state = jax.device_put(state)
  batch_arrays = {'image_pair': jnp.asarray(data[0]), 'depth': jnp.asarray(data[1])}
  step_fn = jax.jit(train_lib.make_train_step(train_def, tx, schedule, config), donate_argnums=0)
  start = time.perf_counter()
  compiled = step_fn.lower(state, batch_arrays).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get('flops', float('nan')))
  holder = [state]

  def run():
    holder[0], metrics, _ = compiled(holder[0], batch_arrays)
    jax.block_until_ready(holder[0]['params'])

  for _ in range(2):
    run()
  return _time(run, steps), compile_s, flops


def _torch(batch: int, size: int, steps: int, data):
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

  for _ in range(2):
    run()
  return _time(run, steps), torch.get_num_threads()


def _torch_in_child(batch: int, size: int, steps: int) -> tuple[list[float], int]:
  """`_torch` in a process of its own (this script with --torch_child): no JAX thread pool beside it."""
  out = subprocess.run([sys.executable, __file__, '--torch_child', f'{batch}x{size}', '--steps', str(steps)],
                       capture_output=True, text=True, check=True).stdout
  result = json.loads(out.strip().splitlines()[-1])
  return result['times'], result['threads']


def _data(batch: int, size: int):
  rng = np.random.default_rng(0)
  return (rng.normal(size=(batch, size, size, 6)).astype(np.float32),
          rng.uniform(1, 100, size=(batch, size, size)).astype(np.float32))


def _shape(text: str) -> tuple[int, int]:
  batch, size = text.lower().split('x')
  return int(batch), int(size)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--shapes', nargs='+', default=['32x64', '8x256'], help='BxS: batch B of SxS pairs')
  parser.add_argument('--impls', nargs='+', default=['xla', 'patches'], choices=['xla', 'patches', 'auto'])
  parser.add_argument('--bf16', nargs='*', default=['32x64'], help='shapes also timed in bfloat16 (auto conv)')
  parser.add_argument('--steps', type=int, default=10, help='timed steps per side (after 2 warm-up steps)')
  parser.add_argument('--peak_gflops', type=float, default=None, help='override the estimated FP32 peak')
  parser.add_argument('--torch_child', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.torch_child:
    batch, size = _shape(args.torch_child)
    times, threads = _torch(batch, size, args.steps, _data(batch, size))
    print(json.dumps({'times': times, 'threads': threads}))
    return
  import torch
  peak, assumption = _peak_gflops()
  if args.peak_gflops:
    peak, assumption = args.peak_gflops, 'given with --peak_gflops'
  print(f'jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} cores), torch {torch.__version__}; '
        f'BN + elu, SGD step, median of {args.steps} steps')
  print(f'CPU: {_isa()}; XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}; conv_impl auto = '
        f'{conv.resolve_impl("auto")}')
  print(f'peak: {peak:.0f} GFLOP/s = {assumption}\n')
  print('| shape | step | conv | dtype | median ms | images/s | GFLOP/s | of peak | compile s | vs torch |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  for text in args.shapes:
    batch, size = _shape(text)
    data = _data(batch, size)
    runs = [(impl, 'float32') for impl in args.impls]
    if text in args.bf16:
      runs.append(('auto', 'bfloat16'))
    theirs, threads = _torch_in_child(batch, size, args.steps)
    results, useful_flops = [], None
    for impl, dtype in runs:
      times, compile_s, flops = _ours(batch, size, args.steps, data, impl, dtype)
      if useful_flops is None or (impl == 'xla' and dtype == 'float32'):
        useful_flops = flops
      results.append((impl, dtype, times, compile_s))
    theirs += _torch_in_child(batch, size, args.steps)[0]  # before and after ours: the same machine state
    torch_median = statistics.median(theirs)
    rows = [('depthnet-jax (jit)', impl, dtype, statistics.median(t), c) for impl, dtype, t, c in results]
    rows.append((f'PyTorch ({threads} threads)', 'oneDNN', 'float32', torch_median, float('nan')))
    for name, impl, dtype, median, compile_s in rows:
      gflops = useful_flops / 1e9 / (median / 1000)
      shown_impl = f'{impl} ({conv.resolve_impl(impl)})' if impl == 'auto' else impl
      print(f'| {batch}x{size}x{size} | {name} | {shown_impl} | {dtype} | {median:.1f} | {batch / median * 1000:.1f} | '
            f'{gflops:.1f} | {gflops / peak:.1%} | {compile_s:.1f} | {median / torch_median:.2f}x |', flush=True)
  print('\nGFLOP/s of every row use the FLOP count of our XLA-conv step (the same computation); "vs torch" is the '
        'time ratio, lower is faster.')


if __name__ == '__main__':
  main()
