"""`python -m depthnet_jax.evaluate --checkpoint PATH --dataset tfds_stillbox/synth64 --split validation` (a built
TFDS split) or `... --stillbox_tree ROOT/64` (a Still Box tree): evaluates any checkpoint on Still Box pairs.

PATH is a training workdir (its best checkpoint, or `--eval_checkpoint latest`), a checkpoint directory, or a
PyTorch `.pth.tar` (imported on the fly). The evaluation is `evaluate.evaluate`, training's own (its module
docstring describes the pairs and the two protocols, `--protocol original|followup`): with the original protocol
the figures are those `train.py --config.eval_only=True` prints and those training logs. A tree is read as records
of the TFDS format (`tree_source.TreeSource`) and every scene of it is evaluated.

Outputs: the two tables on stdout (`report.report`); `--json PATH`: metrics, bins, checkpoint, data, protocol,
shift, numbers of pairs and pixels, the scale factor (`report.to_json`); `--plot PATH.png`: the mean absolute
error against true depth over the pixel count (`charts.error_by_depth`). Files are written atomically and an
existing one is replaced only with `--overwrite`; each is held for the whole run (`folder_lock`: a hidden
`.<name>.lock` beside it), so another command writing the same file is refused at once. Progress (pairs done,
rate, ETA) goes to stderr.

Every user error (a missing checkpoint, an unknown dataset or split, a tree that is not Still Box, a flag out of
range, an existing output without --overwrite) is one `error:` line and exit code 1, found before the model
runs or anything is written; `--debug` (or DEPTHNET_DEBUG=1) adds the traceback. JAX is imported only after the
flags are checked. The data is checked before the checkpoint is read (a split's shards, `data.shards`; a tree's
speeds and time steps, `tree_source`), the checkpoint's recorded geometry before its weights
(`loading.recorded_geometry`); a record or depth map found damaged while evaluating is one line too. Data of
another size or FOV than the checkpoint's training one is evaluated as it is, with a `note:` line on stderr
(`geometry_note`); pairs whose camera stands still are skipped and counted (`evaluate.evaluate`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys

from depthnet_jax.common import atomic, cli, compile_cache, folder_lock, memory
from depthnet_jax.common.conventions import SHIFT
from depthnet_jax.evaluation import report
from depthnet_jax.evaluation.report import DEFAULT_BATCH_SIZE, PROTOCOLS
from tfds_stillbox import tree

_PROG = 'python -m depthnet_jax.evaluate'


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(prog=_PROG, description=__doc__.split('\n\n')[0],
                         usage_hint=f'{_PROG} --checkpoint PATH (--dataset NAME [--split SPLIT] | --stillbox_tree DIR)')
  p.add_argument('--checkpoint', required=True,
                 help='a training workdir (its best checkpoint), a checkpoint directory, or a PyTorch .pth.tar')
  p.add_argument('--eval_checkpoint', choices=['best', 'latest'], default='best',
                 help="with a workdir: its best (default) or latest checkpoint")
  p.add_argument('--dataset', default=None,
                 help="a built TFDS dataset, e.g. tfds_stillbox/synth64 (give it or --stillbox_tree)")
  p.add_argument('--split', default=None, help='split of --dataset, default validation')
  p.add_argument('--data_dir', default=None, help='TFDS data_dir of --dataset (default $TFDS_DATA_DIR or '
                 '~/tensorflow_datasets)')
  p.add_argument('--stillbox_tree', default=None, metavar='DIR',
                 help='a Still Box tree at one resolution, e.g. STILLBOX/64 (<k>/metadata.json inside) or what '
                      'python -m tfds_stillbox.render exports; every scene of it is evaluated')
  p.add_argument('--protocol', choices=PROTOCOLS, default='original',
                 help="'original' (training's evaluation, the paper's; default) or 'followup' (unsupervised-"
                      "depthnet's test_depth.py)")
  p.add_argument('--shift', type=int, default=SHIFT, help=f'pairs are (i, i + shift); 1 to frames - 1, '
                 f'default {SHIFT}')
  p.add_argument('--stabilize', action='store_true',
                 help="with --stillbox_tree of a rotated Still Box (metadata 'orientation' per frame): each pair's "
                      "first frame warped into the second's orientation (K R K^-1), as the follow-up's "
                      '--stabilize-from-GT; pixels with no source are not evaluated')
  p.add_argument('--choose_shift', action='store_true',
                 help="with --protocol followup: the follow-up's per-frame choice: each scene's last frame from "
                      'the candidate pair (j - k, j), k = 1..frames - 1, whose mean output is closest to 50 m '
                      '(--shift is not used)')
  p.add_argument('--batch_size', type=int, default=DEFAULT_BATCH_SIZE,
                 help=f'pairs per network call, >= 1 and a multiple of the devices, at most what the memory holds '
                      f'(more than the data\'s pairs: its pairs); default {DEFAULT_BATCH_SIZE}')
  p.add_argument('--json', default=None, metavar='PATH', help='write the metrics, bins and settings as JSON')
  p.add_argument('--plot', default=None, metavar='PNG', help='draw the error against true depth (a .png)')
  p.add_argument('--overwrite', action='store_true', help='replace an existing --json or --plot file')
  p.add_argument('--runtime', choices=('auto', 'jax', 'onnx'), default='jax',
                 help='what runs the network: jax (default: the figures training prints), onnx (ONNX Runtime, '
                 'faster on a CPU; the same figures within 1e-4 relative) or auto (onnx when JAX has only the CPU)')
  p.add_argument('--compilation_cache', default='', metavar='DIR', help=compile_cache.FLAG_HELP)
  p.add_argument('--no_compilation_cache', action='store_true', help=compile_cache.OFF_FLAG_HELP)
  return p


@dataclasses.dataclass
class Args:
  """The checked flags."""
  checkpoint: str
  eval_checkpoint: str
  dataset: str | None
  split: str
  data_dir: str | None
  tree: str | None
  protocol: str
  shift: int
  batch_size: int
  json: str | None
  plot: str | None
  overwrite: bool
  compilation_cache: str
  no_compilation_cache: bool
  stabilize: bool = False
  choose_shift: bool = False
  runtime: str = 'jax'


def _check_data(a: argparse.Namespace) -> str | None:
  """--dataset (with --split, --data_dir) or --stillbox_tree, exactly one; the tree's absolute path or None."""
  if (a.dataset is None) == (a.stillbox_tree is None):
    raise cli.UserError('--dataset and --stillbox_tree: expected exactly one of them (the data to evaluate on), '
                        f'got {"both" if a.dataset is not None else "neither"}')
  if a.stillbox_tree is not None:
    for flag, value in (('--split', a.split), ('--data_dir', a.data_dir)):
      if value is not None:
        raise cli.UserError(f'{flag}={value!r}: only with --dataset (a Still Box tree is evaluated whole)')
    root = os.path.abspath(a.stillbox_tree)
    if not os.path.isdir(root):
      raise cli.UserError(f'--stillbox_tree {root}: {"is a file" if os.path.exists(root) else "does not exist"}; '
                          'expected the folder of a Still Box tree (<k>/metadata.json inside)')
    return root
  if not a.dataset.strip():
    raise cli.UserError("--dataset='': expected a built dataset such as tfds_stillbox/synth64")
  if a.split is not None and not a.split.strip():
    raise cli.UserError("--split='': expected a split of the dataset, e.g. validation")
  if a.data_dir is not None and not os.path.isdir(a.data_dir):
    raise cli.UserError(f'--data_dir {os.path.abspath(a.data_dir)}: '
                        f'{"is a file" if os.path.exists(a.data_dir) else "does not exist"}; expected the TFDS '
                        'data_dir the dataset was built in')
  return None


