"""Imports the original's PyTorch checkpoints (`DepthNet_*.pth.tar`) without PyTorch.

The file is read by `torch_pickle` (both torch serialisations: the legacy one of PyTorch < 1.6 and
the zip one of PyTorch >= 1.6; allow-listed unpickling, nothing in the file is run).

What the original's train.py saves, every epoch (`checkpoint.pth.tar`, copied to `model_best.pth.tar`), is a
dict with exactly these keys:
- `epoch` (int), `arch` (str, see below), `state_dict`, `best_error` (a float; the 2017 revision, behind the
  published weights, called it `best_EPE`), `bn` (bool), `with_confidence` (False), `activation_function`
  (None or the string given as --activation-function), `clamp` (bool), `mean` and `std` ([0.5] * 3, [0.2] * 3).
- `state_dict` is that of `torch.nn.DataParallel(DepthNet(...))`: every key starts with `module.` (the 2017
  revision had no DataParallel, so no prefix); BatchNorm layers also hold `num_batches_tracked` (ignored).
- `arch` is built as 'DepthNet', then '_confidence' for a confidence model, then '_' + the activation when
  one was given, then '_bn' with --bn, then '_clamp' with --clamp: 'DepthNet_elu_bn' for the published
  weights, 'DepthNet', 'DepthNet_bn', 'DepthNet_elu', 'DepthNet_elu_bn_clamp', ...

The model to build is read from these: an option given by the caller (CLI --depth_activation, --clamp) wins;
else the option's key; else what `arch` encodes; else, for batch_norm and with_confidence, the tensors (a bare
state_dict), and for clamp False. Where `arch` and a key both speak they must agree, or the file is refused
showing both. Only the activation 'elu' (depth = elu(x) + 1) means something to the network, and None means
identity; any other activation is refused. Names are mapped (`module.` stripped; `conv1.0.weight` ->
`conv1/conv/kernel`, `conv1.1.running_mean` -> `conv1/bn/mean`), and so are layouts (conv OIHW -> HWIO;
ConvTranspose IOHW -> spatially flipped HWIO).

`convert` writes an Orbax model checkpoint (`checkpointing.load_model` reads it back), the output checked before
the input is read; nothing the user owns is replaced: `overwrite` replaces only a previous model checkpoint, never
the input file or a folder holding it. Its command line is `import_command` (`python -m depthnet_jax.torch_import`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from flax import nnx

from depthnet_jax.checkpoints import checkpointing, torch_pickle
from depthnet_jax.common import cli
from depthnet_jax.common.conventions import MEAN, NOMINAL_DISPLACEMENT, STD
from depthnet_jax.model import models
from depthnet_jax.model.spec import FIELDS, ModelSpec, normalize_depth_activation

TorchCheckpointError = torch_pickle.TorchCheckpointError

_BN_NAMES = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean', 'var': 'running_var'}
_INPUT_MEAN, _INPUT_STD = [MEAN] * 3, [STD] * 3   # the original's per-channel normalisation


def _torch_key(path: tuple[str, ...]) -> tuple[str, str]:
  """(torch state_dict key, layout) of a DepthNet state leaf; layout is 'conv', 'deconv' or 'vector'."""
  top, rest = path[0], path[1:]
  leaf = rest[-1]
  if top.startswith('deconv'):
    if rest[0] == 'up':
      return f'{top}.0.{"weight" if leaf == "kernel" else "bias"}', 'deconv' if leaf == 'kernel' else 'vector'
    rest, index = rest[1:], 1  # DeconvBlock.block: its conv is the Sequential's item 1, its BN item 2
  else:
    index = 0
  if top.startswith('upsampled_depth'):
    return f'{top}.weight', 'deconv'
  if top.startswith('predict_depth'):
    return f'{top}.{"weight" if leaf == "kernel" else "bias"}', 'conv' if leaf == 'kernel' else 'vector'
  if rest[0] == 'conv':
    return f'{top}.{index}.{"weight" if leaf == "kernel" else "bias"}', 'conv' if leaf == 'kernel' else 'vector'
  if rest[0] == 'bn':
    return f'{top}.{index + 1}.{_BN_NAMES[leaf]}', 'vector'
  raise AssertionError(f'unmapped DepthNet state leaf {path}')


def _to_torch_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
  if layout == 'conv':  # HWIO -> OIHW
    return (shape[3], shape[2], shape[0], shape[1])
  if layout == 'deconv':  # HWIO -> IOHW
    return (shape[2], shape[3], shape[0], shape[1])
  return tuple(shape)


def _from_torch(array: np.ndarray, layout: str) -> np.ndarray:
  if layout == 'conv':
    return np.ascontiguousarray(array.transpose(2, 3, 1, 0))
  if layout == 'deconv':
    # torch's transposed conv scatters with the kernel as stored; as a correlation over the dilated input the
    # kernel is flipped in both spatial axes.
    return np.ascontiguousarray(array[:, :, ::-1, ::-1].transpose(2, 3, 0, 1))
  return np.ascontiguousarray(array)


def _to_torch(array: np.ndarray, layout: str) -> np.ndarray:
  """The inverse of `_from_torch`."""
  if layout == 'conv':
    return np.ascontiguousarray(array.transpose(3, 2, 0, 1))
  if layout == 'deconv':
    return np.ascontiguousarray(array.transpose(2, 3, 0, 1)[:, :, ::-1, ::-1])
  return np.ascontiguousarray(array)


def to_state_dict(model: models.DepthNet) -> dict[str, np.ndarray]:
  """The original's `DepthNet(...).state_dict()` of `model` as float32 NumPy arrays (keys without DataParallel's
  `module.` prefix; BatchNorm's `num_batches_tracked` counters, which no computation reads, left out): the inverse
  of `convert_state_dict`, so that the original's PyTorch code can load a model trained here."""
  state = nnx.state(model).to_pure_dict()
  out = {}
  for path, leaf in _flatten(state).items():
    key, layout = _torch_key(path)
    out[key] = _to_torch(np.array(leaf, np.float32), layout)   # a copy: writable, as torch.from_numpy wants
  return out


