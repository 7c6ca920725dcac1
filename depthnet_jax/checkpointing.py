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
from absl import logging
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
    if os.listdir(directory):
      check_replaceable(directory)
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


# What a model checkpoint directory holds: its Orbax items and Orbax's own metadata files.
_CHECKPOINT_ENTRIES = frozenset({MODEL_ITEM, CONFIG_ITEM, 'opt_state', 'train', 'data'})


def check_replaceable(directory: str | os.PathLike) -> None:
  """Raises FileExistsError unless `directory` holds a model checkpoint and nothing else.

  `overwrite` replaces a previous checkpoint, never a user's files: a folder with anything beside the
  checkpoint's own items (a `.pth.tar`, notes, another program's output) is refused, naming what is there.
  """
  directory = os.path.abspath(os.fspath(directory))
  entries = sorted(os.listdir(directory))
  if CONFIG_ITEM not in entries or MODEL_ITEM not in entries:
    raise FileExistsError(
        f'{directory} is not a depthnet-jax model checkpoint (it holds {_shown(entries)}); overwrite replaces only '
        'a previous checkpoint: choose another output directory')
  other = [e for e in entries if e not in _CHECKPOINT_ENTRIES and not e.startswith('_')]
  if other:
    raise FileExistsError(
        f'{directory} holds a checkpoint and also {_shown(other)}; overwrite replaces only a checkpoint, never '
        'other files: move them away or choose another output directory')


def _shown(names: list[str], limit: int = 5) -> str:
  more = f' and {len(names) - limit} more' if len(names) > limit else ''
  return ', '.join(names[:limit]) + more


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
  # Onto this process's first device, whatever mesh the checkpoint was saved from (e.g. a multi-device run).
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), state.to_pure_dict())
  with _checkpointer() as ckptr:
    restored = ckptr.restore(directory, ocp.args.Composite(**{MODEL_ITEM: ocp.args.StandardRestore(target)}))
  nnx.replace_by_pure_dict(state, restored[MODEL_ITEM])
  model = nnx.merge(graphdef, state)
  model.eval()
  return model


# --- Training checkpoints -------------------------------------------------------------------------------------
#
# A training run's workdir holds `config.json`, `checkpoints/<step>/` (the latest K, every epoch and every N
# steps) and `best/<step>/` (the one with the lowest eval depth error). Each step directory is also a model
# checkpoint (items `model`, `model_config`), so `load_model` and inference read it directly; `checkpoints/`
# adds `opt_state`, `train` (step, RNG key) and `data` (the input pipeline's position, a function of the step).


def _pure_model(params, batch_stats) -> dict:
  return nnx.merge_state(params, batch_stats).to_pure_dict()


