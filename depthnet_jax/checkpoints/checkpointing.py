"""Orbax checkpoints of DepthNet models: model checkpoints, a training run's checkpoints, and loading any of them.

A model checkpoint is a directory with three Orbax items:
- `model`: the model's state as a pure nested dict (parameters and BatchNorm statistics), as in
  `nnx.state(model).to_pure_dict()`;
- `model_config`: JSON with the `DepthNet` constructor options and where the weights came from;
- `checksums`: JSON with the sha256 of every array's bytes (with its dtype and shape), keyed by item and tree
  path, computed at save time from the very arrays handed to Orbax.

`torch_import` writes one; `load_model` reads it back into a ready `DepthNet`, after checking every array
against its checksum and that the parameters are finite (`checkpoint_integrity`: why checksums, and how a
damaged file becomes one line). Checkpoints written before checksums existed still load (they are checked for
finite values only). Every failure to read a checkpoint is a `CheckpointError` (a `cli.UserError`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx

from depthnet_jax.checkpoints import integrity
from depthnet_jax.checkpoints.integrity import (  # noqa: F401 - re-exported: the names callers use
  CHECKSUM_ALGORITHM,
  CHECKSUM_ITEM,
  CHECKSUM_KEY,
  CONFIG_ITEM,
  MODEL_ITEM,
  CheckpointError,
  CheckpointNotFoundError,
  DamagedCheckpointError,
  array_checksums,
  verify_arrays,
)
from depthnet_jax.checkpoints.train_state import TrainState
from depthnet_jax.common import atomic, cli, processes
from depthnet_jax.model import models
from depthnet_jax.model.spec import FIELDS, ModelSpec

_ORBAX_TMP = re.compile(r'^\d+\.orbax-checkpoint-tmp')


# --- Model checkpoints ----------------------------------------------------------------------------------------

def save_model(directory: str | os.PathLike, model: models.DepthNet, *, metadata: dict[str, Any] | None = None,
               overwrite: bool = False) -> str:
  """Writes `model` as an Orbax checkpoint at `directory` (with its arrays' checksums), atomically.

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
  config = {**model.options(), **(metadata or {}), CHECKSUM_KEY: CHECKSUM_ALGORITHM}
  state = jax.tree.map(np.asarray, nnx.state(model).to_pure_dict())
  checksums = integrity.checksum_record({MODEL_ITEM: state})
  # Orbax creates the folder it saves to: a temporary name beside `directory` (atomic's scheme), not created here.
  tmp = os.path.join(os.path.dirname(directory), atomic.temporary_prefix(os.path.basename(directory)) + 'orbax')
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    with integrity.checkpointer() as ckptr:
      ckptr.save(tmp, ocp.args.Composite(**{MODEL_ITEM: ocp.args.StandardSave(state),
                                            CONFIG_ITEM: ocp.args.JsonSave(config),
                                            CHECKSUM_ITEM: ocp.args.JsonSave(checksums)}))
  except BaseException:   # Ctrl-C included: no half-written checkpoint stays beside the output
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  if os.path.exists(directory):
    old = os.path.join(os.path.dirname(directory), atomic.temporary_prefix(os.path.basename(directory)) + 'old')
    os.rename(directory, old)
    os.rename(tmp, directory)
    shutil.rmtree(old)
  else:
    os.rename(tmp, directory)
  return directory


# What a model checkpoint directory holds: its Orbax items and Orbax's own metadata files.
_CHECKPOINT_ENTRIES = frozenset({MODEL_ITEM, CONFIG_ITEM, CHECKSUM_ITEM, 'opt_state', 'train', 'data',
                                 'commit_success.txt'})


def check_replaceable(directory: str | os.PathLike) -> None:
  """Raises FileExistsError unless `directory` holds a model checkpoint and nothing else.

  `overwrite` replaces a previous checkpoint, never a user's files: a folder with anything beside the
  checkpoint's own items (a `.pth.tar`, notes, another program's output) is refused, naming what is there.
  """
  directory = os.path.abspath(os.fspath(directory))
  entries = sorted(os.listdir(directory))
  if CONFIG_ITEM not in entries or MODEL_ITEM not in entries:
    raise FileExistsError(
        f'{directory} is not a depthnet-jax model checkpoint (it holds {cli.shown_names(entries)}); overwrite '
        'replaces only a previous checkpoint: choose another output directory')
  other = [e for e in entries if e not in _CHECKPOINT_ENTRIES and not e.startswith('_')]
  if other:
    raise FileExistsError(
        f'{directory} holds a checkpoint and also {cli.shown_names(other)}; overwrite replaces only a checkpoint, '
        'never other files: move them away or choose another output directory')



def _checkpoint_dir(path: str | os.PathLike) -> str:
  """The absolute path of a model checkpoint; CheckpointNotFoundError if there is none there."""
  directory = os.path.abspath(os.fspath(path))
  if not os.path.exists(directory):
    raise CheckpointNotFoundError(f'checkpoint {directory} does not exist')
  if not os.path.isdir(os.path.join(directory, CONFIG_ITEM)):
    raise CheckpointNotFoundError(f'{directory} is not a depthnet-jax model checkpoint (no {CONFIG_ITEM}/ inside)')
  return directory


def _read_config(directory: str) -> dict[str, Any]:
  """The `model_config` item of a checkpoint directory; DamagedCheckpointError if it is unreadable or incomplete."""
  if not os.path.isdir(os.path.join(directory, CONFIG_ITEM)):
    raise DamagedCheckpointError(f'checkpoint {directory} is damaged or incomplete: {CONFIG_ITEM}/ is missing')
  config = integrity.restore(directory, {CONFIG_ITEM: ocp.args.JsonRestore()})[CONFIG_ITEM]
  if not isinstance(config, dict):
    raise DamagedCheckpointError(f'checkpoint {directory} is damaged: {CONFIG_ITEM}/metadata is not a JSON object')
  missing = [k for k in FIELDS if k not in config]
  if missing:
    raise DamagedCheckpointError(f'checkpoint {directory} is damaged: {CONFIG_ITEM}/metadata lacks the model '
                                 f'option(s) {", ".join(missing)}')
  return dict(config)


def read_model_config(directory: str | os.PathLike) -> dict[str, Any]:
  """The `model_config` item of a model checkpoint (constructor options and provenance)."""
  return _read_config(_checkpoint_dir(directory))


def _spec_of(directory: str, config: dict[str, Any]) -> ModelSpec:
  with integrity.reading(directory, (CONFIG_ITEM,)):   # options a damaged config may hold that ModelSpec refuses
    return ModelSpec.from_mapping(config, where=f'{CONFIG_ITEM}/metadata')


def _abstract_from_config(directory: str, config: dict[str, Any]) -> models.DepthNet:
  return models.abstract_model(_spec_of(directory, config))


def load_model(directory: str | os.PathLike) -> models.DepthNet:
  """Builds the `DepthNet` a checkpoint describes and loads its weights; returns it in eval mode.

  Every array is checked against the checksum saved with it (checkpoints written before checksums existed are
  not) and must be finite.

  Raises:
    CheckpointNotFoundError: `directory` is not a model checkpoint.
    DamagedCheckpointError: a file is missing or unreadable, an array differs from its checksum or is not finite.
  """
  directory = _checkpoint_dir(directory)
  config = _read_config(directory)
  graphdef, state = nnx.split(_abstract_from_config(directory, config))
  # Onto this process's first device, whatever mesh the checkpoint was saved from (e.g. a multi-device run).
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), state.to_pure_dict())
  args = {MODEL_ITEM: ocp.args.StandardRestore(target)}
  if integrity.has_checksums(directory, config):
    args[CHECKSUM_ITEM] = ocp.args.JsonRestore()
  restored = integrity.restore(directory, args)
  record = restored[CHECKSUM_ITEM] if CHECKSUM_ITEM in args else None
  verify_arrays(directory, MODEL_ITEM, restored[MODEL_ITEM],
                integrity.expected_checksums(directory, record, MODEL_ITEM), finite=True)
  with integrity.reading(directory, (MODEL_ITEM,)):
    nnx.replace_by_pure_dict(state, restored[MODEL_ITEM])
  model = nnx.merge(graphdef, state)
  model.eval()
  return model


