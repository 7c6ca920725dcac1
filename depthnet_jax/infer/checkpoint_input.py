"""infer.py's --checkpoint: what it records (read before anything else of it), its identity, the predictor loaded.

Every failure is a `CheckpointInputError` (a `cli.UserError`): one line naming the checkpoint and what is wrong
with it. The errors of the checkpoint code that already name it (`loading.LOAD_ERRORS`) keep their message; any
other failure to read a checkpoint means it is damaged, or not ours.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from depthnet_jax.checkpoints import loading
from depthnet_jax.common import cli
from depthnet_jax.infer import predictor as inference
from depthnet_jax.infer.outputs import OutputError, tree_identity


class CheckpointInputError(cli.UserError):
  """A --checkpoint that is missing or cannot be loaded; the message names it."""


class Nominal(NamedTuple):
  """The displacement between a pair's frames that the network's depths assume, and where it comes from."""
  metres: float
  said: str


def info(checkpoint: str, prefer: str) -> loading.CheckpointInfo:
  """The checkpoint's recorded geometry (its small `model_config` only: no weights)."""
  if not os.path.exists(checkpoint):
    raise CheckpointInputError(f'--checkpoint {checkpoint}: no such file or directory; expected a training workdir, '
                               'a checkpoint directory or a .pth.tar')
  try:
    return loading.checkpoint_info(checkpoint, prefer)
  except loading.LOAD_ERRORS as e:
    raise CheckpointInputError(f'--checkpoint: {cli.one_line(e)}') from e
  except Exception as e:  # noqa: BLE001 - any failure to read its config: the checkpoint is damaged
    raise CheckpointInputError(f'--checkpoint {checkpoint}: cannot read its model_config ({type(e).__name__}: '
                               f'{cli.one_line(e)[:300]}); expected an intact checkpoint') from e


def nominal(given: float | None, recorded: loading.CheckpointInfo) -> Nominal:
  """The displacement the network's depths assume: --nominal_displacement, else the checkpoint's record."""
  if given is not None:
    return Nominal(float(given), '--nominal_displacement')
  return Nominal(recorded.displacement, 'recorded in the checkpoint' if recorded.displacement_recorded
                 else 'Still Box\'s; the checkpoint records none')


def identity(recorded: loading.CheckpointInfo, checkpoint: str) -> str:
  """A digest of the bytes of the checkpoint's files (what its results depend on, wherever it lies)."""
  try:
    return tree_identity(recorded.resolved)
  except OSError as e:
    raise CheckpointInputError(f'--checkpoint {checkpoint}: cannot read {e.filename or recorded.resolved} '
                               f'({e.strerror or e})') from None


def load(recorded: loading.CheckpointInfo, checkpoint: str, prefer: str, runtime: str = 'auto'
         ) -> inference.Predictor:
  """The predictor of the checkpoint `info` resolved to (so the one checked, even if training saved another), its
  network run by `runtime` (`runtimes.RUNTIMES`)."""
  try:
    return inference.Predictor.from_checkpoint(recorded.path, prefer, info=recorded, runtime=runtime)
  except loading.LOAD_ERRORS as e:
    raise CheckpointInputError(f'--checkpoint: {cli.one_line(e)}') from e
  except Exception as e:  # noqa: BLE001 - a checkpoint that does not load (truncated, damaged, not ours)
    raise CheckpointInputError(f'--checkpoint {checkpoint}: cannot load {recorded.resolved} ({type(e).__name__}: '
                               f'{cli.one_line(e)[:300]}); expected an intact checkpoint') from e


def check_output_outside(output: str, recorded: loading.CheckpointInfo) -> None:
  """An `OutputError` if --output (absolute) is a checkpoint directory or lies inside one."""
  folder = recorded.resolved
  if os.path.isdir(folder):
    path, real = os.path.realpath(output), os.path.realpath(folder)
    if path == real or path.startswith(real.rstrip(os.sep) + os.sep):
      raise OutputError(f'--output {output}: inside the checkpoint {folder}; expected a folder outside it')
