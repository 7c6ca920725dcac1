"""Training: the state, the jitted train step, and the loop behind `train.py`.

The train state (`train_state.TrainState`: model parameters, BatchNorm statistics, optimizer state, step) is
replicated over a 1-D ('data',) mesh of every device of every process; batches are sharded along it. One
`train_step` is compiled once with the state donated. Everything a run depends on is a function of the config
and the step: the data stream (see `input_pipeline`) and the learning rate. So restarting in the same workdir
continues bit for bit from the last checkpoint (docs/architecture.md: the invariants).

The evaluation (periodic, `eval_only`) is `depthnet_jax.evaluation.evaluate`'s, the one every command runs, on the
config's eval split (`Trainer.evaluate`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metrics as clu_metrics
from flax import nnx

from depthnet_jax.checkpoints import checkpointing, loading
from depthnet_jax.checkpoints.train_state import TrainState
from depthnet_jax.common import cli, folder_lock, progress
from depthnet_jax.data import input_pipeline, sharding, shards
from depthnet_jax.evaluation import evaluate, report
from depthnet_jax.model import losses, models
from depthnet_jax.model.spec import ModelSpec
from depthnet_jax.train import checks as train_checks
from depthnet_jax.train import event_writer, optim

EVAL_METRICS = losses.METRIC_NAMES   # the eval_* scalars: the original protocol's metrics


# Collection.create, not a class body: this module's annotations are strings (`from __future__ import ...`).
TrainMetrics = clu_metrics.Collection.create(
    **{k: clu_metrics.Average.from_output(k) for k in ('loss', 'depth_error', 'normalized_error')})


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite."""


def model_spec(config) -> ModelSpec:
  """The `ModelSpec` of a training config (its `model` section)."""
  return ModelSpec.from_mapping(config.model, where='--config.model')


def create_model(config) -> models.DepthNet:
  return models.DepthNet(model_spec(config), rngs=nnx.Rngs(config.seed), conv_impl=config.conv_impl,
                         compute_dtype=config.compute_dtype)


def split_model(model: models.DepthNet):
  """(train graphdef, eval graphdef, params, batch stats) of a model."""
  model.train()
  train_def, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  model.eval()
  eval_def, _, _ = nnx.split(model, nnx.Param, nnx.BatchStat)
  return train_def, eval_def, params, stats