def _flatten(tree: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  flat = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      flat.update(_flatten(v, prefix + (str(k),)))
    else:
      flat[prefix + (str(k),)] = v
  return flat


def _unflatten(flat: dict[tuple[str, ...], Any]) -> dict:
  tree: dict = {}
  for path, v in flat.items():
    node = tree
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return tree


def _strip_prefix(state_dict: dict[str, Any]) -> tuple[dict[str, Any], bool]:
  keys = [k for k in state_dict if isinstance(k, str)]
  if keys and all(k.startswith('module.') for k in keys):
    return {k[len('module.'):]: v for k, v in state_dict.items()}, True
  return dict(state_dict), False


def convert_state_dict(state_dict: dict[str, Any], options: dict[str, Any], *, source: str = 'state_dict'
                       ) -> dict:
  """Maps a torch DepthNet state_dict to the pure state dict of `DepthNet(**options)`.

  Raises:
    TorchCheckpointError: keys missing or unexpected, or a tensor of the wrong shape or type; the message
      names each key with its expected torch shape.
  """
  state_dict, _ = _strip_prefix(state_dict)
  state_dict = {k: v for k, v in state_dict.items() if not str(k).endswith('num_batches_tracked')}
  abstract = nnx.state(models.abstract_model(ModelSpec(**options))).to_pure_dict()
  expected = {}
  for path, leaf in _flatten(abstract).items():
    key, layout = _torch_key(path)
    expected[key] = (path, layout, _to_torch_shape(leaf.shape, layout))

  problems = []
  missing = [k for k in expected if k not in state_dict]
  extra = [k for k in state_dict if k not in expected]
  for k in missing:
    problems.append(f'missing key {k} (expected shape {expected[k][2]})')
  for k in extra:
    problems.append(f'unexpected key {k} (shape {getattr(state_dict[k], "shape", type(state_dict[k]))})')
  hints = []
  if any('.running_mean' in k for k in extra) and not options['batch_norm']:
    hints.append('hint: the tensors are those of a BatchNorm DepthNet, but the options say batch_norm=False')
  if any('.running_mean' in k for k in missing) and options['batch_norm']:
    hints.append('hint: the options say batch_norm=True, but the checkpoint has no BatchNorm statistics')

  flat = {}
  for key, (path, layout, shape) in expected.items():
    if key not in state_dict:
      continue
    value = state_dict[key]
    if not isinstance(value, np.ndarray) or value.dtype.kind != 'f':
      problems.append(f'{key} is {getattr(value, "dtype", type(value).__name__)}, expected a float tensor')
      continue
    if tuple(value.shape) != shape:
      problem = f'{key} has shape {tuple(value.shape)}, expected {shape}'
      if key == 'conv1.0.weight' and value.ndim == 4 and value.shape[1] != 6:
        problem += (f' (a network with {value.shape[1]} input channels, e.g. the coordinate-channel experiment; '
                    'DepthNet takes two RGB frames, 6 channels)')
      if key.startswith('predict_depth') and value.ndim >= 1 and value.shape[0] in (1, 2):
        problem += f' (with_confidence={value.shape[0] == 2} in the checkpoint\'s tensors)'
      problems.append(problem)
      continue
    flat[path] = _from_torch(value.astype(np.float32), layout)
  if problems:
    shown = hints + problems[:20] + ([f'... and {len(problems) - 20} more'] if len(problems) > 20 else [])
    raise TorchCheckpointError(f'{source}: does not match DepthNet({_format_options(options)}):\n  '
                               + '\n  '.join(shown))
  return _unflatten(flat)


def _format_options(options: dict[str, Any]) -> str:
  return ModelSpec(**options).describe()


def _scalar(value):
  if isinstance(value, (np.ndarray, np.generic)) and np.size(value) == 1:
    return value.item()
  return value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)