# --- Training checkpoints -------------------------------------------------------------------------------------
#
# A training run's workdir holds `config.json`, `checkpoints/<step>/` (the latest K, every epoch and every N
# steps) and `best/<step>/` (the one with the lowest eval depth error). Each step directory is also a model
# checkpoint (items `model`, `model_config`, `checksums`), so `load_model` and inference read it directly.
# `checkpoints/<step>/` also holds the rest of the `TrainState`:
# - `opt_state`: the optax state's leaves, keyed '00000', '00001', ... in `jax.tree.leaves` order. Flat, because
#   optax states are nested NamedTuples (and Nones) that Orbax would store as lists without their types: the
#   structure comes back from the optimizer's own `init`, the values from here;
# - `train`: {'step'}. (Checkpoints written before the state lost its unused RNG key also hold 'rng'; it is not
#   read.)
# - `data`: JSON {'next_step', 'seed', 'batch_size'}: the input pipeline's position, a function of the step;
# and the `checksums` cover `opt_state` and `train` too.


def _pure_model(params, batch_stats) -> dict:
  return nnx.merge_state(params, batch_stats).to_pure_dict()


def _split_pure(pure: dict, params_template, stats_template):
  """A model's pure dict -> (params, batch stats) shaped like the templates."""
  state = jax.tree.map(lambda x: x, nnx.merge_state(params_template, stats_template))
  nnx.replace_by_pure_dict(state, pure)
  params, stats = nnx.split_state(state, nnx.Param, nnx.BatchStat)
  return params, stats