def make_train_step(train_def, tx: optax.GradientTransformation, schedule: Callable, config) -> Callable:
  """`train_step(state, batch) -> (state, TrainMetrics, learning_rate)`, pure, for `jax.jit`."""
  weights = tuple(config.multiscale_weights)

  def train_step(state, batch):
    def loss_fn(params):
      # copy: fresh Variables at this trace level, so BatchNorm may update its statistics here.
      model = nnx.merge(train_def, params, state.batch_stats, copy=True)
      predictions = [models.depth_of(p) for p in model(batch['image_pair'])]
      loss = losses.multiscale_loss(predictions, batch['depth'], weights, config.loss)
      return loss, (predictions[0], nnx.state(model, nnx.BatchStat))

    (loss, (finest, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = TrainState(params=optax.apply_updates(state.params, updates), batch_stats=batch_stats,
                           opt_state=opt_state, step=state.step + 1)
    metrics = TrainMetrics.single_from_model_output(
        loss=loss, depth_error=losses.depth_error(finest, batch['depth']),
        normalized_error=losses.depth_error(finest, batch['depth'], normalize=True))
    return new_state, metrics, schedule(state.step)

  return train_step


def nominal_displacement(scene, shift: int) -> float:
  """The displacement in metres between the two frames of a nominal training pair, `shift` frames apart: what
  every depth of the trained network assumes (Still Box and the renderer: 3 x 0.1 s x 1 m/s = 0.3 m)."""
  return float(input_pipeline.displacement_length(shift * np.float64(scene['time_step']) *
                                                  np.asarray(scene['speed'], np.float64)))


class Trainer:
  """Compiled steps, sharding and data of one config; `train_and_evaluate` drives it."""

  def __init__(self, config: ml_collections.ConfigDict, *, train_source=None, eval_source=None):
    """`train_source`, `eval_source`: random-access sources of scene records (`len`, `[i]`, as
    `tfds.data_source` returns them); by default the config's dataset splits are opened."""
    self.config = config
    self.mesh = sharding.make_mesh()
    sharding.check_batch_size(config.batch_size, self.mesh, '--config.batch_size')
    sharding.check_batch_size(config.eval_batch_size, self.mesh, '--config.eval_batch_size')
    self.train_source = train_source if train_source is not None else _open_source(config, 'train_split')
    self.eval_source = eval_source if eval_source is not None else _open_source(config, 'eval_split')
    self.frames = input_pipeline.frames_per_scene(self.train_source)
    where = f'{config.dataset}:{config.train_split}'
    if config.shift >= self.frames:
      raise cli.UserError(f'--config.shift={config.shift}: expected an integer from 1 to {self.frames - 1} (the '
                          f'scenes of {where} have {self.frames} frames)')
    pairs = len(self.train_source) * self.frames
    if config.batch_size > pairs:
      raise cli.UserError(f'--config.batch_size={config.batch_size}: expected at most {pairs} (an epoch of {where} '
                          f'is {len(self.train_source)} scenes x {self.frames} frames), or build more scenes')
    first = self.train_source[0]
    train_checks.check_data_sizes(config, pairs_per_epoch=pairs, height=int(first['height']),
                                  width=int(first['width']), processes=jax.process_count())
    # Recorded in every checkpoint: inference resizes footage to the focal length the network learned, and
    # scales its depths by the real displacement over the one it learned (the pair's shift x time step x speed).
    self.image_info = {'image_size': [int(first['height']), int(first['width'])], 'fov': float(first['fov']),
                       'displacement': nominal_displacement(first, config.shift)}
    self.steps_per_epoch = input_pipeline.steps_per_epoch(len(self.train_source), self.frames, config.batch_size)
    self.num_steps = (config.num_train_steps if config.num_train_steps > 0
                      else config.num_epochs * self.steps_per_epoch)
    # The graphdefs from the model's shapes alone (no initialiser runs); the initial weights on first use.
    self.train_def, self.eval_def, *self._templates = split_model(nnx.eval_shape(lambda: create_model(config)))
    self.schedule = optim.make_schedule(config, self.steps_per_epoch)
    self.tx = optim.create_optimizer(config.solver, self.schedule, momentum=config.momentum,
                                     dampening=config.dampening, weight_decay=config.weight_decay,
                                     beta1=config.beta1, beta2=config.beta2)
    repl = sharding.replicated(self.mesh)
    self.train_step = jax.jit(make_train_step(self.train_def, self.tx, self.schedule, config),
                              donate_argnums=0, out_shardings=(repl, repl, repl))

  @functools.cached_property
  def _init(self):
    """(params, batch stats) of the config's freshly initialised model: built when training starts, not by callers
    that only evaluate checkpoints (`weights_of`, `evaluate`): the initialisers compile once per weight shape."""
    return split_model(create_model(self.config))[2:]

  def initial_state(self) -> TrainState:
    params, stats = self._init
    state = TrainState(params=params, batch_stats=stats, opt_state=self.tx.init(params),
                       step=jnp.zeros((), jnp.int32))
    return sharding.replicate(state, self.mesh)

  def weights_of(self, path: str):
    """(params, batch stats) of any checkpoint (workdir, checkpoint dir, .pth.tar) for this config's model."""
    return loading.warm_start(path, model_spec(self.config), *self._templates)

  def checkpoint_info(self) -> dict[str, Any]:
    """What every checkpoint of the run records in its model_config item: the model spec, image size and FOV."""
    return dict(model_spec(self.config).to_dict(), **self.image_info)

  def train_iterator(self, start_step: int):
    ds = input_pipeline.train_dataset(self.train_source, global_batch_size=self.config.batch_size,
                                      seed=self.config.seed, shift=self.config.shift,
                                      process_index=jax.process_index(), process_count=jax.process_count())
    return input_pipeline.make_iterator(ds, self.config.worker_count, start_step=start_step)

  def evaluate(self, graphdef, params, batch_stats, *, images: int = 0,
               show_progress: bool = False) -> evaluate.Evaluation:
    """`evaluate.evaluate` of a model (split: this config's `eval_def` or, e.g., a `models.ConstantDepth`'s) on
    the eval split as training evaluates it: the original protocol, the config's shift, eval batch size and
    workers, on the trainer's mesh. `images` example pictures and the progress are process 0's only."""
    first = jax.process_index() == 0
    return evaluate.evaluate(graphdef, params, batch_stats, self.eval_source, protocol='original',
                             shift=self.config.shift, batch_size=self.config.eval_batch_size, mesh=self.mesh,
                             worker_count=self.config.worker_count, images=images if first else 0,
                             show_progress=show_progress and first)


def _progress(step: int, total: int, start_step: int, started: float, values: dict[str, float]) -> str:
  rate, eta = progress.rate_and_eta(step - start_step, total - start_step, time.time() - started)
  shown = ' | '.join(f'{k} {v:.4g}' for k, v in values.items())
  return f'step {step}/{total} | {shown} | {rate:.2f} steps/s | ETA {progress.format_eta(eta)}'


def _open_source(config, split_field: str):
  """The data source of a split; a dataset that is not built or a split that does not exist names its field."""
  split = config[split_field]
  try:
    source = input_pipeline.open_source(config.dataset, split, config.data_dir or None)
  except input_pipeline.DatasetNotBuiltError as e:
    raise input_pipeline.DatasetNotBuiltError(f'--config.dataset: {e}') from e
  except shards.ShardError:  # a shard missing, unreadable or of another length: its line names the file
    raise
  except ValueError as e:  # an unknown split
    raise cli.UserError(f'--config.{split_field}={split!r}: {cli.one_line(e)}') from e
  if len(source) == 0:
    raise cli.UserError(f'--config.{split_field}={split!r}: the split of {config.dataset} holds no scene; expected '
                        'a split with scenes')
  return source


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, config_source: str = 'the config',
                       train_source=None, eval_source=None) -> dict[str, float]:
  """Trains (resuming from `workdir` if it holds checkpoints), evaluates; returns the last eval metrics.

  The config and the paths are checked first (`train_checks`), before JAX's distributed start-up, the dataset
  or anything written: a mistake raises `cli.UserError` and leaves the disk as it was. Orbax's checkpoint
  managers and the metric writer are closed on every way out, errors included (a pending save is finished).
  A training run holds its workdir from before its first file to its end (`_workdir_held`): a second run in it is
  refused at once. `train_source`, `eval_source`: the data, if not the config's dataset (see `Trainer`).
  """
  train_checks.upgrade_config(config)
  train_checks.validate_config(config, config_source)
  paths = train_checks.check_paths(config, workdir)
  sharding.maybe_initialize_distributed(config)
  if config.eval_only:   # writes nothing: takes no lock
    return eval_only(Trainer(config, train_source=train_source, eval_source=eval_source), paths.workdir, config)
  with _workdir_held(paths.workdir):
    return _train(config, paths, train_source, eval_source)


def _train(config, paths: train_checks.RunPaths, train_source, eval_source) -> dict[str, float]:
  """`train_and_evaluate`'s run, its workdir held: the trainer, the warm start, the checkpoints, the loop."""
  trainer = Trainer(config, train_source=train_source, eval_source=eval_source)
  # Warm start before anything is written: a checkpoint with other model options leaves no workdir behind.
  warm = _warm_start(trainer, paths.init_from) if paths.init_from else None
  # As a context manager the checkpoints are closed on every way out, errors included: the saves in flight are
  # finished and Orbax's threads stopped before the interpreter exits (no "cannot schedule new futures").
  with checkpointing.TrainCheckpoints(paths.workdir, keep=config.keep_checkpoints,
                                      async_save=config.async_checkpointing) as ckpts:
    checkpointing.write_config(paths.workdir, config)
    state = trainer.initial_state()
    restored = ckpts.restore_latest(state)
    if restored is not None:
      state = restored
      print(f'resuming from step {int(state.step)} in {paths.workdir}', flush=True)
    elif config.init_from:
      if warm is None:  # the workdir's checkpoints were all unreadable: start afresh from init_from
        warm = _warm_start(trainer, train_checks.check_init_from(config.init_from))
      params, batch_stats = sharding.replicate(warm, trainer.mesh)
      state = state._replace(params=params, batch_stats=batch_stats)
      print(f'initialised parameters and batch statistics from {config.init_from}', flush=True)
    writer = event_writer.EventWriter(paths.workdir, just_logging=jax.process_index() > 0)
    try:
      return _train_loop(trainer, ckpts, writer, state, config)
    finally:
      writer.close()


@contextlib.contextmanager
def _workdir_held(workdir: str):
  """The workdir held for the run (`folder_lock`, beside it; docs/architecture.md: one writer per folder).

  With `jax.distributed` the processes of a run share the workdir: process 0 takes the lock for all of them and
  broadcasts whether it got it (0), who holds it (the pid; -1: held, pid unknown) or that it failed otherwise (-2),
  so that a refusal stops every process of the run at once, and none waits for a process 0 that has gone.
  """
  lock, refused = None, None
  if jax.process_index() == 0:
    try:
      lock = folder_lock.acquire(workdir, '--workdir', beside=True)
    except cli.UserError as e:
      refused = e
  try:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      pid = refused.holder.get('pid') if isinstance(refused, folder_lock.HeldError) else None
      code = 0 if refused is None else -2 if not isinstance(refused, folder_lock.HeldError) else (
          pid if isinstance(pid, int) and pid > 0 else -1)
      code = int(multihost_utils.broadcast_one_to_all(np.int32(code)))
      if code == -2 and refused is None:
        raise cli.UserError(f'--workdir {workdir}: process 0 of this run could not take its lock (its error line '
                            'says why); expected a workdir process 0 can lock')
      if code and refused is None:
        raise folder_lock.refusal('--workdir', workdir, {'pid': code} if code > 0 else {}, beside=True,
                                  note=' (found by process 0 of this run)')
    if refused is not None:
      raise refused
    yield
  finally:
    if lock is not None:
      lock.release()


def _warm_start(trainer: Trainer, path: str):
  """(params, batch stats) of `init_from`; a checkpoint that does not fit the config is the user's error."""
  try:
    return trainer.weights_of(path)
  except (ValueError, OSError) as e:  # other model options or structure, an unreadable or foreign file
    raise cli.UserError(f'--config.init_from={trainer.config.init_from!r}: {cli.one_line(e)}') from e


def _train_loop(trainer: Trainer, ckpts: checkpointing.TrainCheckpoints, writer, state, config) -> dict[str, float]:
  """Steps from the state's step to the end: logs, evaluates, checkpoints; returns the last eval metrics."""
  step = int(state.step)
  if step == 0:
    writer.write_hparams({k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool))})
  eval_every = max(1, int(round(config.eval_every_epochs * trainer.steps_per_epoch)))
  print(f'{len(trainer.train_source)} training scenes x {trainer.frames} frames, {trainer.steps_per_epoch} '
        f'steps/epoch of {config.batch_size}, {trainer.num_steps} steps on {trainer.mesh.size} devices '
        f'({jax.process_count()} processes)', flush=True)
  # Closed on every way out (an error, Ctrl-C, SIGTERM): grain's workers stop and their shared memory is
  # released before the interpreter exits (else: leaked-shared_memory warnings and grain's __del__ tracebacks).
  with contextlib.closing(trainer.train_iterator(step)) as iterator:
    start_step, started, window, window_step = step, time.time(), time.time(), step
    train_metrics, pending, last_metrics = None, None, {}
    while step < trainer.num_steps:
      batch = sharding.global_batch(next(iterator), trainer.mesh)
      state, metrics, lr = trainer.train_step(state, batch)
      step += 1
      # Check the previous step's loss while this one runs: a NaN stops the run before anything is saved.
      if pending is not None:
        _check_finite(*pending)
      pending = (metrics, step)
      train_metrics = metrics if train_metrics is None else train_metrics.merge(metrics)
      if step % config.log_every_steps == 0 or step == trainer.num_steps:
        _check_finite(*pending)
        values = {f'train_{k}': float(v) for k, v in train_metrics.compute().items()}
        now = time.time()
        values['train_learning_rate'] = float(lr)
        values['train_steps_per_sec'] = (step - window_step) / max(now - window, 1e-9)
        writer.write_scalars(step, values)
        if jax.process_index() == 0:
          print(_progress(step, trainer.num_steps, start_step, started,
                          {'loss': values['train_loss'], 'depth_error': values['train_depth_error'],
                           'lr': values['train_learning_rate']}), flush=True)
        train_metrics, window, window_step = None, now, step
      end_of_epoch = step % trainer.steps_per_epoch == 0
      if step % eval_every == 0 or step == trainer.num_steps:
        _check_finite(*pending, state.params)
        result = trainer.evaluate(trainer.eval_def, state.params, state.batch_stats, images=config.num_eval_images)
        last_metrics = result.metrics
        writer.write_scalars(step, {f'eval_{k}': v for k, v in last_metrics.items()})
        if result.pictures is not None:
          writer.write_images(step, {'eval_examples': result.pictures})
        if jax.process_index() == 0:
          print(f'eval at step {step}: ' + ', '.join(f'{k} {v:.4g}' for k, v in last_metrics.items()), flush=True)
        ckpts.save_best(step, state, trainer.checkpoint_info(), last_metrics)
      if end_of_epoch or step % config.checkpoint_every_steps == 0 or step == trainer.num_steps:
        _check_finite(*pending, state.params)
        ckpts.save(step, state, trainer.checkpoint_info(),
                   {'next_step': step, 'seed': config.seed, 'batch_size': config.batch_size})
  writer.flush()
  return last_metrics


