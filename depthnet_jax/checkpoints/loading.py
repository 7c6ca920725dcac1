"""Loading models from whatever a user holds: the one layer above checkpoints and the PyTorch importer.

- `resolve_checkpoint`: a model checkpoint directory from a path (itself, or a training workdir's best or latest
  step);
- `checkpoint_info`: what inference needs to know before loading (the recorded image size, FOV and nominal
  displacement);
- `load_any`: a ready `DepthNet` from a workdir, a model checkpoint or a PyTorch `.pth.tar` (imported);
- `warm_start`: the parameters and BatchNorm statistics of any of those, for a model of a given `ModelSpec`;
- `eval_checkpoint_path`: a workdir's best (lowest eval depth error) or latest checkpoint, for `eval_only`.

Imports `checkpointing` (Orbax) and `torch_import`; neither imports this module.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
from flax import nnx

from depthnet_jax.checkpoints import checkpointing, torch_import
from depthnet_jax.checkpoints.checkpointing import CONFIG_ITEM, CheckpointError, CheckpointNotFoundError, verify_arrays
from depthnet_jax.common import cli
from depthnet_jax.common.conventions import NOMINAL_DISPLACEMENT
from depthnet_jax.model import models
from depthnet_jax.model.spec import ModelSpec

# What `checkpoint_info` and `load_any` raise for a checkpoint that is missing or unusable, each message naming the
# checkpoint and what is wrong with it (PyTorch weights fail with torch_import's errors, the rest with ours).
LOAD_ERRORS: tuple[type[Exception], ...] = (cli.UserError, FileNotFoundError, torch_import.TorchCheckpointError)

# The largest image side, in pixels, a network input can have: the one definition of the bound, for a checkpoint's
# recorded training size (`recorded_geometry`) and infer.py's --height/--width (infer.options imports it).
MAX_IMAGE_SIDE = 16384


def _steps(directory: str) -> list[int]:
  """Steps of a checkpoint manager's directory that hold a finished model checkpoint (with model_config/)."""
  try:
    names = os.listdir(directory) if os.path.isdir(directory) else []
  except OSError as e:
    raise CheckpointError(f'{directory} cannot be listed ({e.strerror or e})') from None
  links = sorted(s for s in names if s.isdigit() and os.path.islink(os.path.join(directory, s)))
  if links:   # never followed: a run's manager deletes its old steps, and what a link names is not the run's
    link = os.path.join(directory, links[0])
    raise CheckpointError(f'{link}: a symbolic link (to {os.readlink(link)}); expected the step folders train.py '
                          'writes (pass the checkpoint folder itself, or copy it in)')
  return sorted(int(s) for s in names if s.isdigit() and os.path.isdir(os.path.join(directory, s, CONFIG_ITEM)))


def resolve_checkpoint(path: str | os.PathLike, prefer: str = 'best') -> str:
  """A model checkpoint directory from a path: itself, or a training workdir's best (or latest) checkpoint."""
  path = os.path.abspath(os.fspath(path))
  if not os.path.exists(path):
    raise CheckpointNotFoundError(f'checkpoint {path} does not exist')
  if os.path.isdir(os.path.join(path, CONFIG_ITEM)):
    return path
  managers = [os.path.join(path, d) for d in ('checkpoints', 'best')]
  if any(os.path.isdir(d) for d in managers):
    for which in (prefer, 'latest' if prefer == 'best' else 'best'):
      manager_dir = os.path.join(path, which if which == 'best' else 'checkpoints')
      steps = _steps(manager_dir)
      if steps:
        return os.path.join(manager_dir, str(_pick(manager_dir, steps, which)))
    raise CheckpointNotFoundError(f'training workdir {path} holds no complete checkpoint in checkpoints/ or best/')
  raise CheckpointNotFoundError(f'{path} is neither a depthnet-jax checkpoint (no {CONFIG_ITEM}/ inside) nor a '
                                'training workdir with checkpoints/ or best/')


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
  """What inference needs to know of a checkpoint before loading its weights."""
  path: str                             # as given (absolute)
  resolved: str                         # the model checkpoint directory read, or the .pth.tar file
  train_size: tuple[int, int] | None    # (h, w) the network was trained at, if recorded
  train_fov: float | None               # its training FOV in degrees, if recorded
  # metres between the two frames of the pairs it learned from: every depth it outputs assumes this displacement
  # (conventions.NOMINAL_DISPLACEMENT, 0.3 m, when not recorded: PyTorch weights, older checkpoints)
  displacement: float = NOMINAL_DISPLACEMENT
  displacement_recorded: bool = False


