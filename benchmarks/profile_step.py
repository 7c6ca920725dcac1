"""Where the time of one jitted training step goes, thunk by thunk: a `jax.profiler` trace of 3 steps, summed by kind.

    .venv/bin/python benchmarks/profile_step.py BATCH SIZE CONV_IMPL [DTYPE]     # e.g. 32 64 patches

Prints ms/step, the time per kind of XLA:CPU thunk (ynn_fusion = YNNPACK matrix products, dot = XLA's own,
concatenate / pad / slice fusions = building patches and summing shifted blocks, copy = transposes) and the top
thunks with their HLO. Reads the trace with TensorFlow's xplane proto (tensorflow-cpu is installed by
requirements.txt). Writes the optimized HLO to /tmp/hlo_<impl>_<B>x<S>.txt and the trace to /tmp/trace_<impl>.
"""
import collections
import glob
import os
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from depthnet_jax.checkpoints.train_state import TrainState
from depthnet_jax.testing import config_files
from depthnet_jax.train import optim
from depthnet_jax.train import trainer as train_lib

batch, size = int(sys.argv[1]), int(sys.argv[2]); impl = sys.argv[3]; dtype = sys.argv[4] if len(sys.argv) > 4 else 'float32'
# configs/ is not installed: configs/default.py is loaded by path, from the repository this script is in.
config = config_files.get_config(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', 'default.py'))
config.lr_schedule = 'constant'; config.conv_impl = impl; config.compute_dtype = dtype
model = train_lib.create_model(config)
train_def, _, params, stats = train_lib.split_model(model)
schedule = optim.make_schedule(config, 1); tx = optim.create_optimizer('sgd', schedule)
state = jax.device_put(TrainState(params=params, batch_stats=stats, opt_state=tx.init(params),
                                  step=jnp.zeros((), jnp.int32)))
rng = np.random.default_rng(0)
b = {'image_pair': jnp.asarray(rng.normal(size=(batch, size, size, 6)).astype(np.float32)), 'depth': jnp.asarray(rng.uniform(1, 100, size=(batch, size, size)).astype(np.float32))}
f = jax.jit(train_lib.make_train_step(train_def, tx, schedule, config), donate_argnums=0).lower(state, b).compile()
open(f'/tmp/hlo_{impl}_{batch}x{size}.txt', 'w').write(f.as_text())
for _ in range(3): state, m, _ = f(state, b); jax.block_until_ready(state)
t = time.perf_counter()
for _ in range(5): state, m, _ = f(state, b); jax.block_until_ready(state)
print('ms/step', (time.perf_counter() - t) / 5 * 1000)
d = '/tmp/trace_' + impl
jax.profiler.start_trace(d)
for _ in range(3): state, m, _ = f(state, b); jax.block_until_ready(state)
jax.profiler.stop_trace()
pb = sorted(glob.glob(d + '/**/*.xplane.pb', recursive=True))[-1]
from tensorflow.tsl.profiler.protobuf import xplane_pb2

xs = xplane_pb2.XSpace(); xs.ParseFromString(open(pb, 'rb').read())
for plane in xs.planes:
  md = plane.event_metadata
  tot = collections.Counter()
  for line in plane.lines:
    for ev in line.events:
      tot[md[ev.metadata_id].name] += ev.duration_ps / 1e9 / 3
  if tot:
    print('==', plane.name, len(plane.lines))
    for k, v in tot.most_common(int(os.environ.get('TOP', 40))): print(f'{v:9.2f} ms  {k[:110]}')
  if tot and plane.name == '/host:CPU':

    hlo = open(f'/tmp/hlo_{impl}_{batch}x{size}.txt').read()
    cats = collections.Counter()
    for k, v in tot.items():
      if re.match(r'^[a-z_]+(\.\d+)?$', k) and not k.startswith('$'):
        cats[re.sub(r'\.\d+$', '', k)] += v
    print('-- by kind', sum(cats.values()))
    for k, v in cats.most_common(20): print(f'{v:9.2f} ms  {k}')
    print('-- top thunks with their HLO')
    for k, v in [kv for kv in tot.most_common(400) if re.match(r'^[a-z_]+\.\d+$', kv[0])][:int(os.environ.get('SHOW', 25))]:
      m = re.search(r'\n\s*(?:ROOT )?%?' + re.escape(k) + r' = ([^\n]{0,230})', hlo)
      print(f'{v:7.2f} ms {k}: {m.group(1) if m else "?"}')
