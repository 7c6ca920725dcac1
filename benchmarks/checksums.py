"""What the checksums of a checkpoint cost: hashing every array vs writing the checkpoint, in the same run.

    .venv/bin/python benchmarks/checksums.py [--repeats 5]

For the full DepthNet (BN + elu, 10.3M parameters) with SGD-momentum and with Adam state, it times
`checkpoint_integrity.checksum_record` over the items a training save hands to Orbax (model, opt_state, train)
and over a best checkpoint's (model only), beside a synchronous Orbax save of the same items into a temporary
folder (the reference), and prints medians and the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from depthnet_jax.checkpoints import integrity as checkpoint_integrity
from depthnet_jax.model import models


def _median_ms(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times)) * 1e3


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  model = models.DepthNet(batch_norm=True, depth_activation='elu', rngs=nnx.Rngs(0))
  _, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  model_tree = jax.tree.map(np.asarray, nnx.merge_state(params, stats).to_pure_dict())
  count = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param).to_pure_dict()))
  print(f'DepthNet BN + elu, {count / 1e6:.2f}M parameters, median of {args.repeats}, this machine '
        f'({os.cpu_count()} cores)\n')
  print(f'{"what":<28} {"MB hashed":>9} {"checksums ms":>12} {"Orbax save ms":>13} {"ratio":>6}')
  for name, tx in (('SGD-momentum', optax.sgd(0.01, momentum=0.9)), ('Adam', optax.adam(1e-3))):
    opt = tx.init(nnx.state(model, nnx.Param))
    opt_tree = {f'{i:05d}': np.asarray(x) for i, x in enumerate(jax.tree.leaves(opt))}
    train = {'step': np.zeros((), np.int32), 'rng': np.asarray(jax.random.key_data(jax.random.key(0)))}
    for label, items in ((f'training save, {name}', {'model': model_tree, 'opt_state': opt_tree, 'train': train}),
                         ('best save (model only)', {'model': model_tree})):
      if label.startswith('best') and name != 'SGD-momentum':
        continue
      nbytes = sum(x.nbytes for tree in items.values() for x in jax.tree.leaves(tree))
      hashed = _median_ms(lambda: checkpoint_integrity.checksum_record(items), args.repeats)
      root = tempfile.mkdtemp(prefix='depthnet-bench-')
      counter = iter(range(10 ** 6))

      def save():
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
          ckptr.save(os.path.join(root, str(next(counter))),
                     ocp.args.Composite(**{k: ocp.args.StandardSave(v) for k, v in items.items()}))
      try:
        saved = _median_ms(save, args.repeats)
      finally:
        shutil.rmtree(root, ignore_errors=True)
      print(f'{label:<28} {nbytes / 1e6:>9.0f} {hashed:>12.0f} {saved:>13.0f} {hashed / saved:>6.2f}')


if __name__ == '__main__':
  main()
