"""Milliseconds per training step: our jitted step against the PyTorch reference with torch's SGD, same CPU, same run.

    .venv/bin/python benchmarks/train_step.py [--batch 32 --size 64 --steps 20 --peak_gflops X]

Both sides do a whole step at 64x64 (BN + elu): forward in train mode (5 scales), multiscale L1 loss against the
area-downsampled target, backward, SGD(momentum 0.9, dampening 0.9, weight decay 4e-4) update. The FLOPs of our
step come from XLA's cost analysis; the machine's peak is estimated from the CPU flags and clock (printed) unless
`--peak_gflops` is given. This is the yardstick of later performance work, not tuned for.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from configs import default  # noqa: E402
from depthnet_jax import models, optim, train_lib  # noqa: E402

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


def _ours(batch: int, size: int, steps: int, data):
  config = default.get_config()
  config.lr_schedule = 'constant'
  model = train_lib.create_model(config)
  train_def, _, params, stats = train_lib.split_model(model)
  schedule = optim.make_schedule(config, 1)
  tx = optim.create_optimizer('sgd', schedule)
  state = dict(params=params, batch_stats=stats, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32),
               rng=jax.random.key_data(jax.random.key(0)))
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
  import torch_reference
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


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--size', type=int, default=64)
  parser.add_argument('--steps', type=int, default=20, help='timed steps per side (after 2 warm-up steps)')
  parser.add_argument('--peak_gflops', type=float, default=None, help='override the estimated FP32 peak')
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  data = (rng.normal(size=(args.batch, args.size, args.size, 6)).astype(np.float32),
          rng.uniform(1, 100, size=(args.batch, args.size, args.size)).astype(np.float32))
  ours, compile_s, flops = _ours(args.batch, args.size, args.steps, data)
  theirs, threads = _torch(args.batch, args.size, args.steps, data)
  peak, assumption = _peak_gflops()
  if args.peak_gflops:
    peak, assumption = args.peak_gflops, 'given with --peak_gflops'
  print(f'batch {args.batch}, {args.size}x{args.size}, BN + elu, SGD step; jax {jax.__version__} on '
        f'{jax.devices()[0].platform} ({os.cpu_count()} cores), torch with {threads} threads; {args.steps} steps')
  print(f'our step: {flops / 1e9:.2f} GFLOP (XLA cost analysis), compiled in {compile_s:.1f} s')
  print(f'peak: {peak:.0f} GFLOP/s = {assumption}\n')
  print('| step | median ms | mean ms | images/s | GFLOP/s | of peak | vs torch |')
  print('|---|---|---|---|---|---|---|')
  torch_median = statistics.median(theirs)
  for name, times in (('depthnet-jax (jit)', ours), ('PyTorch reference', theirs)):
    median = statistics.median(times)
    gflops = flops / 1e9 / (median / 1000)
    print(f'| {name} | {median:.1f} | {statistics.mean(times):.1f} | {args.batch / median * 1000:.1f} | '
          f'{gflops:.1f} | {gflops / peak:.1%} | {median / torch_median:.2f}x |')
  print('\nGFLOP/s of both use our step\'s FLOP count (the same computation); "vs torch" is time ratio, lower is '
        'faster.')


if __name__ == '__main__':
  main()
