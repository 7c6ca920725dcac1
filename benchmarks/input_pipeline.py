"""Throughput of the data path: the renderer (scenes/s) and the grain pipeline (training pairs/s).

    .venv/bin/python benchmarks/input_pipeline.py [--scenes64 48 --scenes512 8 --batches 30 --workers 0 1 2]
    .venv/bin/python benchmarks/input_pipeline.py --dataset tfds_stillbox/synth64 --data_dir DIR   # a built one

Builds two small rendered datasets (64x64 and 512x512, 10 frames a scene) in a temporary folder (or takes the
built `--dataset` of `--data_dir`), then measures
  * the renderer: `render_scene` in this process, scenes/s (one core), at the datasets' resolutions;
  * the pipeline: batches of 16 from `make_iterator` with 0 (threads in this process), 1 and 2 worker
    processes (`--workers`), pairs/s after the first batch;
against a reference measured in the same run: the bare per-sample work (`TrainSample` called in a Python loop,
one thread: record read, two JPEG decodes, one depth decode, flips, normalisation). The ratio column is
pipeline / bare loop. `--smoke`: one scene rendered, 2 batches, 0 and 1 workers, on `--dataset` (default
tfds_stillbox/synth_tiny) if `--data_dir` is given, else on a 32x32 dataset of 4 scenes built here (checks that
it runs, measures nothing).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from depthnet_jax.common import cli
from depthnet_jax.data import input_pipeline as ip
from tfds_stillbox import tfds_stillbox_dataset_builder as stillbox
from tfds_stillbox.render.scenes import render_scene

BATCH = 16


def _render_rate(resolution: int, scenes: int) -> float:
  render_scene((1, 0), resolution)  # warm-up
  start = time.perf_counter()
  for i in range(scenes):
    render_scene((1, i + 1), resolution)
  return scenes / (time.perf_counter() - start)


def _build(data_dir: str, resolution: int, scenes: int) -> str:
  config = stillbox.StillBoxConfig(name=f'bench{resolution}', source='synth', resolution=resolution,
                                   num_scenes=scenes, num_frames=10, seed=7, train_percent=90)
  stillbox.Builder(config=config, data_dir=data_dir).download_and_prepare()
  return f'tfds_stillbox/bench{resolution}'


def _bare_rate(source, samples: int) -> float:
  steps = ip.steps_per_epoch(len(source), ip.frames_per_scene(source), BATCH)
  sample = ip.TrainSample(source, seed=0, shift=ip.SHIFT, layout=ip.Layout(BATCH), steps_per_epoch=steps)
  sample(0)
  start = time.perf_counter()
  for k in range(1, samples + 1):
    sample(k)
  return samples / (time.perf_counter() - start)


def _pipeline_rate(source, workers: int, batches: int) -> float:
  it = ip.make_iterator(ip.train_dataset(source, global_batch_size=BATCH, seed=0), worker_count=workers)
  next(it)  # start-up (worker processes, first reads) is not throughput
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  rate = batches * BATCH / (time.perf_counter() - start)
  del it
  return rate


def _datasets(args, data_dir: str) -> list[tuple[int, str, str]]:
  """(renderer scenes, dataset name, data_dir) of each dataset measured: `--dataset`'s, or built here."""
  if args.dataset or (args.smoke and args.data_dir):
    return [(1 if args.smoke else 20, args.dataset or 'tfds_stillbox/synth_tiny', args.data_dir)]
  sizes = ((32, 4),) if args.smoke else ((64, args.scenes64), (512, args.scenes512))
  return [(1 if args.smoke else min(scenes, 20), _build(data_dir, resolution, scenes), data_dir)
          for resolution, scenes in sizes]


def _rows(source, name: str, render_scenes: int, batches: int, workers: list[int]) -> list[tuple]:
  """The table rows of one dataset: the renderer at its resolution, the bare loop, the pipeline per worker count."""
  resolution = int(source[0]['height'])
  print(f'{name}: {len(source)} training scenes of {ip.frames_per_scene(source)} frames, {resolution}x{resolution}',
        flush=True)
  rows = [(f'renderer {resolution}x{resolution}', 'scenes/s', _render_rate(resolution, render_scenes), None)]
  bare = _bare_rate(source, batches * BATCH)
  rows.append((f'bare sample loop {resolution}', 'pairs/s', bare, 1.0))
  for count in workers:
    rate = _pipeline_rate(source, count, batches)
    rows.append((f'pipeline {resolution}, {count} workers', 'pairs/s', rate, rate / bare))
  return rows


def work(args) -> int:
  for flag in ('scenes64', 'scenes512', 'batches'):
    cli.check_int(f'--{flag}', getattr(args, flag), 1)
  workers = [0, 1] if args.smoke else [cli.check_int('--workers', n, 0) for n in args.workers]
  if bool(args.dataset) != bool(args.data_dir) and not args.smoke:
    raise cli.UserError('--dataset and --data_dir: expected both (a built dataset to measure) or neither')
  print(f'cores: {os.cpu_count()}; batch {BATCH}')
  rows = []
  with tempfile.TemporaryDirectory() as data_dir:
    for render_scenes, name, folder in _datasets(args, data_dir):
      try:
        source = ip.open_source(name, 'train', folder)
      except ip.DatasetNotBuiltError as e:
        raise cli.UserError(f'--dataset {name}: {cli.one_line(e)}') from None
      batches = 2 if args.smoke else args.batches if source[0]['height'] <= 64 else max(3, args.batches // 6)
      rows += _rows(source, name, render_scenes, batches, workers)
  print(f'\n| {"what":<28} | {"unit":<8} | {"rate":>9} | {"vs bare loop":>12} |')
  print(f'|{"-" * 30}|{"-" * 10}|{"-" * 11}|{"-" * 14}|')
  for what, unit, rate, ratio in rows:
    ratio_text = f'{ratio:.2f}x' if ratio is not None else ''
    print(f'| {what:<28} | {unit:<8} | {rate:>9.1f} | {ratio_text:>12} |')
  return 0


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--scenes64', type=int, default=48, help='scenes rendered (and built) at 64x64')
  p.add_argument('--scenes512', type=int, default=8, help='scenes rendered (and built) at 512x512')
  p.add_argument('--batches', type=int, default=30, help='batches of 16 timed per pipeline setting')
  p.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2], help='grain worker processes timed')
  p.add_argument('--dataset', default=None, help="a built dataset to measure instead ('tfds_stillbox/<config>')")
  p.add_argument('--data_dir', default=None, help='the TFDS data_dir of --dataset')
  p.add_argument('--smoke', action='store_true', help='tiny: checks that it runs (see above)')
  return p


def main(argv: list[str] | None = None) -> int:
  return cli.main(parser(), work, argv)


if __name__ == '__main__':
  sys.exit(main())
