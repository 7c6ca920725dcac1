"""`python -m depthnet_jax.export --checkpoint C --format onnx|pth --out FILE`: a model for other runtimes.

- `--format onnx --out FILE.onnx`: the network as an ONNX graph (`model.onnx_graph`: input `image_pair`
  `[N, 6, H, W]` float32 normalised as in training, output `depth` `[N, H/4, W/4]`, N, H and W dynamic), for ONNX
  Runtime, TensorRT or any ONNX consumer. The checkpoint's record goes into the graph's metadata props: training
  size, FOV, nominal displacement, the model options, the normalisation, the source checkpoint and its step.
- `--format pth --out FILE.pth.tar`: the dict the original's train.py saves (`torch_save.original_checkpoint`), in
  PyTorch's zip format, written without PyTorch: `torch.load(FILE, weights_only=True)` and the original's
  `DepthNet(...).load_state_dict(checkpoint['state_dict'])` take it, as do its run_inference.py and the
  follow-up's test_depth.py; `python -m depthnet_jax.torch_import` reads back the same arrays, bit for bit.

C is a training workdir (its best checkpoint, or `--eval_checkpoint latest`), a model checkpoint directory or a
`.pth.tar`. Every user error (an unknown format, an output that exists without `--overwrite`, a folder that cannot
be written, a damaged checkpoint) is one `error:` line and exit code 1, before anything is written; the file
appears whole (a temporary beside it, renamed), and the checkpoint itself is never an output.
"""

from __future__ import annotations

import argparse
import os

from depthnet_jax.common import cli, folder_lock
from depthnet_jax.common.conventions import MEAN, STD

_PROG = 'python -m depthnet_jax.export'
FORMATS = {'onnx': ('.onnx',), 'pth': ('.pth.tar', '.pth', '.pt')}


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(prog=_PROG, description=__doc__.split('\n\n')[0],
                         usage_hint=f'{_PROG} --checkpoint PATH --format onnx|pth --out FILE')
  p.add_argument('--checkpoint', required=True,
                 help='a training workdir (its best checkpoint), a model checkpoint directory, or a .pth.tar')
  p.add_argument('--eval_checkpoint', choices=['best', 'latest'], default='best',
                 help='with a workdir: its best (default) or latest checkpoint')
  p.add_argument('--format', required=True, choices=sorted(FORMATS),
                 help='onnx: an ONNX graph (.onnx); pth: the original\'s train.py checkpoint (.pth.tar)')
  p.add_argument('--out', required=True, metavar='FILE', help='the file to write (.onnx, or .pth.tar / .pth)')
  p.add_argument('--overwrite', action='store_true', help='replace an existing --out file')
  return p


def check_args(a: argparse.Namespace) -> tuple[str, str]:
  """(checkpoint, out) as absolute paths, checked before anything is read: a mistake is a `cli.UserError`."""
  checkpoint = os.path.abspath(a.checkpoint) if a.checkpoint else ''
  if not checkpoint or not os.path.exists(checkpoint):
    raise cli.UserError(f'--checkpoint {checkpoint or repr(a.checkpoint)}: does not exist; expected a training '
                        'workdir, a checkpoint directory or a PyTorch .pth.tar')
  out = cli.check_output_file('--out', a.out, a.overwrite, FORMATS[a.format])
  real_out, real_in = os.path.realpath(out), os.path.realpath(checkpoint)
  if real_out == real_in or real_out.startswith(real_in.rstrip(os.sep) + os.sep):
    raise cli.UserError(f'--out {out}: is the checkpoint or inside it; expected a file outside {checkpoint}')
  return checkpoint, out


def _load(checkpoint: str, prefer: str):
  """(CheckpointInfo, its model_config or {} for a .pth.tar, the DepthNet); any failure is the flag's error."""
  from depthnet_jax.checkpoints import checkpointing, loading
  try:
    info = loading.checkpoint_info(checkpoint, prefer)
    config = {} if os.path.isfile(info.resolved) else checkpointing.read_model_config(info.resolved)
    model = loading.load_any(info.resolved, prefer)
  except loading.LOAD_ERRORS as e:
    raise cli.UserError(f'--checkpoint {checkpoint}: {cli.one_line(e)}') from e
  except Exception as e:  # noqa: BLE001 - a checkpoint that does not load (truncated, damaged, not ours)
    raise cli.UserError(f'--checkpoint {checkpoint}: cannot load it ({type(e).__name__}: {cli.one_line(e)[:300]}); '
                        'expected an intact checkpoint') from e
  return info, config, model


def metadata(info, config: dict) -> dict[str, str]:
  """The checkpoint's record as the ONNX graph's metadata props (strings; 'unknown' where it records nothing)."""
  size = info.train_size or ('unknown', 'unknown')
  error = config.get('eval_metrics', {}).get('depth_error')
  return {
      'train_height': str(size[0]), 'train_width': str(size[1]),
      'train_fov': repr(info.train_fov) if info.train_fov else 'unknown',
      'nominal_displacement': repr(info.displacement),
      'nominal_displacement_recorded': str(info.displacement_recorded),
      'input': 'image_pair [N, 6, H, W] float32: frames 1 and 2 (RGB each), (x / 255 - mean) / std',
      'output': 'depth [N, ceil(H/4), ceil(W/4)] metres at the nominal displacement (confidence: [..., 2])',
      'mean': repr(MEAN), 'std': repr(STD),
      'source_checkpoint': info.resolved, 'step': str(config.get('step', 'unknown')),
      'eval_depth_error': repr(error) if error is not None else 'unknown',
  }


def _write_onnx(model, info, config: dict, out: str) -> str:
  from depthnet_jax.common import atomic
  from depthnet_jax.model import onnx_graph
  graph = onnx_graph.build(model, metadata=metadata(info, config))
  atomic.write_bytes(out, graph.SerializeToString())
  return f'ONNX opset {onnx_graph.OPSET}, {len(graph.graph.node)} nodes'


def _write_pth(model, config: dict, out: str) -> str:
  from depthnet_jax.checkpoints import torch_save
  error = config.get('eval_metrics', {}).get('depth_error')
  checkpoint = torch_save.original_checkpoint(model, epoch=int(config.get('step', 0)),
                                              best_error=float(error) if error is not None else -1.0)
  torch_save.save(checkpoint, out)
  return f'arch {checkpoint["arch"]!r}, {len(checkpoint["state_dict"])} tensors, epoch = step {checkpoint["epoch"]}'


def _work(a: argparse.Namespace) -> int:
  checkpoint, out = check_args(a)
  with folder_lock.hold(out, '--out', beside=True):
    info, config, model = _load(checkpoint, a.eval_checkpoint)
    model.eval()
    said = _write_onnx(model, info, config, out) if a.format == 'onnx' else _write_pth(model, config, out)
  print(f'read     {info.resolved}')
  print(f'model    DepthNet({model.spec.describe()})')
  print(f'wrote    {out} ({said})')
  return 0


def main(argv: list[str] | None = None) -> int:
  """The command; returns its exit code (0, 1 for a user error, 130 for Ctrl-C)."""
  return cli.main(parser(), _work, argv)
