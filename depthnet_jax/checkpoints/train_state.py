"""The state of a training run: everything a step reads and writes, one pytree.

`TrainState` is a NamedTuple (so a pytree, donated whole to the jitted step and replicated over the mesh):

- `params`, `batch_stats`: the model's `nnx.Param` and `nnx.BatchStat` states;
- `opt_state`: the optax state of `optim.create_optimizer`;
- `step`: int32 scalar, the number of steps taken.

Nothing else: the data stream and the learning rate are functions of the config and the step, and training draws
no random numbers after initialisation, so a run restarted from a checkpoint of this state continues bit for bit.
`checkpointing.TrainCheckpoints` saves it as the items `model` (params and batch statistics as one pure dict, so
that every training checkpoint is also a model checkpoint), `opt_state` and `train` (the step).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax


class TrainState(NamedTuple):
  params: Any
  batch_stats: Any
  opt_state: Any
  step: jax.Array