def check_args(a: argparse.Namespace) -> Args:
  """The parsed flags, checked without JAX, the dataset or the model: a mistake is a `cli.UserError`."""
  root = _check_data(a)
  checkpoint = os.path.abspath(a.checkpoint) if a.checkpoint else ''
  if not checkpoint or not os.path.exists(checkpoint):
    raise cli.UserError(f'--checkpoint {checkpoint or repr(a.checkpoint)}: does not exist; expected a training '
                        'workdir, a checkpoint directory or a PyTorch .pth.tar')
  shift = cli.check_int('--shift', a.shift, 1)
  batch_size = cli.check_int('--batch_size', a.batch_size, 1)
  json_path = cli.check_output_file('--json', a.json, a.overwrite, ('.json',))
  plot_path = cli.check_output_file('--plot', a.plot, a.overwrite, ('.png',))
  if json_path and json_path == plot_path:
    raise cli.UserError(f'--json and --plot: both are {json_path}; expected two files')
  compile_cache.check_flag(a.compilation_cache, a.no_compilation_cache)
  if a.stabilize and root is None:
    raise cli.UserError(f'--stabilize with --dataset={a.dataset!r}: expected --stillbox_tree (a built split holds '
                        'no orientations)')
  if a.choose_shift and a.protocol != 'followup':
    raise cli.UserError(f"--choose_shift with --protocol {a.protocol}: expected --protocol followup (the "
                        'follow-up\'s choice among candidate pairs)')
  return Args(checkpoint, a.eval_checkpoint, a.dataset, a.split or 'validation', a.data_dir, root, a.protocol,
              shift, batch_size, json_path, plot_path, a.overwrite, a.compilation_cache, a.no_compilation_cache,
              bool(a.stabilize), bool(a.choose_shift), getattr(a, 'runtime', 'jax'))