ARCH = 'DepthNet'
# Field of `ModelSpec` -> key of the original's checkpoint dict (the same name unless given here).
_KEYS = {f: {'batch_norm': 'bn', 'depth_activation': 'activation_function'}.get(f, f) for f in FIELDS}
_OPTIONS = FIELDS


def arch_string(*, batch_norm: bool, depth_activation: str | None, clamp: bool, with_confidence: bool) -> str:
  """The `arch` the original builds for these options ('DepthNet', 'DepthNet_elu_bn', ...)."""
  return (ARCH + ('_confidence' if with_confidence else '') + ('' if depth_activation is None else
          '_' + depth_activation) + ('_bn' if batch_norm else '') + ('_clamp' if clamp else ''))


def parse_arch(arch: str, *, source: str = 'checkpoint') -> dict[str, Any]:
  """The options an `arch` of the original's train.py encodes.

  'DepthNet' + '_confidence' (a confidence model) + '_<activation>' (the --activation-function given, any
  string) + '_bn' (--bn) + '_clamp' (--clamp), each part present only when set.

  Returns:
    dict(batch_norm, depth_activation (as written, None when absent), clamp, with_confidence).

  Raises:
    TorchCheckpointError: `arch` is not a string of that family (e.g. 'FlowNetS').
  """
  if not isinstance(arch, str):
    raise TorchCheckpointError(f'{source}: arch is {arch!r:.60} ({type(arch).__name__}), expected a string such '
                               "as 'DepthNet_elu_bn'")
  rest = arch[len(ARCH):]
  if not arch.startswith(ARCH) or rest[:1] not in ('', '_'):
    raise TorchCheckpointError(f'{source}: unknown architecture {arch!r}; only DepthNet checkpoints can be imported '
                               "(arch 'DepthNet' with the original's suffixes, e.g. 'DepthNet_elu_bn')")
  options = {'with_confidence': False, 'batch_norm': False, 'clamp': False}
  if rest.endswith('_clamp'):
    options['clamp'], rest = True, rest[:-len('_clamp')]
  if rest.endswith('_bn'):
    options['batch_norm'], rest = True, rest[:-len('_bn')]
  if rest == '_confidence' or rest.startswith('_confidence_'):
    options['with_confidence'], rest = True, rest[len('_confidence'):]
  options['depth_activation'] = rest[1:] if rest else None
  return options


