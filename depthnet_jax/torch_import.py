"""Imports the original's PyTorch checkpoints (`DepthNet_*.pth.tar`) without PyTorch.

The file is read by `depthnet_jax.torch_pickle` (both torch serialisations, allow-listed unpickling). The
checkpoint dict of the original's train.py (`state_dict`, `bn`, `with_confidence`, `activation_function`,
`clamp`, `arch`, `epoch`, `best_EPE` or `best_error`, `mean`, `std`) says which `DepthNet` to build; a bare
state_dict works too, with the options it cannot show given explicitly. Names are mapped (DataParallel's
`module.` prefix stripped; `conv1.0.weight` -> `conv1/conv/kernel`, `conv1.1.running_mean` -> `conv1/bn/mean`),
and so are layouts (conv OIHW -> HWIO; ConvTranspose IOHW -> spatially flipped HWIO).

    python -m depthnet_jax.torch_import DepthNet_elu_bn_64.pth.tar imported/depthnet64

writes an Orbax model checkpoint (`depthnet_jax.checkpointing.load_model` reads it back).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np
from flax import nnx

from depthnet_jax import checkpointing, models, torch_pickle

TorchCheckpointError = torch_pickle.TorchCheckpointError

_BN_NAMES = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean', 'var': 'running_var'}
_INPUT_MEAN, _INPUT_STD = [0.5, 0.5, 0.5], [0.2, 0.2, 0.2]


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
  abstract = nnx.state(checkpointing.abstract_model(options)).to_pure_dict()
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
  return ', '.join(f'{k}={options[k]!r}' for k in ('batch_norm', 'depth_activation', 'clamp', 'with_confidence'))


def _scalar(value):
  if isinstance(value, (np.ndarray, np.generic)) and np.size(value) == 1:
    return value.item()
  return value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)


def read_checkpoint(path: str | os.PathLike, **overrides) -> tuple[dict, dict[str, Any], dict[str, Any]]:
  """Reads and converts a torch DepthNet checkpoint.

  Args:
    path: a `.pth.tar` written by the original's train.py (or a bare DepthNet state_dict), either torch format.
    **overrides: `batch_norm`, `depth_activation`, `clamp` or `with_confidence`, to replace or supply what the
      checkpoint says (a bare state_dict cannot say which depth activation it was trained with).

  Returns:
    (pure state dict for `DepthNet(**options)`, options, metadata about the source).
  """
  path = os.path.abspath(os.fspath(path))
  unknown = set(overrides) - {'batch_norm', 'depth_activation', 'clamp', 'with_confidence'}
  if unknown:
    raise TypeError(f'unknown option(s) {sorted(unknown)}')
  obj = torch_pickle.load(path)
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
  arch = meta.get('arch')
  if arch is not None and str(arch).lower() != 'depthnet':
    raise TorchCheckpointError(f'{path}: unknown architecture {arch!r}; only DepthNet checkpoints can be imported')

  stripped, prefixed = _strip_prefix(state_dict)
  options: dict[str, Any] = {
      'batch_norm': bool(meta['bn']) if 'bn' in meta else 'conv1.1.running_mean' in stripped,
      'clamp': bool(meta.get('clamp', False)),
      'with_confidence': (bool(meta['with_confidence']) if 'with_confidence' in meta else
                          getattr(stripped.get('predict_depth2.weight'), 'shape', (1,))[0] == 2),
  }
  if 'activation_function' in meta:
    options['depth_activation'] = meta['activation_function']
  elif 'depth_activation' not in overrides:
    raise TorchCheckpointError(f'{path}: the checkpoint does not say which depth activation it was trained '
                               "with; give it (depth_activation='elu' or None; CLI: --depth_activation elu|none)")
  options.update(overrides)
  try:
    options['depth_activation'] = models.normalize_depth_activation(options['depth_activation'])
  except ValueError as e:
    raise TorchCheckpointError(f'{path}: {e}') from None

  mean, std = meta.get('mean', _INPUT_MEAN), meta.get('std', _INPUT_STD)
  if not (np.allclose(mean, _INPUT_MEAN) and np.allclose(std, _INPUT_STD)):
    raise TorchCheckpointError(f'{path}: trained with input mean {mean} and std {std}; DepthNet here normalises '
                               f'with mean {_INPUT_MEAN} and std {_INPUT_STD}, as the original does')
  state = convert_state_dict(stripped, options, source=path)
  best = meta.get('best_error', meta.get('best_EPE'))
  info = {
      'source': path,
      'source_format': torch_pickle.file_format(path),
      'module_prefix_stripped': prefixed,
      'epoch': _scalar(meta.get('epoch')),
      'best_error': _scalar(best),
      'num_tensors': len(_flatten(state)),
  }
  return state, options, info


def _build(state: dict, options: dict[str, Any]) -> models.DepthNet:
  graphdef, abstract = nnx.split(checkpointing.abstract_model(options))
  nnx.replace_by_pure_dict(abstract, state)
  model = nnx.merge(graphdef, abstract)
  model.eval()
  return model


def load(path: str | os.PathLike, **overrides) -> models.DepthNet:
  """A ready `DepthNet` (eval mode) with the weights and options of a torch checkpoint; see read_checkpoint."""
  state, options, _ = read_checkpoint(path, **overrides)
  return _build(state, options)


def convert(path: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False,
            **overrides) -> dict[str, Any]:
  """Converts a torch checkpoint into an Orbax model checkpoint at `out_dir`; returns what it wrote.

  Everything is read and checked before anything is written, and the checkpoint is renamed into place only
  when complete: a failure leaves `out_dir` as it was.
  """
  state, options, info = read_checkpoint(path, **overrides)
  model = _build(state, options)
  out = checkpointing.save_model(out_dir, model, metadata=info, overwrite=overwrite)
  counts = {
      'parameters': models.count_params(model),
      'batch_statistics': sum(np.size(v) for v in _flatten(nnx.state(model, nnx.BatchStat).to_pure_dict()).values()),
  }
  return dict(info, options=options, output=out, **counts)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m depthnet_jax.torch_import',
      description='Convert a PyTorch DepthNet checkpoint (.pth.tar, legacy or zip format) into an Orbax '
                  'checkpoint, without PyTorch and without running any code from the file.')
  parser.add_argument('checkpoint', help='the .pth.tar file (e.g. DepthNet_elu_bn_64.pth.tar)')
  parser.add_argument('out_dir', help='directory to write the Orbax checkpoint to (must not exist or be empty)')
  parser.add_argument('--overwrite', action='store_true', help='replace an existing out_dir')
  parser.add_argument('--depth_activation', choices=['elu', 'none'],
                      help='override (or supply, for a bare state_dict) the depth activation')
  parser.add_argument('--clamp', action=argparse.BooleanOptionalAction, default=None,
                      help='override the clamp of the output to [10, 60] m')
  args = parser.parse_args(argv)
  overrides: dict[str, Any] = {}
  if args.depth_activation is not None:
    overrides['depth_activation'] = models.normalize_depth_activation(args.depth_activation)
  if args.clamp is not None:
    overrides['clamp'] = args.clamp
  try:
    result = convert(args.checkpoint, args.out_dir, overwrite=args.overwrite, **overrides)
  except (TorchCheckpointError, FileNotFoundError, FileExistsError, IsADirectoryError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'read     {result["source"]} ({result["source_format"]} torch format'
        f'{", module. prefix stripped" if result["module_prefix_stripped"] else ""})')
  print(f'model    DepthNet({_format_options(result["options"])})'
        f'  epoch {result["epoch"]}, best error {result["best_error"]}')
  print(f'tensors  {result["num_tensors"]}: {result["parameters"]:,} parameters, '
        f'{result["batch_statistics"]:,} BatchNorm statistics')
  print(f'wrote    {result["output"]}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