def _check_finite(metrics, step: int, params=None) -> None:
  """Stops on a non-finite loss (or, before a save, non-finite parameters) so no bad state is checkpointed."""
  loss = float(metrics.loss.compute())
  what = None if math.isfinite(loss) else f'the training loss is {loss} at step {step}'
  if what is None and params is not None and not bool(_all_finite(params)):
    what = f'the parameters are not finite after step {step}'
  if what:
    raise NonFiniteLossError(
        f'{what}; stopping. The last good checkpoint is kept. Lower the learning rate (--config.learning_rate) '
        'or check the data.')


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def eval_only(trainer: Trainer, workdir: str, config) -> dict[str, float]:
  """Evaluates the best (or latest) checkpoint of the workdir and prints `eval_<name> value` lines (then the error
  by true depth as `#` lines); writes nothing.

  The evaluation is training's (`Trainer.evaluate`: `evaluate.evaluate`'s original protocol, what `python -m
  depthnet_jax.evaluate` runs), on the config's eval split, shift, eval batch size and model execution.
  """
  path = loading.eval_checkpoint_path(os.path.abspath(os.fspath(workdir)), config.eval_checkpoint)
  try:
    params, stats = trainer.weights_of(path)
  except (ValueError, OSError) as e:  # e.g. the config's model options are not the checkpoint's
    raise cli.UserError(f'--config.eval_only=True: {cli.one_line(e)}') from e
  params, stats = sharding.replicate((params, stats), trainer.mesh)
  result = trainer.evaluate(trainer.eval_def, params, stats, show_progress=True)
  if jax.process_index() == 0:
    print(f'# eval metrics of {path} on {config.dataset}:{config.eval_split}')
    for k, v in result.metrics.items():
      print(f'eval_{k} {v!r}')
    print(f'# error by true depth over {result.pixels} pixels of {result.pairs} pairs (pooled, at the network\'s '
          'output resolution)')
    for line in report.bins_table(result):
      print(f'# {line}')
    sys.stdout.flush()
  return result.metrics


def training_depths(trainer: Trainer, batches: int | None = None, stride: int = 1) -> dict[str, float]:
  """{'mean', 'median'} of the training targets: the constant-depth baselines' depths (`models.ConstantDepth`).

  The mean is the demo's and the learning curve's baseline; the median is the constant with the lowest mean
  absolute error, a stronger one. Over the first `batches` batches of the training pipeline (default: one
  epoch), every `stride`-th pixel of each axis of each target (this process's rows).
  """
  iterator = trainer.train_iterator(0)
  depths = np.concatenate([next(iterator)['depth'][:, ::stride, ::stride].ravel()
                           for _ in range(batches or trainer.steps_per_epoch)])
  return {'mean': float(depths.mean(dtype=np.float64)), 'median': float(np.median(depths))}