def _key_value(meta: dict, option: str, source: str):
  """The checkpoint's value for `option` (its key as the original writes it), type-checked."""
  key, value = _KEYS[option], meta[_KEYS[option]]
  if isinstance(value, (np.generic, np.ndarray)) and np.size(value) == 1:
    value = value.item()
  if option == 'depth_activation':
    if value is not None and not isinstance(value, str):
      raise TorchCheckpointError(f'{source}: activation_function is {value!r:.60}, expected None or a string '
                                 "such as 'elu'")
    return value
  if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
    return bool(value)
  raise TorchCheckpointError(f'{source}: {key} is {value!r:.60}, expected True or False')


def _options(meta: dict, stripped: dict[str, Any], overrides: dict[str, Any], source: str) -> dict[str, Any]:
  """Resolves the DepthNet options: overrides, else the checkpoint's keys, else its arch, else the tensors."""
  from_keys = {o: _key_value(meta, o, source) for o in _OPTIONS if _KEYS[o] in meta}
  arch = meta.get('arch')
  from_arch: dict[str, Any] = {}
  if arch is not None:
    from_arch = parse_arch(arch, source=source)
    # Compared as the original builds it: when all four keys rebuild `arch` exactly, they agree, whichever
    # way an odd activation name (e.g. one ending in '_bn') splits.
    if len(from_keys) == len(_OPTIONS) and arch == arch_string(**from_keys):
      from_arch = dict(from_keys)
    # An option given by the caller settles a disagreement about it.
    clashing = [o for o in _OPTIONS if o in from_keys and o not in overrides and from_keys[o] != from_arch[o]]
    if clashing:
      clashes = [f"arch {arch!r} says {o}={from_arch[o]!r} but the checkpoint's {_KEYS[o]} is {from_keys[o]!r}"
                 for o in clashing]
      hint = {'depth_activation': ' (give the activation explicitly: python -m depthnet_jax.torch_import ... '
                                  '--depth_activation elu|none)',
              'clamp': ' (give it explicitly: python -m depthnet_jax.torch_import ... --clamp or --no-clamp)'}
      raise TorchCheckpointError(f'{source}: contradicts itself: ' + '; '.join(clashes)
                                 + ''.join(hint.get(o, '') for o in clashing))

  options: dict[str, Any] = {}
  origin: dict[str, str] = {}
  for o in _OPTIONS:
    if o in overrides:
      options[o], origin[o] = overrides[o], 'given'
    elif o in from_keys:
      options[o], origin[o] = from_keys[o], f"the checkpoint's {_KEYS[o]}"
    elif o in from_arch:
      options[o], origin[o] = from_arch[o], f'arch {arch!r}'
  options.setdefault('batch_norm', 'conv1.1.running_mean' in stripped)
  options.setdefault('clamp', False)
  options.setdefault('with_confidence', getattr(stripped.get('predict_depth2.weight'), 'shape', (1,))[0] == 2)
  if 'depth_activation' not in options:
    raise TorchCheckpointError(f'{source}: the checkpoint does not say which depth activation it was trained '
                               "with; give it (depth_activation='elu' or None; python -m depthnet_jax.torch_import ... "
                               '--depth_activation elu|none)')
  try:
    options['depth_activation'] = normalize_depth_activation(options['depth_activation'])
  except ValueError:
    raise TorchCheckpointError(
        f"{source}: activation {options['depth_activation']!r} ({origin['depth_activation']}) cannot be run: "
        "DepthNet supports 'elu' (depth = elu(x) + 1) and None (identity), as the original does; give the "
        'activation explicitly (python -m depthnet_jax.torch_import ... --depth_activation elu|none) only if you '
        'know the weights were trained with it') from None
  return options