# The functions below run after the flags are checked; their imports inside them keep JAX (and the plotting
# library) out of the checks.

def _open_data(args: Args):
  """(source, its name, the JSON's data entry): the tree or the split, checked against --shift."""
  from depthnet_jax.data import input_pipeline, tree_source
  if args.tree:
    source = tree_source.open_tree(args.tree)
    name, data = args.tree, {'stillbox_tree': args.tree}
  else:
    source = tree_source.open_dataset(args.dataset, args.split, args.data_dir)
    name = f'{args.dataset}:{args.split}'
    data = {'dataset': args.dataset, 'split': args.split,
            'data_dir': os.path.abspath(args.data_dir) if args.data_dir else None}
  first = source[0]
  frames = input_pipeline.frames_per_scene(source)
  if args.shift >= frames:
    raise cli.UserError(f'--shift={args.shift}: expected an integer from 1 to {frames - 1} (the scenes of '
                        f'{name} have {frames} frames)')
  if args.tree and len(source.still_scenes(args.shift)) == len(source):   # from the metadata: before the model
    _refuse_all_still(args, len(source) * (frames - args.shift))
  data.update(scenes=len(source), frames=frames, height=int(first['height']), width=int(first['width']))
  return source, name, data


def geometry_note(info, data: dict, fov: float) -> str | None:
  """A one-line note when the data's image size (`data`'s height and width) or FOV is not the checkpoint's
  training one, else None.

  The evaluation runs at the data's own size, unresized (the protocols compare with the ground truth at its
  resolution), and says so: the network's depths assume the focal length in pixels it learned, so on frames of
  another focal length they come out scaled by about f_train / f_data (infer.py resizes footage to the training
  focal length instead: docs/evaluation.md)."""
  from depthnet_jax.common import geometry
  differ = []
  if info.train_size and tuple(info.train_size) != (data['height'], data['width']):
    differ.append(f'trained at {info.train_size[1]}x{info.train_size[0]}, the data is {data["width"]}x'
                  f'{data["height"]} (width x height)')
  if info.train_fov and abs(info.train_fov - fov) > 1e-6:
    differ.append(f'trained at a FOV of {info.train_fov:g} deg, the data\'s is {fov:g} deg')
  if not differ:
    return None
  ratio = (geometry.focal_length(info.train_size[1] if info.train_size else data['width'],
                                 info.train_fov or fov) / geometry.focal_length(data['width'], fov))
  return (f'note: --checkpoint {info.resolved} was {"; ".join(differ)}: evaluated at the data\'s size, not resized; '
          f'its depths assume the focal length it learned, so expect them scaled by about {ratio:.3g} '
          '(f_train / f_data; infer.py resizes to the training focal length)')


def _load(args: Args):
  """(CheckpointInfo, model) of --checkpoint; anything that keeps it from loading is the flag's error."""
  from depthnet_jax.checkpoints import checkpointing, loading, torch_import
  try:
    info = loading.checkpoint_info(args.checkpoint, args.eval_checkpoint)
    model = loading.load_any(info.resolved, args.eval_checkpoint)
  except (checkpointing.CheckpointError, torch_import.TorchCheckpointError, ValueError, OSError) as e:
    raise cli.UserError(f'--checkpoint {args.checkpoint}: {cli.one_line(e)}') from e
  return info, model


def _network(args: Args, model):
  """The ONNX Runtime network of the model if --runtime resolves to onnx, else None (JAX evaluates it)."""
  from depthnet_jax.model import runtimes
  return runtimes.OnnxNetwork(model) if runtimes.resolve(args.runtime) == 'onnx' else None


