"""Inference throughput: pairs/s of `Predictor.predict_batch` with each runtime (JAX, ONNX Runtime) at 64, 256 and
512 (batch 1 and 8), beside the PyTorch reference model's eval forward on the same CPU in the same run.

    .venv/bin/python benchmarks/inference.py [--sizes 64 256 512 --batches 1 8 --seconds 5] [--smoke]

Ours includes what infer.py does per batch: normalisation, the network, the bilinear upsampling to the input size
and the copy back to the host (frames are given at the network size, so no resize). Torch: the network only (eval
mode, `torch.no_grad`), so the ratio flatters torch slightly. ONNX Runtime runs the graph `model.onnx_graph` builds
(CPU provider, one intra-op thread per CPU), as `--runtime onnx` does. Compile time is excluded and printed. Both
networks have random weights (ours drawn by NumPy, `testing.random_models`: no initialiser to compile, or those of
`--checkpoint`); the speed does not depend on them. `--smoke`: 32x32, batch 1, a few calls (checks that it runs,
measures nothing).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import numpy as np

from depthnet_jax.common import cli
from depthnet_jax.common.conventions import normalize
from depthnet_jax.infer import checkpoint_input
from depthnet_jax.infer import predictor as inference
from depthnet_jax.testing.random_models import random_depthnet

RUNTIMES = ('jax', 'onnx')
IDLE_S = 0.3   # untimed, before each block: longer than OpenMP's default spin (KMP_BLOCKTIME, 200 ms)


def _rates(fns: dict, batch: int, seconds: float, blocks: int = 5, idle: float = IDLE_S) -> dict[str, float]:
  """Pairs/s of each of `fns` (one warm-up call each), timed in `blocks` interleaved rounds: per round each runs for
  `seconds / blocks` (at least one call), and its rate is the median of its rounds. Interleaving spreads the
  machine's drifts (this shared CPU's speed wanders by 10-20 % over a minute) over all alike; blocks of calls, not
  single calls, and a pause of `idle` seconds before each block, keep each runtime's idle threads (ONNX Runtime's
  and torch's OpenMP threads spin a while after a call) out of the next one's time."""
  for fn in fns.values():
    fn()
  rates: dict[str, list[float]] = {name: [] for name in fns}
  for _ in range(blocks):
    for name, fn in fns.items():
      time.sleep(idle)   # the previous runtime's threads go idle before this one's block starts
      count, start = 0, time.perf_counter()
      while count == 0 or time.perf_counter() - start < seconds / blocks:
        fn()
        count += 1
      rates[name].append(count * batch / (time.perf_counter() - start))
  return {name: statistics.median(r) for name, r in rates.items()}


def _torch_forward(reference, x) -> None:
  import torch
  with torch.no_grad():
    reference(x)


def work(args) -> int:
  sizes = [32] if args.smoke else [cli.check_int('--sizes', s, 1) for s in args.sizes]
  batches = [1] if args.smoke else [cli.check_int('--batches', b, 1) for b in args.batches]
  seconds = 0.0 if args.smoke else cli.check_float('--seconds', args.seconds, 0)
  info = checkpoint_input.info(args.checkpoint, 'best') if args.checkpoint else None   # names a bad --checkpoint
  import torch

  from depthnet_jax.testing import torch_reference
  torch.set_num_threads(os.cpu_count())
  reference = torch_reference.TorchDepthNet(batch_norm=True, depth_activation='elu').eval()
  predictors = {runtime: _predictor(info, runtime, args.jax_dtype) for runtime in RUNTIMES}
  rng = np.random.default_rng(0)
  rows = []
  for size in sizes:
    for batch in batches:
      first, second = (rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8) for _ in range(2))
      start = time.perf_counter()
      predictors['jax'].predict_batch(first, second)
      compile_s = time.perf_counter() - start
      x = torch.from_numpy(normalize(np.concatenate([first, second], -1))).permute(0, 3, 1, 2)
      fns = {r: functools.partial(p.predict_batch, first, second) for r, p in predictors.items()}
      rates = _rates(dict(fns, torch=functools.partial(_torch_forward, reference, x)), batch, seconds,
                     blocks=1 if args.smoke else 5, idle=0.0 if args.smoke else IDLE_S)
      rows.append((size, batch, rates, rates.pop('torch'), compile_s))
  _print_table(rows, torch, args.jax_dtype)
  return 0


def _predictor(info, runtime: str, jax_dtype: str) -> inference.Predictor:
  """The predictor of --checkpoint (or of random weights) by `runtime`, JAX's computing in `jax_dtype`."""
  from depthnet_jax.checkpoints import loading
  model = loading.load_any(info.resolved) if info else random_depthnet()
  if runtime == 'jax':
    model.set_execution(compute_dtype=jax_dtype)
  if info is None:
    return inference.Predictor(model, runtime=runtime)
  return inference.Predictor(model, train_size=info.train_size, train_fov=info.train_fov,
                             displacement=info.displacement, source=info.path, runtime=runtime)


def _print_table(rows, torch, jax_dtype: str) -> None:
  import jax
  print(f'CPU: {os.cpu_count()} cores; JAX on {jax.devices()[0].device_kind} in {jax_dtype}; BN + elu; '
        f'torch {torch.__version__} with {torch.get_num_threads()} threads; onnxruntime {_ort_version()}\n')
  print('| input | batch | JAX pairs/s | ONNX Runtime pairs/s | PyTorch pairs/s | JAX / torch | ONNX Runtime / torch '
        '| best / torch | JAX first call (compile) s |')
  print('|---|---|---|---|---|---|---|---|---|')
  for size, batch, rates, theirs, compile_s in rows:
    jax_rate, ort_rate = rates['jax'], rates['onnx']
    print(f'| {size}x{size} | {batch} | {jax_rate:.1f} | {ort_rate:.1f} | {theirs:.1f} | {jax_rate / theirs:.2f} | '
          f'{ort_rate / theirs:.2f} | {max(jax_rate, ort_rate) / theirs:.2f} | {compile_s:.1f} |')


def _ort_version() -> str:
  import onnxruntime
  return onnxruntime.__version__


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--sizes', type=int, nargs='+', default=[64, 256, 512], help='square input sizes, pixels')
  p.add_argument('--batches', type=int, nargs='+', default=[1, 8], help='pairs per call')
  p.add_argument('--seconds', type=float, default=5.0, help='timed per setting, after one warm-up call')
  p.add_argument('--checkpoint', default=None, help='a BN + elu model to time instead of random weights (workdir, '
                 'checkpoint or .pth.tar)')
  p.add_argument('--jax_dtype', choices=['float32', 'bfloat16'], default='float32',
                 help='the compute dtype of the JAX runtime (ONNX Runtime and PyTorch: float32)')
  p.add_argument('--smoke', action='store_true', help='32x32, batch 1, 3 calls: checks that it runs')
  return p


def main(argv: list[str] | None = None) -> int:
  return cli.main(parser(), work, argv)


if __name__ == '__main__':
  sys.exit(main())