def _close(value, expected: list[float]) -> bool:
  try:
    return np.shape(value) == np.shape(expected) and bool(np.allclose(np.asarray(value, np.float64), expected))
  except (TypeError, ValueError):
    return False


def read_checkpoint(path: str | os.PathLike, **overrides) -> tuple[dict, dict[str, Any], dict[str, Any]]:
  """Reads and converts a torch DepthNet checkpoint.

  Args:
    path: a `.pth.tar` written by the original's train.py (or a bare DepthNet state_dict), either torch format.
    **overrides: `batch_norm`, `depth_activation`, `clamp` or `with_confidence`, to replace or supply what the
      checkpoint says (a bare state_dict cannot say which depth activation it was trained with).

  Returns:
    (pure state dict for `DepthNet(**options)`, options, metadata about the source).

  Raises:
    TorchCheckpointError: the file is not a readable DepthNet checkpoint, contradicts itself, or asks for an
      activation the network cannot run; the message names the file and what was expected.
    FileNotFoundError, IsADirectoryError: no such file.
  """
  path = os.path.abspath(os.fspath(path))
  unknown = set(overrides) - set(_OPTIONS)
  if unknown:
    raise TypeError(f'unknown option(s) {sorted(unknown)}')
  if os.path.isdir(path):
    raise IsADirectoryError(f'{path} is a directory, expected a .pth.tar file written by torch.save')
  try:
    obj = torch_pickle.load(path)
  except (FileNotFoundError, IsADirectoryError):
    raise
  except OSError as e:
    raise TorchCheckpointError(f'{path}: cannot be read ({e.strerror or e})') from None
  if isinstance(obj, dict) and 'state_dict' in obj:
    meta, state_dict = obj, obj['state_dict']
  elif isinstance(obj, dict) and obj and all(isinstance(v, np.ndarray) for v in obj.values()):
    meta, state_dict = {}, obj
  else:
    raise TorchCheckpointError(f'{path}: holds a {type(obj).__name__} with keys '
                               f'{sorted(map(str, obj))[:8] if isinstance(obj, dict) else "-"}, neither the '
                               'checkpoint dict of DepthNet\'s train.py (with a state_dict) nor a state_dict')
  if not isinstance(state_dict, dict):
    raise TorchCheckpointError(f'{path}: state_dict is a {type(state_dict).__name__}, not a dict of tensors')
  stripped, prefixed = _strip_prefix(state_dict)
  options = _options(meta, stripped, overrides, path)

  mean, std = meta.get('mean', _INPUT_MEAN), meta.get('std', _INPUT_STD)
  if not (_close(mean, _INPUT_MEAN) and _close(std, _INPUT_STD)):
    raise TorchCheckpointError(f'{path}: trained with input mean {mean} and std {std}; DepthNet here normalises '
                               f'with mean {_INPUT_MEAN} and std {_INPUT_STD}, as the original does')
  state = convert_state_dict(stripped, options, source=path)
  best = meta.get('best_error', meta.get('best_EPE'))
  info = {
      'source': path,
      'source_format': torch_pickle.file_format(path),
      'module_prefix_stripped': prefixed,
      'arch': _scalar(meta.get('arch')),
      'epoch': _scalar(meta.get('epoch')),
      'best_error': _scalar(best),
      'num_tensors': len(_flatten(state)),
      # The original trained on Still Box only: its depths assume 0.3 m between the pair's frames.
      'displacement': NOMINAL_DISPLACEMENT,
  }
  return state, options, info


def _build(state: dict, options: dict[str, Any]) -> models.DepthNet:
  graphdef, abstract = nnx.split(models.abstract_model(ModelSpec(**options)))
  nnx.replace_by_pure_dict(abstract, state)
  model = nnx.merge(graphdef, abstract)
  model.eval()
  return model


