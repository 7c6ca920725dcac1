"""Data parallelism: a 1-D ('data',) mesh over every device of every process, and host batches -> global arrays.

Parameters, BatchNorm statistics and optimizer state are replicated; batches are split along their first axis.
Under `jax.jit` the model's batch reductions (BatchNorm, the loss means) then run over the global batch, so the
result does not depend on how many devices or processes share it (up to float summation order).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from depthnet_jax.common import cli


def maybe_initialize_distributed(config) -> None:
  """Starts `jax.distributed` when the config asks for it or a cluster environment says so.

  `config.distributed` True with `coordinator_address`, `num_processes`, `process_id` set explicitly (e.g.
  127.0.0.1:port for a local multi-process run), or left empty for JAX's cluster auto-detection (SLURM, TPU
  pods, ...). `JAX_COORDINATOR_ADDRESS` in the environment also turns it on.
  """
  wanted = bool(config.get('distributed', False)) or 'JAX_COORDINATOR_ADDRESS' in os.environ
  if not wanted or jax.distributed.is_initialized():
    return
  if jax.config.jax_platforms in (None, '', 'cpu') or 'cpu' in str(jax.config.jax_platforms):
    # CPU processes need a collectives backend to talk to each other (tests, and CPU-only clusters).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  kwargs = {}
  if config.get('coordinator_address'):
    kwargs = dict(coordinator_address=config.coordinator_address, num_processes=config.num_processes,
                  process_id=config.process_id)
  try:
    jax.distributed.initialize(**kwargs)
  except ValueError as e:  # e.g. no coordinator_address and no cluster environment to detect one in
    raise cli.UserError(f'--config.distributed=True: jax.distributed.initialize failed: {cli.one_line(e)} '
                        '(expected a cluster JAX detects, e.g. SLURM or a TPU pod, or --config.coordinator_address='
                        'host:port with --config.num_processes and --config.process_id)') from e
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def make_mesh() -> Mesh:
  """All devices of all processes on one 'data' axis, each process's devices contiguous (in process order)."""
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  return Mesh(np.array(devices), ('data',))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def check_batch_size(global_batch_size: int, mesh: Mesh, name: str = '--config.batch_size') -> None:
  """A global batch splits evenly over the devices (and so over the processes); else a one-line `UserError`."""
  if global_batch_size % mesh.size:
    processes = jax.process_count()
    raise cli.UserError(
        f'{name}={global_batch_size}: expected a multiple of the number of devices, {mesh.size} ({mesh.size} '
        f'devices in {processes} process{"es" if processes > 1 else ""}; e.g. '
        f'{max(mesh.size, global_batch_size // mesh.size * mesh.size)})')


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows of a global batch -> global arrays sharded along 'data'.

  Process p must hold rows [p B/P, (p+1) B/P), which is what `input_pipeline` gives it.
  """
  sharding = data_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def replicate(tree, mesh: Mesh):
  """Puts a pytree of host or device arrays on every device of the mesh."""
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)
