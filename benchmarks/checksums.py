"""What the checksums of a checkpoint cost: hashing every array vs writing the checkpoint, in the same run.

    .venv/bin/python benchmarks/checksums.py [--repeats 5] [--smoke]

For the full DepthNet (BN + elu, 10.3M parameters) with SGD-momentum and with Adam state, it times
`checkpoints.integrity.checksum_record` over the items a training save hands to Orbax (model, opt_state, train:
the step) and over a best checkpoint's (model only), beside a synchronous Orbax save of the same items into a
temporary folder (the reference), and prints medians and the ratio. The weights are drawn by NumPy
(`testing.random_models`: no initialiser to compile); what is timed depends on the arrays' sizes only.
`--smoke`: one repeat, SGD-momentum only (a check that the benchmark runs, not a measurement).
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
import time

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from depthnet_jax.checkpoints import integrity
from depthnet_jax.common import cli
from depthnet_jax.testing.random_models import random_depthnet

SOLVERS = {'SGD-momentum': lambda: optax.sgd(0.01, momentum=0.9), 'Adam': lambda: optax.adam(1e-3)}


def _median_ms(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times)) * 1e3


def _orbax_save(root: str, items: dict, counter) -> None:
  """A synchronous Orbax save of `items` into a new step folder of `root` (what a checkpoint writes)."""
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(os.path.join(root, str(next(counter))),
               ocp.args.Composite(**{k: ocp.args.StandardSave(v) for k, v in items.items()}))


def _row(label: str, items: dict, repeats: int) -> str:
  """One table row: the checksums of `items` and an Orbax save of them, medians of `repeats`, and the ratio."""
  nbytes = sum(x.nbytes for tree in items.values() for x in jax.tree.leaves(tree))
  hashed = _median_ms(functools.partial(integrity.checksum_record, items), repeats)
  root = tempfile.mkdtemp(prefix='depthnet-bench-')
  try:
    saved = _median_ms(functools.partial(_orbax_save, root, items, iter(range(10 ** 6))), repeats)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  return f'{label:<28} {nbytes / 1e6:>9.0f} {hashed:>12.0f} {saved:>13.0f} {hashed / saved:>6.2f}'


def work(args) -> int:
  repeats = 1 if args.smoke else cli.check_int('--repeats', args.repeats, 1)
  solvers = ['SGD-momentum'] if args.smoke else list(SOLVERS)
  model = random_depthnet()
  _, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  model_tree = jax.tree.map(np.asarray, nnx.merge_state(params, stats).to_pure_dict())
  count = sum(x.size for x in jax.tree.leaves(params.to_pure_dict()))
  print(f'DepthNet BN + elu, {count / 1e6:.2f}M parameters, median of {repeats}, this machine '
        f'({os.cpu_count()} cores)\n')
  print(f'{"what":<28} {"MB hashed":>9} {"checksums ms":>12} {"Orbax save ms":>13} {"ratio":>6}')
  train = {'step': np.zeros((), np.int32)}   # the `train` item of a training checkpoint
  for name in solvers:
    opt = SOLVERS[name]().init(params)
    opt_tree = {f'{i:05d}': np.asarray(x) for i, x in enumerate(jax.tree.leaves(opt))}
    print(_row(f'training save, {name}', {'model': model_tree, 'opt_state': opt_tree, 'train': train}, repeats),
          flush=True)
    if name == 'SGD-momentum':
      print(_row('best save (model only)', {'model': model_tree}, repeats), flush=True)
  return 0


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--repeats', type=int, default=5, help='timed repeats per row (median), >= 1')
  p.add_argument('--smoke', action='store_true', help='one repeat, SGD-momentum only: checks that it runs')
  return p


def main(argv: list[str] | None = None) -> int:
  return cli.main(parser(), work, argv)


if __name__ == '__main__':
  sys.exit(main())
