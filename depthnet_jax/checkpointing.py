"""Orbax checkpoints of DepthNet models.

A model checkpoint is a directory with two Orbax items:
- `model`: the model's state as a pure nested dict (parameters and BatchNorm statistics), as in
  `nnx.state(model).to_pure_dict()`;
- `model_config`: JSON with the `DepthNet` constructor options and where the weights came from.

`torch_import` writes one; `load_model` reads it back into a ready `DepthNet`.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from depthnet_jax import models

MODEL_ITEM = 'model'
CONFIG_ITEM = 'model_config'
_OPTION_KEYS = ('batch_norm', 'depth_activation', 'clamp', 'with_confidence')


def _checkpointer() -> ocp.Checkpointer:
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def save_model(directory: str | os.PathLike, model: models.DepthNet, *, metadata: dict[str, Any] | None = None,
               overwrite: bool = False) -> str:
  """Writes `model` as an Orbax checkpoint at `directory`, atomically.

  The checkpoint is written beside `directory` and renamed into place when complete, so an interrupted save
  leaves no partial `directory`. An existing non-empty `directory` is an error unless `overwrite`.

  Returns:
    The absolute path written.
  """
  directory = os.path.abspath(os.fspath(directory))
  if os.path.exists(directory):
    if not os.path.isdir(directory):
      raise FileExistsError(f'{directory} exists and is not a directory')
    if os.listdir(directory) and not overwrite:
      raise FileExistsError(f'{directory} exists and is not empty; choose another output directory or '
                            'pass overwrite')
  config = dict(model.options(), **(metadata or {}))
  state = jax.tree.map(np.asarray, nnx.state(model).to_pure_dict())
  tmp = f'{directory}.tmp-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  with _checkpointer() as ckptr:
    ckptr.save(tmp, ocp.args.Composite(**{MODEL_ITEM: ocp.args.StandardSave(state),
                                          CONFIG_ITEM: ocp.args.JsonSave(config)}))
  if os.path.exists(directory):
    old = f'{directory}.old-{os.getpid()}'
    os.rename(directory, old)
    os.rename(tmp, directory)
    shutil.rmtree(old)
  else:
    os.rename(tmp, directory)
  return directory


def read_model_config(directory: str | os.PathLike) -> dict[str, Any]:
  """The `model_config` item of a model checkpoint (constructor options and provenance)."""
  directory = os.path.abspath(os.fspath(directory))
  if not os.path.isdir(os.path.join(directory, CONFIG_ITEM)):
    raise FileNotFoundError(f'{directory} is not a depthnet-jax model checkpoint (no {CONFIG_ITEM}/ inside)')
  with _checkpointer() as ckptr:
    restored = ckptr.restore(directory, ocp.args.Composite(**{CONFIG_ITEM: ocp.args.JsonRestore()}))
  return dict(restored[CONFIG_ITEM])


def abstract_model(options: dict[str, Any]) -> models.DepthNet:
  """A `DepthNet` with the given options whose arrays are shapes only (no initialisation is computed)."""
  return nnx.eval_shape(lambda: models.DepthNet(**{k: options[k] for k in _OPTION_KEYS}, rngs=nnx.Rngs(0)))


def load_model(directory: str | os.PathLike) -> models.DepthNet:
  """Builds the `DepthNet` a checkpoint describes and loads its weights; returns it in eval mode."""
  directory = os.path.abspath(os.fspath(directory))
  config = read_model_config(directory)
  graphdef, state = nnx.split(abstract_model(config))
  with _checkpointer() as ckptr:
    restored = ckptr.restore(
        directory, ocp.args.Composite(**{MODEL_ITEM: ocp.args.StandardRestore(state.to_pure_dict())}))
  nnx.replace_by_pure_dict(state, restored[MODEL_ITEM])
  model = nnx.merge(graphdef, state)
  model.eval()
  return model