def run(args: Args, *, stdout=None) -> report.Evaluation:
  """Opens the data and the checkpoint (checks that need them), evaluates, prints, writes --json and --plot."""
  stdout = stdout or sys.stdout
  compile_cache.enable(args.compilation_cache, disabled=args.no_compilation_cache)
  from absl import logging
  logging.set_verbosity(logging.WARNING)   # Orbax logs every file it reads at INFO
  from flax import nnx

  from depthnet_jax.data import sharding
  from depthnet_jax.evaluation import evaluate
  from depthnet_jax.model import models
  source, data_name, data = _open_data(args)
  bounded_batch(args, data)   # before the model loads
  info, model = _load(args)
  note = geometry_note(info, data, float(source[0]['fov']))
  if note:
    print(note, file=sys.stderr, flush=True)
  mesh = sharding.make_mesh()
  sharding.check_batch_size(args.batch_size, mesh, '--batch_size')
  batch_size = bounded_batch(args, data, mesh.size)
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  params, batch_stats = sharding.replicate((params, batch_stats), mesh)
  network = _network(args, model)
  if args.stabilize and not source.rotates:
    print(f'note: --stabilize: the scenes of {data_name} record no orientation (a camera that does not rotate); '
          'nothing to stabilize', file=sys.stderr, flush=True)
  if args.choose_shift:
    from depthnet_jax.evaluation import choose
    result = choose.evaluate_choose(graphdef, params, batch_stats, source, nominal=info.displacement,
                                    stabilize=args.stabilize, batch_size=batch_size, mesh=mesh, show_progress=True,
                                    network=network)
  else:
    result = evaluate.evaluate(graphdef, params, batch_stats, source, protocol=args.protocol, shift=args.shift,
                               batch_size=batch_size, nominal=info.displacement, mesh=mesh, show_progress=True,
                               stabilize=args.stabilize, network=network)
  if result.skipped == result.pairs:   # a built split's speeds are known once its records are read
    _refuse_all_still(args, result.pairs)
  oh, ow = models.output_sizes(data['height'], data['width'])[0]
  resolution = f'input {data["width"]}x{data["height"]}, network output {ow}x{oh}'
  print(report.report(result, info.resolved, data_name, args.shift, resolution), file=stdout, flush=True)
  checkpoint = {'path': args.checkpoint, 'resolved': info.resolved, 'nominal_displacement': info.displacement,
                'displacement_recorded': info.displacement_recorded, 'train_size': info.train_size,
                'train_fov': info.train_fov, **model.options()}
  document = report.to_json(result, checkpoint=checkpoint, data=data, shift=args.shift)
  document.update(stabilize=args.stabilize, choose_shift=args.choose_shift,
                  runtime='jax' if network is None else 'onnx')
  title = f'{_short(info.resolved)} - {args.protocol} protocol, {data_name}'
  for path in _write_outputs(args, document, result.bins, title):
    print(f'wrote {path}', file=stdout, flush=True)
  return result


def bounded_batch(args: Args, data: dict, devices: int = 1) -> int:
  """--batch_size bounded by the work (a batch of more pairs than the data holds would be padding: at most its
  pairs, rounded up to a multiple of the devices; the metrics are the same) and by the machine's memory
  (`memory.check_count`: a `cli.UserError` stating the bound)."""
  pairs = data['scenes'] * (data['frames'] - args.shift)
  batch = min(args.batch_size, -(-pairs // devices) * devices)
  h, w = data['height'], data['width']
  memory.check_count('--batch_size', args.batch_size, memory.EVAL_BYTES_PER_PIXEL * h * w, f'a pair of {w}x{h} frames',
                     used=batch)
  return batch


def _refuse_all_still(args: Args, pairs: int) -> None:
  flag = f'--stillbox_tree {args.tree}' if args.tree else f'--dataset={args.dataset!r} --split={args.split!r}'
  raise cli.UserError(f'{flag}: the camera of every scene stands still (speed 0: all {pairs} pairs skipped, nothing '
                      'to measure); expected scenes whose camera moves')


def _write_outputs(args: Args, document: dict, bins: list[dict], title: str) -> list[str]:
  """Writes --json (the document) and --plot (the error by depth of `bins`); the paths written."""
  from depthnet_jax.evaluation import charts
  written = []
  try:
    for path in (args.json, args.plot):
      if path:
        atomic.make_dirs(os.path.dirname(path))
    if args.json:
      written.append(atomic.write_text(args.json, json.dumps(document, indent=2) + '\n', overwrite=args.overwrite))
    if args.plot:
      written.append(atomic.write_png(args.plot, charts.error_by_depth(bins, title), overwrite=args.overwrite))
  except FileExistsError as e:
    raise cli.UserError(f'{cli.one_line(e)} (pass --overwrite to replace it)') from e
  return written


def _short(path: str, parts: int = 3) -> str:
  """The last `parts` components of a path (a workdir's best/<step> keeps the run's name)."""
  pieces = os.path.normpath(path).split(os.sep)
  return os.sep.join(pieces[-parts:])


def _work(namespace: argparse.Namespace) -> int:
  args = check_args(namespace)
  with contextlib.ExitStack() as held:
    for flag, path in (('--json', args.json), ('--plot', args.plot)):
      if path:   # one writer per output (`folder_lock`, beside the file): another command writing it is refused
        held.enter_context(folder_lock.hold(path, flag, beside=True))
    try:
      run(args)
    except tree.StillBoxFormatError as e:   # a file of the tree found damaged while reading it
      raise cli.UserError(f'--stillbox_tree {args.tree}: {cli.one_line(e)}') from e
  return 0


def main(argv: list[str] | None = None) -> int:
  """The command; its exit code (0, 1 for a user error, 130 for Ctrl-C)."""
  return cli.main(parser(), _work, argv)


if __name__ == '__main__':
  sys.exit(main())
