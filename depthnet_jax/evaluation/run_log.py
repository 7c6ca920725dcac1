"""A training run's scalars, read from the TensorBoard event files `train.py` writes in its workdir.

    curves = run_log.read_scalars('runs/reference64')   # {'train_loss': [(step, value), ...], 'eval_depth_error': ...}

The files are TFRecord frames (little-endian u64 length, u32 masked CRC-32C of the length, an `Event` protobuf,
u32 masked CRC-32C of the data); both checksums are verified (`common.crc32c`), and a record that fails one is a
`RunLogError` naming the file and the record's byte offset. A record cut short at the end of a file (the file of a
running training, or of one killed while writing) is where the file ends, not an error. The protobuf classes come
from the `tensorboard` package, so reading needs no TensorFlow. A resumed run appends a new event file and logs
again the steps after its last checkpoint: for a step logged more than once the last value written wins (files in
the order they were written).
"""

from __future__ import annotations

import glob
import os
import struct

import numpy as np

from depthnet_jax.common import cli, crc32c


class RunLogError(cli.UserError):
  """A workdir without event files, or an event file that cannot be read."""


def event_files(workdir: str) -> list[str]:
  """The workdir's event files in the order they were written (their names hold the start time)."""
  files = glob.glob(os.path.join(glob.escape(workdir), 'events.out.tfevents.*'))

  def started(path):
    parts = os.path.basename(path).split('.')
    return (int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 0, path)
  return sorted(files, key=started)


def _records(path: str):
  """(offset, data) of each whole record of a TFRecord file, both checksums verified; a RunLogError names the
  first record that fails one. A record cut short at the end (a writer still running, or killed) ends the file."""
  with open(path, 'rb') as f:
    data = f.read()
  offset = 0
  while offset + 12 <= len(data):
    (length,) = struct.unpack_from('<Q', data, offset)
    (length_crc,) = struct.unpack_from('<I', data, offset + 8)
    if crc32c.masked(data[offset:offset + 8]) != length_crc and not _frame_after(data, offset + 1):
      return   # nothing intact after it: what a writer left unfinished (e.g. blocks a crash left as zeros)
    _check(path, offset, 'length', crc32c.masked(data[offset:offset + 8]), length_crc)
    start, end = offset + 12, offset + 12 + length
    if end + 4 > len(data):   # the tail a running (or killed) writer has not finished: ignored
      return
    (data_crc,) = struct.unpack_from('<I', data, end)
    _check(path, offset, 'data', crc32c.masked(data[start:end]), data_crc)
    yield offset, data[start:end]
    offset = end + 4


def _frame_after(data: bytes, start: int, chunk: int = 1 << 22) -> bool:
  """Whether an intact frame header (8 bytes of length, then their masked CRC-32C) starts anywhere from `start`:
  a record whose length fails its checksum is damage if one does, the unfinished end of the file if none does."""
  array = np.frombuffer(data, np.uint8)
  for begin in range(start, len(array) - 11, chunk):
    window = array[begin:min(len(array), begin + chunk + 11)]
    stored = np.lib.stride_tricks.sliding_window_view(window[8:], 4).copy().view('<u4').ravel()
    if np.any(crc32c.masked_windows(window[:len(stored) + 7], 8) == stored):
      return True
  return False


def _check(path: str, offset: int, what: str, computed: int, stored: int) -> None:
  if computed != stored:
    raise RunLogError(f'{path}: not a readable TensorBoard event file: the record at byte {offset} fails the '
                      f'checksum of its {what} (stored masked CRC-32C {stored:#010x}, computed {computed:#010x}); '
                      'expected an intact TFRecord frame (the file is damaged: restore it or move it out of the '
                      'workdir)')


def _value(value) -> float | None:
  """The float of a scalar summary value (summary v1 `simple_value` or v2 scalar tensor), else None."""
  kind = value.WhichOneof('value')
  if kind == 'simple_value':
    return float(value.simple_value)
  if kind != 'tensor':
    return None
  tensor = value.tensor
  if tensor.tensor_shape.dim:   # images, histograms, text: not scalars
    return None
  dtypes = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}   # DT_FLOAT, DT_DOUBLE, DT_INT32, DT_INT64
  if tensor.dtype not in dtypes:
    return None
  if tensor.tensor_content:
    return float(np.frombuffer(tensor.tensor_content, dtypes[tensor.dtype])[0])
  for field in ('float_val', 'double_val', 'int_val', 'int64_val'):
    values = getattr(tensor, field)
    if len(values):
      return float(values[0])
  return None


def read_scalars(workdir: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...] sorted by step} of every scalar the run logged."""
  from tensorboard.compat.proto import event_pb2
  workdir = os.path.abspath(workdir)
  files = event_files(workdir)
  if not files:
    raise RunLogError(f'{workdir}: no TensorBoard event files (events.out.tfevents.*); expected the workdir of a '
                      'train.py run')
  by_tag: dict[str, dict[int, float]] = {}
  for path in files:
    for offset, record in _records(path):
      try:
        event = event_pb2.Event.FromString(record)
        scalars = [(value.tag, _value(value)) for value in event.summary.value]
      except Exception as e:   # checksums that hold on a record that is no Event (not TensorBoard's): one line
        raise RunLogError(f'{path}: not a readable TensorBoard event file: the record at byte {offset} is not an '
                          f'Event ({type(e).__name__}: {cli.one_line(e)})') from e
      for tag, x in scalars:
        if x is not None:
          by_tag.setdefault(tag, {})[int(event.step)] = x
  return {tag: sorted(steps.items()) for tag, steps in by_tag.items()}
