"""Where the time of one jitted training step goes, thunk by thunk: a `jax.profiler` trace of 3 steps, summed by kind.

    .venv/bin/python benchmarks/profile_step.py [--batch 32 --size 64 --conv_impl patches --dtype float32]
        [--out DIR] [--top 40] [--show 25] [--smoke]

Prints ms/step (median-free: the mean of 5 steps after 3 warm-ups), the time per kind of XLA:CPU thunk
(ynn_fusion = YNNPACK matrix products, dot = XLA's own, concatenate / pad / slice fusions = building patches and
summing shifted blocks, copy = transposes) and the top thunks with their HLO. The trace is read with
`jax.profiler.ProfileData` (JAX's public reader of the xplane files `jax.profiler` writes; no TensorFlow
protobuf). Writes the optimized HLO to `<out>/hlo_<impl>_<B>x<S>.txt` and the trace to `<out>/trace_<impl>/`
(`--out` defaults to the system's temporary folder). `--smoke`: batch 2 of 16x16, one step per phase, outputs in a
new temporary folder unless `--out` is given (checks that it runs, measures nothing).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

from depthnet_jax.common import cli

# configs/ is not installed: configs/default.py is loaded by path, from the repository this script is in.
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', 'default.py')
THUNK = re.compile(r'^[a-z_]+\.\d+$')   # an HLO instruction's name, as the thunks of the trace are named


def compiled_step(batch: int, size: int, conv_impl: str, dtype: str):
  """(compiled SGD train step of the default config at a constant learning rate, state, batch of random data,
  seconds the lowering and compilation took).

  The same program as benchmarks/train_step.py's for the same shape, implementation and dtype.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np

  from depthnet_jax.checkpoints.train_state import TrainState
  from depthnet_jax.testing import config_files
  from depthnet_jax.testing.random_models import random_depthnet
  from depthnet_jax.train import optim
  from depthnet_jax.train import trainer as train_lib
  config = config_files.get_config(DEFAULT_CONFIG)
  config.lr_schedule, config.conv_impl, config.compute_dtype = 'constant', conv_impl, dtype
  model = random_depthnet()   # NumPy-drawn weights: no initialiser to compile; the step's cost does not change
  model.set_execution(conv_impl=conv_impl, compute_dtype=dtype)
  train_def, _, params, stats = train_lib.split_model(model)
  schedule = optim.make_schedule(config, 1)
  tx = optim.create_optimizer('sgd', schedule)
  state = jax.device_put(TrainState(params=params, batch_stats=stats, opt_state=tx.init(params),
                                    step=jnp.zeros((), jnp.int32)))
  rng = np.random.default_rng(0)
  data = {'image_pair': jnp.asarray(rng.normal(size=(batch, size, size, 6)).astype(np.float32)),
          'depth': jnp.asarray(rng.uniform(1, 100, size=(batch, size, size)).astype(np.float32))}
  step = jax.jit(train_lib.make_train_step(train_def, tx, schedule, config), donate_argnums=0)
  start = time.perf_counter()
  compiled = step.lower(state, data).compile()
  return compiled, state, data, time.perf_counter() - start


def _steps(compiled, state, data, count: int):
  import jax
  for _ in range(count):
    state, _, _ = compiled(state, data)
    jax.block_until_ready(state)
  return state


def thunk_times(trace_dir: str, steps: int) -> dict[str, collections.Counter]:
  """ms per step of every event name of the newest trace in `trace_dir`, per plane (thread groups) that has any."""
  import jax
  files = sorted(glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True))
  if not files:
    raise RuntimeError(f'jax.profiler wrote no .xplane.pb file under {trace_dir}')
  planes = {}
  for plane in jax.profiler.ProfileData.from_file(files[-1]).planes:
    total = collections.Counter()
    for line in plane.lines:
      for event in line.events:
        total[event.name] += event.duration_ns / 1e6 / steps
    if total:
      planes[plane.name] = total
  return planes


def report(planes: dict[str, collections.Counter], hlo: str, top: int, show: int) -> None:
  """Prints each plane's top events; for the host CPU's, the time by kind of thunk and the top thunks' HLO."""
  for name, total in planes.items():
    print('==', name)
    for event, ms in total.most_common(top):
      print(f'{ms:9.2f} ms  {event[:110]}')
    if name != '/host:CPU':
      continue
    kinds = collections.Counter()
    for event, ms in total.items():
      if re.match(r'^[a-z_]+(\.\d+)?$', event):
        kinds[re.sub(r'\.\d+$', '', event)] += ms
    print('-- by kind', f'{sum(kinds.values()):.2f} ms')
    for kind, ms in kinds.most_common(20):
      print(f'{ms:9.2f} ms  {kind}')
    print('-- top thunks with their HLO')
    for event, ms in [kv for kv in total.most_common(400) if THUNK.match(kv[0])][:show]:
      match = re.search(r'\n\s*(?:ROOT )?%?' + re.escape(event) + r' = ([^\n]{0,230})', hlo)
      print(f'{ms:7.2f} ms {event}: {match.group(1) if match else "?"}')


def work(args) -> int:
  batch, size = (2, 16) if args.smoke else (cli.check_int('--batch', args.batch, 2, why='BatchNorm needs 2'),
                                           cli.check_int('--size', args.size, 1))
  warmup, timed, traced = (1, 1, 1) if args.smoke else (3, 5, 3)
  top, show = cli.check_int('--top', args.top, 0), cli.check_int('--show', args.show, 0)
  out = cli.check_writable_dir(args.out or (tempfile.mkdtemp(prefix='depthnet-profile-') if args.smoke
                                            else tempfile.gettempdir()), '--out')
  import jax
  compiled, state, data, _ = compiled_step(batch, size, args.conv_impl, args.dtype)
  os.makedirs(out, exist_ok=True)
  hlo_path = os.path.join(out, f'hlo_{args.conv_impl}_{batch}x{size}.txt')
  hlo = compiled.as_text()
  with open(hlo_path, 'w') as f:
    f.write(hlo)
  state = _steps(compiled, state, data, warmup)
  start = time.perf_counter()
  state = _steps(compiled, state, data, timed)
  print(f'{batch}x{size}x{size}, conv {args.conv_impl}, {args.dtype}: ms/step '
        f'{(time.perf_counter() - start) / timed * 1000:.1f}')
  trace_dir = os.path.join(out, f'trace_{args.conv_impl}')
  jax.profiler.start_trace(trace_dir)
  state = _steps(compiled, state, data, traced)
  jax.profiler.stop_trace()
  report(thunk_times(trace_dir, traced), hlo, top, show)
  print(f'wrote {hlo_path} and {trace_dir}')
  return 0


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--batch', type=int, default=32, help='pairs per step, >= 2')
  p.add_argument('--size', type=int, default=64, help='square input size, pixels')
  p.add_argument('--conv_impl', default='patches', choices=['xla', 'patches', 'auto'], help='how convolutions run')
  p.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'], help='compute dtype')
  p.add_argument('--out', default=None, help='folder for the HLO and the trace (default: the temporary folder)')
  p.add_argument('--top', type=int, default=40, help='events printed per plane')
  p.add_argument('--show', type=int, default=25, help='top thunks printed with their HLO')
  p.add_argument('--smoke', action='store_true', help='2x16x16, one step per phase: checks that it runs')
  return p


def main(argv: list[str] | None = None) -> int:
  return cli.main(parser(), work, argv)


if __name__ == '__main__':
  sys.exit(main())
