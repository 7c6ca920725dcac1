"""The command line of the PyTorch importer: `python -m depthnet_jax.torch_import CHECKPOINT OUT_DIR [options]`.

Parses the flags (cli.ArgumentParser: a usage error is one `error:` line and exit code 1, --debug adds the
traceback), converts with `torch_import.convert` (which checks OUT_DIR before reading the input, and everything
read before writing anything) and prints what it read and wrote. OUT_DIR is held for the whole run (`folder_lock`:
`.<name>.lock` beside it), so a second import into it is refused at once with one line naming the holder's pid. The
importer itself is `depthnet_jax.checkpoints.torch_import`; `depthnet_jax/torch_import.py` is the `python -m` entry
point.
"""

from __future__ import annotations

import argparse
from typing import Any

from depthnet_jax.checkpoints import torch_import
from depthnet_jax.common import cli, folder_lock
from depthnet_jax.model.spec import ModelSpec, normalize_depth_activation

_USAGE = ('python -m depthnet_jax.torch_import CHECKPOINT OUT_DIR [--overwrite] [--depth_activation elu|none] '
          '[--clamp | --no-clamp]')
# Besides cli.UserError: what the importer raises for a file that is not a checkpoint it can run, or a path that
# goes away or changes while it works.
USER_ERRORS = (torch_import.TorchCheckpointError, FileNotFoundError, FileExistsError, IsADirectoryError)


def parser() -> cli.ArgumentParser:
  result = cli.ArgumentParser(
      prog='python -m depthnet_jax.torch_import', usage_hint=_USAGE,
      description='Convert a PyTorch DepthNet checkpoint (.pth.tar, legacy or zip format) into an Orbax '
                  'checkpoint, without PyTorch and without running any code from the file.')
  result.add_argument('checkpoint', help='the .pth.tar file (e.g. DepthNet_elu_bn_64.pth.tar)')
  result.add_argument('out_dir', help='directory to write the Orbax checkpoint to (must not exist or be empty)')
  result.add_argument('--overwrite', action='store_true',
                      help='replace a previous model checkpoint in out_dir (never anything else)')
  result.add_argument('--depth_activation', choices=['elu', 'none'],
                      help='override (or supply, for a bare state_dict) the depth activation')
  result.add_argument('--clamp', action=argparse.BooleanOptionalAction, default=None,
                      help='override the clamp of the output to [10, 60] m')
  return result


def _work(args: argparse.Namespace) -> int:
  overrides: dict[str, Any] = {}
  if args.depth_activation is not None:
    overrides['depth_activation'] = normalize_depth_activation(args.depth_activation)
  if args.clamp is not None:
    overrides['clamp'] = args.clamp
  # The paths checked, then OUT_DIR held to the end (`folder_lock`, beside it: it is replaced whole): another
  # command writing it is refused before anything is read.
  _, out = torch_import.check_paths(args.checkpoint, args.out_dir, overwrite=args.overwrite)
  with folder_lock.hold(out, 'OUT_DIR', beside=True):
    result = torch_import.convert(args.checkpoint, args.out_dir, overwrite=args.overwrite, **overrides)
  print(f'read     {result["source"]} ({result["source_format"]} torch format'
        f'{", module. prefix stripped" if result["module_prefix_stripped"] else ""})')
  arch = f'arch {result["arch"]!r}, ' if result['arch'] is not None else ''
  print(f'model    DepthNet({ModelSpec(**result["options"]).describe()})'
        f'  {arch}epoch {result["epoch"]}, best error {result["best_error"]}')
  print(f'tensors  {result["num_tensors"]}: {result["parameters"]:,} parameters, '
        f'{result["batch_statistics"]:,} BatchNorm statistics')
  print(f'wrote    {result["output"]}')
  return 0


def main(argv: list[str] | None = None) -> int:
  """The command; returns its exit code (0, 1 for a user error, 130 for Ctrl-C)."""
  return cli.main(parser(), _work, argv, user_errors=USER_ERRORS)