def _split_pure(pure: dict, params_template, stats_template):
  """A model's pure dict -> (params, batch stats) shaped like the templates."""
  state = jax.tree.map(lambda x: x, nnx.merge_state(params_template, stats_template))
  nnx.replace_by_pure_dict(state, pure)
  params, stats = nnx.split_state(state, nnx.Param, nnx.BatchStat)
  return params, stats


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class TrainCheckpoints:
  """The latest-K and best checkpoints of a training run, asynchronous, with fallback past unreadable steps."""

  def __init__(self, workdir: str | os.PathLike, *, keep: int = 3, async_save: bool = True,
               best_metric: str = 'depth_error'):
    self.workdir = os.path.abspath(os.fspath(workdir))
    self.best_metric = best_metric
    common = dict(create=True, cleanup_tmp_directories=True, enable_async_checkpointing=async_save)
    self.latest = ocp.CheckpointManager(os.path.join(self.workdir, 'checkpoints'),
                                        options=ocp.CheckpointManagerOptions(max_to_keep=keep, **common))
    self.best = ocp.CheckpointManager(
        os.path.join(self.workdir, 'best'),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda m: m[best_metric], best_mode='min',
                                             **common))

  def save(self, step: int, state: dict, options: dict, data_state: dict) -> None:
    if step in self.latest.all_steps():
      return
    self.latest.save(step, args=ocp.args.Composite(**{
        MODEL_ITEM: ocp.args.StandardSave(_pure_model(state['params'], state['batch_stats'])),
        CONFIG_ITEM: ocp.args.JsonSave(dict(options, source='training', step=step)),
        'opt_state': ocp.args.StandardSave({f'{i:05d}': x for i, x in enumerate(jax.tree.leaves(
            state['opt_state']))}),
        'train': ocp.args.StandardSave({'step': state['step'], 'rng': state['rng']}),
        'data': ocp.args.JsonSave(data_state)}))

  def save_best(self, step: int, state: dict, options: dict, metrics: dict[str, float]) -> None:
    if step in self.best.all_steps():
      return
    self.best.save(step, metrics=dict(metrics), args=ocp.args.Composite(**{
        MODEL_ITEM: ocp.args.StandardSave(_pure_model(state['params'], state['batch_stats'])),
        CONFIG_ITEM: ocp.args.JsonSave(dict(options, source='training', step=step, eval_metrics=metrics))}))

  def restore_latest(self, template: dict) -> dict | None:
    """The newest readable checkpoint as a state like `template` (same shardings), or None if there is none.

    A step that cannot be read (partial or corrupt files) is reported and the previous one is tried.
    """
    steps = sorted(self.latest.all_steps(), reverse=True)
    opt_leaves, opt_def = jax.tree.flatten(template['opt_state'])
    targets = ocp.args.Composite(**{
        MODEL_ITEM: ocp.args.StandardRestore(_abstract(_pure_model(template['params'], template['batch_stats']))),
        'opt_state': ocp.args.StandardRestore(_abstract({f'{i:05d}': x for i, x in enumerate(opt_leaves)})),
        'train': ocp.args.StandardRestore(_abstract({'step': template['step'], 'rng': template['rng']}))})
    for n, step in enumerate(steps):
      try:
        restored = self.latest.restore(step, args=targets)
        params, stats = _split_pure(restored[MODEL_ITEM], template['params'], template['batch_stats'])
        opt_state = jax.tree.unflatten(opt_def, [restored['opt_state'][k] for k in sorted(restored['opt_state'])])
        state = dict(params=params, batch_stats=stats, opt_state=opt_state, step=restored['train']['step'],
                     rng=restored['train']['rng'])
      except Exception as e:  # noqa: BLE001 - any failure to read means: try the previous step
        where = os.path.join(self.latest.directory, str(step))
        message = (f'checkpoint {where} is unreadable ({type(e).__name__}: {str(e).splitlines()[0][:300]}); '
                   + ('falling back to the previous one' if n + 1 < len(steps) else 'no older checkpoint'))
        logging.warning(message)
        print(f'WARNING: {message}', flush=True)
        self._set_aside(step)
        continue
      if int(state['step']) != step:
        raise ValueError(f'checkpoint {step} holds step {int(state["step"])}')
      return state
    if steps:
      raise RuntimeError(f'no checkpoint in {self.latest.directory} is readable (tried steps {steps}; they are in '
                         f'{os.path.join(self.workdir, "unreadable")} now). Run again to start from scratch, or put '
                         'back a good one.')
    return None

  def _set_aside(self, step: int) -> None:
    """Moves an unreadable step out of the way (to workdir/unreadable/) so training can write it anew."""
    if jax.process_index() == 0:
      aside = os.path.join(self.workdir, 'unreadable')
      os.makedirs(aside, exist_ok=True)
      target = os.path.join(aside, f'{step}-{os.getpid()}')
      os.rename(os.path.join(os.fspath(self.latest.directory), str(step)), target)
      print(f'moved it to {target}', flush=True)
    self.latest.reload()

  def path_of(self, which: str = 'best') -> str:
    """Directory of the best or the latest checkpoint (each a model checkpoint for `load_model`)."""
    if which not in ('best', 'latest'):
      raise ValueError(f"eval_checkpoint must be 'best' or 'latest'; got {which!r}")
    manager = self.best if which == 'best' else self.latest
    step = manager.best_step() if which == 'best' else manager.latest_step()
    if step is None:
      raise FileNotFoundError(f'no {which} checkpoint in {self.workdir}: train first '
                              f'(python train.py --config ... --workdir {self.workdir})')
    return os.path.join(os.fspath(manager.directory), str(step))

  def close(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()
    self.latest.close()
    self.best.close()


def resolve_checkpoint(path: str | os.PathLike, prefer: str = 'best') -> str:
  """A model checkpoint directory from a path: itself, or a training workdir's best (or latest) checkpoint."""
  path = os.path.abspath(os.fspath(path))
  if os.path.isdir(os.path.join(path, CONFIG_ITEM)):
    return path
  if os.path.isdir(os.path.join(path, 'checkpoints')) or os.path.isdir(os.path.join(path, 'best')):
    order = (prefer, 'latest' if prefer == 'best' else 'best')
    for which in order:
      manager_dir = os.path.join(path, which if which == 'best' else 'checkpoints')
      steps = sorted(int(s) for s in os.listdir(manager_dir) if s.isdigit()) if os.path.isdir(manager_dir) else []
      steps = [s for s in steps if os.path.isdir(os.path.join(manager_dir, str(s), CONFIG_ITEM))]
      if steps:
        return os.path.join(manager_dir, str(steps[-1]))
  raise FileNotFoundError(f'{path} is neither a depthnet-jax checkpoint (no {CONFIG_ITEM}/ inside) nor a training '
                          'workdir with checkpoints/ or best/')


def load_any(path: str | os.PathLike, prefer: str = 'best') -> models.DepthNet:
  """A DepthNet (eval mode) from a training workdir, a model checkpoint, or a PyTorch `.pth.tar` (imported)."""
  path = os.fspath(path)
  if os.path.isfile(path):
    from depthnet_jax import torch_import
    return torch_import.load(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'checkpoint {path} does not exist')
  return load_model(resolve_checkpoint(path, prefer))


def warm_start(path: str | os.PathLike, options: dict[str, Any], params_template, stats_template):
  """(params, batch stats) of a checkpoint for a model built with `options`; other state is not read."""
  model = load_any(path)
  theirs = model.options()
  ours = {k: (models.normalize_depth_activation(v) if k == 'depth_activation' else v) for k, v in options.items()}
  differ = {k: (ours[k], theirs.get(k)) for k in _OPTION_KEYS if ours[k] != theirs.get(k)}
  if differ:
    raise ValueError(f'checkpoint {path} was built with other model options (config vs checkpoint): {differ}; '
                     'set the config to match it')
  _, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  if jax.tree.structure(params) != jax.tree.structure(params_template):
    raise ValueError(f'checkpoint {path}: parameter structure differs from the model of the config')
  return params, stats


def write_config(workdir: str | os.PathLike, config) -> str:
  """Writes the run's config as `workdir/config.json` (process 0, atomically); returns its path."""
  import json
  path = os.path.join(os.fspath(workdir), 'config.json')
  if jax.process_index() == 0:
    os.makedirs(os.fspath(workdir), exist_ok=True)
    tmp = f'{path}.tmp-{os.getpid()}'
    with open(tmp, 'w') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True) if hasattr(config, 'to_json_best_effort')
              else json.dumps(config, indent=2, sort_keys=True))
    os.replace(tmp, path)
  return path
