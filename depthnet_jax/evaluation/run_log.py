"""A training run's scalars, read from the TensorBoard event files `train.py` writes in its workdir.

    curves = run_log.read_scalars('runs/reference64')   # {'train_loss': [(step, value), ...], 'eval_depth_error': ...}

The files are TFRecord frames (little-endian u64 length, u32 masked CRC, an `Event` protobuf, u32 masked CRC);
the protobuf classes come from the `tensorboard` package, so reading needs no TensorFlow. A resumed run appends a
new event file and logs again the steps after its last checkpoint: for a step logged more than once the last
value written wins (files in the order they were written).
"""

from __future__ import annotations

import glob
import os
import struct

import numpy as np

from depthnet_jax.common import cli


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
  with open(path, 'rb') as f:
    data = f.read()
  offset = 0
  while offset + 12 <= len(data):
    (length,) = struct.unpack_from('<Q', data, offset)
    start, end = offset + 12, offset + 12 + length
    if end + 4 > len(data):   # the tail a running (or killed) writer has not finished: ignored
      return
    yield data[start:end]
    offset = end + 4


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
    try:
      for record in _records(path):
        event = event_pb2.Event.FromString(record)
        for value in event.summary.value:
          x = _value(value)
          if x is not None:
            by_tag.setdefault(value.tag, {})[int(event.step)] = x
    except Exception as e:   # a damaged file: one line naming it
      raise RunLogError(f'{path}: not a readable TensorBoard event file ({type(e).__name__}: {e})') from e
  return {tag: sorted(steps.items()) for tag, steps in by_tag.items()}