def load(path: str | os.PathLike, **overrides) -> models.DepthNet:
  """A ready `DepthNet` (eval mode) with the weights and options of a torch checkpoint; see read_checkpoint."""
  state, options, _ = read_checkpoint(path, **overrides)
  return _build(state, options)


def check_paths(path: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False
                ) -> tuple[str, str]:
  """Checks the input file and the output directory before anything is read or written; returns both, absolute.

  The output must be a writable directory that does not exist yet or is empty; with `overwrite` it may hold
  a previous model checkpoint and nothing else (`checkpointing.check_replaceable`). It is replaced as a whole,
  so it must never hold the input file (not even under another name, through a symbolic link).

  Raises:
    cli.UserError: naming the input or the output, what is wrong and what was expected.
  """
  path, out = os.path.abspath(os.fspath(path)), os.path.abspath(os.fspath(out_dir))
  if not os.path.lexists(path):
    raise cli.UserError(f'checkpoint {path}: no such file; expected a .pth.tar written by torch.save')
  if os.path.isdir(path):
    hint = (' (it is a depthnet-jax checkpoint already: give it to infer.py --checkpoint as it is)'
            if os.path.isdir(os.path.join(path, checkpointing.CONFIG_ITEM)) else '')
    raise cli.UserError(f'checkpoint {path}: is a directory, expected a .pth.tar file written by torch.save{hint}')
  if not os.path.isfile(path):
    raise cli.UserError(f'checkpoint {path}: is not a regular file (a broken link, a pipe or a device); expected a '
                        '.pth.tar file written by torch.save')
  real_path, real_out = os.path.realpath(path), os.path.realpath(out)
  if real_path == real_out or real_path.startswith(real_out.rstrip(os.sep) + os.sep):
    raise cli.UserError(f'checkpoint {path} is inside OUT_DIR {out}, which is written as a whole (and with '
                        '--overwrite replaced): choose an OUT_DIR that does not hold the input')
  cli.check_writable_dir(out, 'OUT_DIR')
  if os.path.isdir(out) and os.listdir(out):
    if not overwrite:
      held = cli.shown_names(sorted(os.listdir(out)))
      raise cli.UserError(f'OUT_DIR {out} exists and is not empty (it holds {held}); choose a new or '
                          'empty directory, or pass --overwrite to replace a previous model checkpoint there')
    if os.path.islink(out):
      raise cli.UserError(f'OUT_DIR {out} is a symbolic link to {real_out}; --overwrite replaces a directory, '
                          'not a link: give the directory itself')
    try:
      checkpointing.check_replaceable(out)
    except FileExistsError as e:
      raise cli.UserError(f'OUT_DIR {e}') from None
  return path, out


def convert(path: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False,
            **overrides) -> dict[str, Any]:
  """Converts a torch checkpoint into an Orbax model checkpoint at `out_dir`; returns what it wrote.

  The paths are checked first (`check_paths`), then everything is read and checked before anything is
  written, and the checkpoint is renamed into place only when complete: a failure leaves `out_dir` as it was.

  Raises:
    cli.UserError: a bad input path or output directory (see check_paths).
    TorchCheckpointError: the file is not a DepthNet checkpoint this network can run (see read_checkpoint).
  """
  path, out = check_paths(path, out_dir, overwrite=overwrite)
  state, options, info = read_checkpoint(path, **overrides)
  model = _build(state, options)
  # save_model writes beside OUT_DIR and renames into place; it removes its temporary on any failure or Ctrl-C.
  out = checkpointing.save_model(out, model, metadata=info, overwrite=overwrite)
  counts = {
      'parameters': models.count_params(model),
      'batch_statistics': sum(np.size(v) for v in _flatten(nnx.state(model, nnx.BatchStat).to_pure_dict()).values()),
  }
  return dict(info, options=options, output=out, **counts)