def _flat_opt_state(opt_state) -> dict:
  """The optax state as {'00000': leaf, ...} in `jax.tree.leaves` order (see the comment above)."""
  return {f'{i:05d}': x for i, x in enumerate(jax.tree.leaves(opt_state))}


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  return {path: tuple(np.shape(x)) for path, x in integrity.array_leaves(tree)}


class TrainCheckpoints:
  """The latest-K and best checkpoints of a training run: asynchronous, checksummed, resumed past damaged steps.

  Nothing is created on disk until the first save, so reading (resume, `eval_only`) and a run that fails before
  its first checkpoint leave the workdir as they found it. Use it as a context manager (or call `close`): it
  waits for the saves in flight and stops Orbax's threads on every path, errors included.
  """

  def __init__(self, workdir: str | os.PathLike, *, keep: int = 3, async_save: bool = True,
               best_metric: str = 'depth_error'):
    self.workdir = os.path.abspath(os.fspath(workdir))
    self.best_metric = best_metric
    # create=False: the directories appear at the first save (`_prepare`). Orbax's own sweep of unfinished
    # steps runs in a background thread that nothing awaits before exit; `_prepare` sweeps instead.
    common = dict(create=False, cleanup_tmp_directories=False, enable_async_checkpointing=async_save)
    self.latest = ocp.CheckpointManager(os.path.join(self.workdir, 'checkpoints'),
                                        options=ocp.CheckpointManagerOptions(max_to_keep=keep, **common))
    self.best = ocp.CheckpointManager(
        os.path.join(self.workdir, 'best'),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda m: m[best_metric], best_mode='min',
                                             **common))
    self._prepared: set[str] = set()
    self._closed = False
    # A save starts whole (Ctrl-C and SIGTERM wait for its call to return, so that `close` can finish it); a full
    # disk: the saves waited for, the temporaries removed, one line (`_disk_full`) instead of Orbax's tracebacks.
    self._on_disk_full = (self.latest.wait_until_finished, self.best.wait_until_finished, self._remove_unfinished)
    integrity._quiet_abandoned_reads()   # Orbax's other writes fail afterwards, each with a traceback
    processes.hide_disk_full_logs(logging.get_absl_logger(), f'{os.sep}orbax{os.sep}')

  def __enter__(self) -> 'TrainCheckpoints':
    return self

  def __exit__(self, exc_type, exc, tb) -> bool:
    self.close(quiet=exc_type is not None)
    return False

  def _prepare(self, manager: ocp.CheckpointManager) -> None:
    """Before a manager's first save: creates its directory and removes unfinished steps of a killed run."""
    directory = os.fspath(manager.directory)
    if directory in self._prepared:
      return
    os.makedirs(directory, exist_ok=True)
    self._prepared.add(directory)
    self._remove_unfinished([directory])   # its own only: the other manager may have a save in flight

  def _remove_unfinished(self, directories=None) -> None:
    """Removes Orbax's `<step>.orbax-checkpoint-tmp*`, of saves that never finished (killed, failed, interrupted),
    in `directories` (default: every manager's, once their saves have been waited for)."""
    for directory in sorted(self._prepared if directories is None else directories) if jax.process_index() == 0 else ():
      for name in [n for n in os.listdir(directory) if _ORBAX_TMP.match(n)] if os.path.isdir(directory) else ():
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)

  def _disk_full(self) -> CheckpointError:
    # The largest finished checkpoint (a latest one holds the optimizer state too, a best one only the model).
    steps = [os.path.join(d, n) for d in self._prepared if os.path.isdir(d) for n in os.listdir(d) if n.isdigit()]
    size = max((processes.folder_size(step) for step in steps), default=0)
    return CheckpointError(
        f'saving a checkpoint in {self.workdir} failed: the disk is full ({processes.free_space(self.workdir)} on its '
        f'file system{f"; a checkpoint takes {processes.format_bytes(size)}" if size else ""}); the unfinished '
        'checkpoint was removed and the earlier ones kept: free some space, then run again to resume')

  def save(self, step: int, state: TrainState, info: dict, data_state: dict) -> None:
    """Saves `state` as `checkpoints/<step>/`; `info`: the model_config item (spec fields and provenance)."""
    if step in self.latest.all_steps():
      return
    model = _pure_model(state.params, state.batch_stats)
    opt_state = _flat_opt_state(state.opt_state)
    train = {'step': state.step}
    # From the arrays handed to Orbax, now: the next (donating) train step must not change what is summed.
    checksums = integrity.checksum_record({MODEL_ITEM: model, 'opt_state': opt_state, 'train': train})
    self._prepare(self.latest)
    with processes.on_disk_full(self._disk_full, *self._on_disk_full), processes.signals_deferred():
      self.latest.save(step, args=ocp.args.Composite(**{
          MODEL_ITEM: ocp.args.StandardSave(model),
          CONFIG_ITEM: ocp.args.JsonSave(dict(info, source='training', step=step,
                                              **{CHECKSUM_KEY: CHECKSUM_ALGORITHM})),
          'opt_state': ocp.args.StandardSave(opt_state),
          'train': ocp.args.PyTreeSave(train),
          'data': ocp.args.JsonSave(data_state),
          CHECKSUM_ITEM: ocp.args.JsonSave(checksums)}))

  def save_best(self, step: int, state: TrainState, info: dict, metrics: dict[str, float]) -> None:
    if step in self.best.all_steps():
      return
    model = _pure_model(state.params, state.batch_stats)
    checksums = integrity.checksum_record({MODEL_ITEM: model})
    self._prepare(self.best)
    with processes.on_disk_full(self._disk_full, *self._on_disk_full), processes.signals_deferred():
      self.best.save(step, metrics=dict(metrics), args=ocp.args.Composite(**{
          MODEL_ITEM: ocp.args.StandardSave(model),
          CONFIG_ITEM: ocp.args.JsonSave(dict(info, source='training', step=step, eval_metrics=metrics,
                                              **{CHECKSUM_KEY: CHECKSUM_ALGORITHM})),
          CHECKSUM_ITEM: ocp.args.JsonSave(checksums)}))

  def restore_latest(self, template: TrainState) -> TrainState | None:
    """The newest usable checkpoint as a state like `template` (same shardings), or None if there is none.

    A step that cannot be read (missing, truncated or corrupt files), whose arrays differ from their checksums,
    or whose parameters are not finite is reported, moved to `workdir/unreadable/`, and the previous one is
    tried.

    Raises:
      CheckpointError: every step was damaged (all are set aside), or the checkpoints are of a model with other
        options than `template` (nothing is moved).
    """
    steps = sorted(self.latest.all_steps(), reverse=True)
    if not steps:
      return None
    model_template = _pure_model(template.params, template.batch_stats)
    opt_def = jax.tree.structure(template.opt_state)
    targets = {
        MODEL_ITEM: ocp.args.StandardRestore(_abstract(model_template)),
        'opt_state': ocp.args.StandardRestore(_abstract(_flat_opt_state(template.opt_state))),
        # partial: checkpoints of older versions also hold an unused 'rng', left unread.
        'train': ocp.args.PyTreeRestore(_abstract({'step': template.step}), partial_restore=True,
                                        restore_args=ocp.checkpoint_utils.construct_restore_args(
                                            _abstract({'step': template.step})))}
    for n, step in enumerate(steps):
      where = os.path.join(os.fspath(self.latest.directory), str(step))
      try:
        return self._restore_step(step, where, targets, template, opt_def)
      except DamagedCheckpointError as e:
        message = f'{cli.one_line(e)}; ' + ('falling back to the previous one' if n + 1 < len(steps)
                                             else 'no older checkpoint')
        logging.warning(message)
        print(f'WARNING: {message}', flush=True)
        self._set_aside(step)
    raise CheckpointError(
        f'no checkpoint in {self.latest.directory} is usable (steps {", ".join(map(str, steps))} are damaged; they '
        f'were moved to {os.path.join(self.workdir, "unreadable")}): run again to start from scratch, or put back a '
        'good one')

  def _restore_step(self, step: int, where: str, targets: dict, template: TrainState, opt_def) -> TrainState:
    config = _read_config(where)
    model_template = _pure_model(template.params, template.batch_stats)
    spec = _spec_of(where, config)
    theirs = _shapes(nnx.state(models.abstract_model(spec)).to_pure_dict())
    if theirs != _shapes(model_template):
      # Not damage: the config changed. Refuse without moving anything the user may want back.
      raise CheckpointError(
          f'checkpoint {where} is of another model ({spec.describe()}) than the config builds: resume with the config '
          f'the run was started with ({os.path.join(self.workdir, "config.json")}), or use another --workdir')
    args = dict(targets)
    if integrity.has_checksums(where, config):
      args[CHECKSUM_ITEM] = ocp.args.JsonRestore()
    with integrity.reading(where, tuple(args)):
      restored = self.latest.restore(step, args=ocp.args.Composite(**args))
    record = restored[CHECKSUM_ITEM] if CHECKSUM_ITEM in args else None
    verify_arrays(where, MODEL_ITEM, restored[MODEL_ITEM], integrity.expected_checksums(where, record, MODEL_ITEM),
                  finite=True)
    for item in ('opt_state', 'train'):
      verify_arrays(where, item, restored[item], integrity.expected_checksums(where, record, item), finite=False)
    with integrity.reading(where, tuple(args)):
      params, stats = _split_pure(restored[MODEL_ITEM], template.params, template.batch_stats)
      opt_state = jax.tree.unflatten(opt_def, [restored['opt_state'][k] for k in sorted(restored['opt_state'])])
      state = TrainState(params=params, batch_stats=stats, opt_state=opt_state, step=restored['train']['step'])
      saved_step = int(state.step)
    if saved_step != step:
      raise DamagedCheckpointError(f'checkpoint {where} is damaged: its train item holds step {saved_step}')
    return state

  def _set_aside(self, step: int) -> None:
    """Moves an unusable step out of the way (to workdir/unreadable/) so training can write it anew."""
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
      raise cli.UserError(f"eval_checkpoint={which!r}: expected 'best' or 'latest'")
    manager = self.best if which == 'best' else self.latest
    step = manager.best_step() if which == 'best' else manager.latest_step()
    if step is None:
      raise CheckpointNotFoundError(f'no {which} checkpoint in {self.workdir}: train first '
                                    f'(python train.py --config ... --workdir {self.workdir})')
    return os.path.join(os.fspath(manager.directory), str(step))

  def close(self, *, quiet: bool = False) -> None:
    """Waits for the saves in flight, then stops Orbax's threads; a second call does nothing.

    Args:
      quiet: an error is already on its way (e.g. from `__exit__`): a failure here is logged, not raised, so it
        never hides that error.

    Raises:
      CheckpointError: a save in flight failed (unless `quiet`).
    """
    if self._closed:
      return
    self._closed = True
    failure = None
    for manager in (self.latest, self.best):
      for step in (manager.wait_until_finished, manager.close):
        try:
          step()
        except Exception as e:  # noqa: BLE001 - close every manager whatever happened to the other
          failure = failure or e
    self._remove_unfinished()   # of a failed save, or of one that Ctrl-C or SIGTERM interrupted as it started
    if failure is None:
      return
    message = (str(self._disk_full()) if processes.disk_full(failure) else
               f'saving a checkpoint in {self.workdir} failed: {type(failure).__name__}: {cli.one_line(failure)[:300]}')
    if quiet:
      logging.warning(message)
      return
    raise CheckpointError(message) from failure


def write_config(workdir: str | os.PathLike, config) -> str:
  """Writes the run's config as `workdir/config.json` (process 0, atomically); returns its path."""
  path = os.path.join(os.fspath(workdir), 'config.json')
  if jax.process_index() == 0:
    os.makedirs(os.fspath(workdir), exist_ok=True)
    atomic.write_text(path, config.to_json_best_effort(indent=2, sort_keys=True)
                      if hasattr(config, 'to_json_best_effort') else json.dumps(config, indent=2, sort_keys=True))
  return path