def checkpoint_info(path: str | os.PathLike, prefer: str = 'best') -> CheckpointInfo:
  """Resolves `path` (a workdir's best or latest step, a checkpoint, a `.pth.tar`) and reads its recorded
  geometry (only the small `model_config` item; no weights). Raises FileNotFoundError for a missing path or a
  directory that holds no checkpoint, CheckpointError for a recorded value no training run can have written
  (`recorded_geometry`)."""
  path = os.path.abspath(os.fspath(path))
  if os.path.isfile(path):
    # PyTorch weights record none of it: 512x512, 90 deg and 0.3 m, Still Box's, are assumed
    return CheckpointInfo(path, path, None, None)
  if not os.path.exists(path):
    raise FileNotFoundError(f'checkpoint {path} does not exist')
  resolved = resolve_checkpoint(path, prefer)
  size, fov, displacement = recorded_geometry(resolved, checkpointing.read_model_config(resolved))
  return CheckpointInfo(path, resolved, size, fov, NOMINAL_DISPLACEMENT if displacement is None else displacement,
                        displacement is not None)


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def recorded_geometry(resolved: str, config: dict) -> tuple[tuple[int, int] | None, float | None, float | None]:
  """(image size (h, w), FOV in degrees, nominal displacement in metres) a checkpoint's `model_config` records,
  None where it records none (older checkpoints). A value no training run writes is a CheckpointError naming the
  file and the field: an image size that is not two integers from 1 to MAX_IMAGE_SIDE (DepthNet takes any size:
  its decoder crops to the encoder's, so no multiple is needed), a FOV outside (0, 180) degrees, a displacement that
  is not a finite number > 0."""
  where = os.path.join(resolved, CONFIG_ITEM, 'metadata')
  size, fov, displacement = (config.get(k) for k in ('image_size', 'fov', 'displacement'))
  if size is not None:
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and
            all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= MAX_IMAGE_SIDE for x in size)):
      raise CheckpointError(f"{where}: 'image_size' {size!r}: expected [height, width], two integers from 1 to "
                            f'{MAX_IMAGE_SIDE} (the size in pixels the network was trained at)')
    size = (size[0], size[1])
  if fov is not None and not (_number(fov) and 0 < fov < 180):
    raise CheckpointError(f"{where}: 'fov' {fov!r}: expected a number of degrees in (0, 180) (the horizontal field "
                          'of view the network was trained at)')
  if displacement is not None and not (_number(displacement) and displacement > 0):
    raise CheckpointError(f"{where}: 'displacement' {displacement!r}: expected a finite number of metres > 0 (the "
                          'distance between the two frames of a training pair)')
  return (size, None if fov is None else float(fov),
          None if displacement is None else float(displacement))


def load_any(path: str | os.PathLike, prefer: str = 'best') -> models.DepthNet:
  """A DepthNet (eval mode) from a training workdir, a model checkpoint, or a PyTorch `.pth.tar` (imported)."""
  path = os.fspath(path)
  if os.path.isfile(path):
    model = torch_import.load(path)
    verify_arrays(os.path.abspath(path), 'state_dict', nnx.state(model).to_pure_dict(), None, finite=True)
    return model
  return checkpointing.load_model(resolve_checkpoint(path, prefer))


def warm_start(path: str | os.PathLike, spec: ModelSpec, params_template, stats_template):
  """(params, batch stats) of a checkpoint for a model of `spec`; other state is not read."""
  model = load_any(path)
  differ = spec.differences(model.spec)
  if differ:
    raise CheckpointError(f'checkpoint {path} was built with other model options (config vs checkpoint): {differ}; '
                          'set the config to match it')
  _, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  if jax.tree.structure(params) != jax.tree.structure(params_template):
    raise CheckpointError(f'checkpoint {path}: parameter structure differs from the model of the config')
  return params, stats


def _pick(manager_dir: str, steps: list[int], which: str) -> int:
  """The latest step, or of `best/` the one with the lowest recorded eval depth error (one is kept; two only
  while a better one replaces the other)."""
  if which == 'best' and len(steps) > 1:
    errors = {s: checkpointing.read_model_config(os.path.join(manager_dir, str(s))).get('eval_metrics', {})
              .get('depth_error', math.inf) for s in steps}
    return min(steps, key=lambda s: (errors[s], -s))
  return steps[-1]


def eval_checkpoint_path(workdir: str, which: str = 'best') -> str:
  """The best (lowest eval depth error) or latest checkpoint of a training workdir, found without writing."""
  sub = os.path.join(workdir, 'best' if which == 'best' else 'checkpoints')
  steps = _steps(sub)
  if not steps:
    raise cli.UserError(f'no {which} checkpoint in {workdir}: train first (python train.py --config ... '
                        f'--workdir {workdir})')
  return os.path.join(sub, str(_pick(sub, steps, which)))


def latest_step(workdir: str) -> int:
  """The step of a training workdir's latest finished checkpoint, 0 if it holds none (read without JAX work)."""
  steps = _steps(os.path.join(workdir, 'checkpoints'))
  return steps[-1] if steps else 0
