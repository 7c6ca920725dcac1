"""train.py's TensorBoard event files, written without TensorFlow.

clu's metric writers (`clu.metric_writers`) import TensorFlow, 7 to 8 s of every train.py start on 2 CPU cores,
only to write a few scalars and pictures. This writer writes the same events as theirs, with TensorBoard's own
protobufs in TFRecord framing with its CRCs (`common.crc32c`, what `run_log` verifies; not TensorBoard's
`EventFileWriter`, which imports TensorFlow when it is installed, and whose CRC is a byte-by-byte Python loop), in
a file named `events.out.tfevents.<start time>.<host>.<pid>.<n>.v2` as TensorFlow's, flushed after every write (a
learning curve read during the run sees every point logged), so TensorBoard, `run_log` and
`scripts/learning_curve.py` read them as before:

- scalars: summary-v2 float32 scalar tensors, the `scalars` plugin named on each tag's first value (as
  `tf.summary.scalar`);
- images: a string tensor [width, height, PNG...] of up to N pictures, the `images` plugin (as `tf.summary.image`);
- hyperparameters: the `hparams` plugin's session-start summary at step 0 (as clu's `write_hparams`).

As clu's `create_default_writer`, every scalar is also logged (absl, INFO: `[step] name=value, ...`), and the
processes other than 0 of a multi-process run write no file (`just_logging`).
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from typing import Any, Mapping

import cv2
import numpy as np
from absl import logging
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata

from depthnet_jax.common import crc32c

_FILES = itertools.count()   # the <n> of the file name: two writers of one process in one second differ


class EventWriter:
  """`write_scalars`, `write_images`, `write_hparams`, `flush` and `close` of clu's metric writers, into `logdir`."""

  def __init__(self, logdir: str, *, just_logging: bool = False):
    self._file = None
    self._described: set[str] = set()
    if not just_logging:
      os.makedirs(logdir, exist_ok=True)
      name = f'events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_FILES)}.v2'
      self._file = open(os.path.join(logdir, name), 'xb')   # noqa: SIM115 (closed by close())
      self._add(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))

  def _add(self, event) -> None:
    if self._file is not None:   # a TFRecord: length, its masked CRC-32C, the data, its masked CRC-32C
      data = event.SerializeToString()
      length = struct.pack('<Q', len(data))
      self._file.write(length + struct.pack('<I', crc32c.masked(length)) + data +
                       struct.pack('<I', crc32c.masked(data)))
      self._file.flush()

  def _write(self, step: int, values: list) -> None:
    self._add(event_pb2.Event(step=int(step), wall_time=time.time(), summary=summary_pb2.Summary(value=values)))

  def _metadata(self, tag: str, plugin) -> Any:
    """The plugin's summary metadata on a tag's first value only, as TensorFlow's writer does."""
    if tag in self._described:
      return None
    self._described.add(tag)
    return plugin.create_summary_metadata(display_name=tag, description='')

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    logging.info('[%d] %s', step, ', '.join(f'{k}={v:.6g}' for k, v in scalars.items()))
    values = []
    for tag, value in scalars.items():
      tensor = tensor_pb2.TensorProto(dtype=1, float_val=[float(value)])   # DT_FLOAT, shape [] (a scalar)
      values.append(summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=self._metadata(tag, scalar_metadata)))
    self._write(step, values)

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """`images`: name -> [N, H, W, 3] (or [H, W, 3]) uint8 RGB pictures."""
    logging.info('[%d] Got images: %s.', step, {k: np.shape(v) for k, v in images.items()})
    values = []
    for tag, pictures in images.items():
      pictures = np.asarray(pictures)
      pictures = pictures[None] if pictures.ndim == 3 else pictures
      if pictures.dtype != np.uint8 or pictures.ndim != 4 or pictures.shape[-1] != 3:
        raise ValueError(f'{tag}: expected [N, H, W, 3] uint8 pictures, got {pictures.dtype} {pictures.shape}')
      n, height, width = pictures.shape[:3]
      pngs = [cv2.imencode('.png', np.ascontiguousarray(p[..., ::-1]))[1].tobytes() for p in pictures]
      shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n + 2)])
      tensor = tensor_pb2.TensorProto(dtype=7, tensor_shape=shape,   # DT_STRING: width, height, the PNGs
                                      string_val=[str(width).encode(), str(height).encode(), *pngs])
      values.append(summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=self._metadata(tag, image_metadata)))
    self._write(step, values)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    self._add(event_pb2.Event(step=0, wall_time=time.time(), summary=hparams_summary.hparams_pb(dict(hparams))))

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None

