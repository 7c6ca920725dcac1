"""Throughput of the data path: the renderer (scenes/s) and the grain pipeline (training pairs/s).

    .venv/bin/python benchmarks/input_pipeline.py [--scenes64 48 --scenes512 8 --batches 30]

Builds two small rendered datasets (64x64 and 512x512, 10 frames a scene) in a temporary folder, then measures
  * the renderer: `render_scene` in this process, scenes/s (one core);
  * the pipeline: batches of 16 from `make_iterator` with 0 (threads in this process), 1 and 2 worker
    processes, pairs/s after the first batch;
against a reference measured in the same run: the bare per-sample work (`TrainSample` called in a Python loop,
one thread: record read, two JPEG decodes, one depth decode, flips, normalisation). The ratio column is
pipeline / bare loop.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

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


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--scenes64', type=int, default=48, help='scenes rendered (and built) at 64x64')
  parser.add_argument('--scenes512', type=int, default=8, help='scenes rendered (and built) at 512x512')
  parser.add_argument('--batches', type=int, default=30, help='batches of 16 timed per pipeline setting')
  args = parser.parse_args()
  print(f'cores: {os.cpu_count()}; batch {BATCH}; 10 frames a scene')
  rows = []
  with tempfile.TemporaryDirectory() as data_dir:
    for resolution, scenes in ((64, args.scenes64), (512, args.scenes512)):
      rows.append((f'renderer {resolution}x{resolution}', 'scenes/s', _render_rate(resolution, min(scenes, 20)),
                   None))
      name = _build(data_dir, resolution, scenes)
      source = ip.open_source(name, 'train', data_dir)
      batches = args.batches if resolution == 64 else max(3, args.batches // 6)
      bare = _bare_rate(source, batches * BATCH)
      rows.append((f'bare sample loop {resolution}', 'pairs/s', bare, 1.0))
      for workers in (0, 1, 2):
        rate = _pipeline_rate(source, workers, batches)
        rows.append((f'pipeline {resolution}, {workers} workers', 'pairs/s', rate, rate / bare))
  print(f'\n| {"what":<28} | {"unit":<8} | {"rate":>9} | {"vs bare loop":>12} |')
  print(f'|{"-" * 30}|{"-" * 10}|{"-" * 11}|{"-" * 14}|')
  for what, unit, rate, ratio in rows:
    ratio_text = f'{ratio:.2f}x' if ratio is not None else ''
    print(f'| {what:<28} | {unit:<8} | {rate:>9.1f} | {ratio_text:>12} |')


if __name__ == '__main__':
  main()
