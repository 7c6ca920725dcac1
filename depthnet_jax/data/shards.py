"""The ArrayRecord shards of a built split: checked when the split is opened, and a record found damaged later as
one line naming the shard file and the record.

    source = shards.checked(tfds.data_source(...))   # input_pipeline.open_source does this

At opening (`verify`), for every shard file the split's `dataset_info.json` lists (its file instructions: the file,
the records it holds, the ones the split reads): the file exists, its ArrayRecord footer and index can be read (a
truncated file fails here: Riegeli finds its postscript at the end), and the number of records the footer gives
equals the shard length `dataset_info.json` records (`shardLengths`). That is the size TFDS records per shard:
`numBytes` is the split's total of serialized examples before compression, not a file size, so it is not compared.
Opening a reader reads the footer and the index, not the records: milliseconds per shard.

A byte changed inside a record is found when the record is read (Riegeli hashes every chunk; each record is a chunk
of its own, the builder writing with group_size 1): `CheckedSource` turns Riegeli's RuntimeError into a
`DamagedRecordError` naming the shard file, the record's position in it and the scene's index in the split. Both
errors are `cli.UserError`s (one `error:` line); the damaged record's error is picklable, so that it reaches the
parent process unchanged from a grain worker (grain re-raises a worker's exception there).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import os
from typing import Any

from depthnet_jax.common import cli

_ADVICE = 'restore the file or rebuild the dataset'


class ShardError(cli.UserError):
  """A shard of a built split is missing, unreadable, or holds another number of records than dataset_info.json
  records for it."""


class DamagedRecordError(ShardError):
  """A record of a shard could not be read (a checksum failed); the message names the file and the record."""


@dataclasses.dataclass(frozen=True)
class Shard:
  """One file instruction of a split: records [skip, skip + take) of a file that holds `records` of them."""
  path: str
  skip: int
  take: int
  records: int


def shards_of(source) -> list[Shard]:
  """The shards a TFDS data source reads, in order, from its dataset_info (the file instructions TFDS computes)."""
  from tensorflow_datasets.core.data_sources import base
  return [Shard(os.fspath(fi.filename), int(fi.skip), int(fi.take), int(fi.examples_in_shard))
          for fi in base.file_instructions(source.dataset_info, source.split)]


def _record_count(path: str) -> tuple[int | None, str]:
  """(records, '') of an ArrayRecord file whose footer and index are readable, else (None, Riegeli's reason)."""
  from array_record.python import array_record_module
  try:
    reader = array_record_module.ArrayRecordReader(path, options='readahead_buffer_size:0')
  except (RuntimeError, ValueError, OSError) as e:
    return None, cli.one_line(e)
  try:
    if reader.ok():
      return int(reader.num_records()), ''
    try:   # a reader that failed to open says why on its first use
      reader.read()
    except (RuntimeError, ValueError, OSError) as e:
      return None, cli.one_line(e)
    return None, 'the reader reports an error'
  finally:
    try:
      reader.close()
    except (RuntimeError, ValueError, OSError):   # a failed reader repeats its error when closed
      pass


def verify(source) -> list[Shard]:
  """Checks every shard of a TFDS data source (see the module docstring); raises `ShardError`, naming the file and
  what was expected. Returns the shards."""
  listed = shards_of(source)
  info = os.path.join(source.dataset_info.data_dir, 'dataset_info.json')
  split = str(source.split)
  for k, shard in enumerate(listed):
    what = f'shard {k + 1} of {len(listed)} of split {split!r}, {shard.records} records as {info} lists'
    if not os.path.isfile(shard.path):
      raise ShardError(f'{shard.path}: {"is not a file" if os.path.exists(shard.path) else "does not exist"}; '
                       f'expected {what} ({_ADVICE})')
    count, reason = _record_count(shard.path)
    if count is None:
      raise ShardError(f'{shard.path}: not a readable ArrayRecord file (truncated or damaged: {reason}); expected '
                       f'{what} ({_ADVICE})')
    if count != shard.records:
      raise ShardError(f'{shard.path}: holds {count} records, but {info} lists {shard.records} for it (shardLengths '
                       f'of split {split!r}); expected the two to agree (the file was replaced or dataset_info.json '
                       'edited: rebuild the dataset)')
  return listed


class CheckedSource:
  """A TFDS data source whose reading errors name the shard file and the record (`DamagedRecordError`); `len` and
  `[i]` as the source's, other attributes (`dataset_info`, `split`, ...) passed through. Picklable, as the source."""

  def __init__(self, source, listed: list[Shard]):
    self._source = source
    self._shards = listed
    self._ends = list(itertools.accumulate(s.take for s in listed))

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, key) -> Any:
    from google.protobuf.message import DecodeError
    try:
      return self._source[key]
    except (RuntimeError, DecodeError) as e:   # Riegeli's hash or framing error; a record that is no Example
      raise DamagedRecordError(self._damaged(int(key), e)) from e

  def _damaged(self, key: int, error: BaseException) -> str:
    k = bisect.bisect_right(self._ends, key)
    if k >= len(self._shards):
      return f'scene {key} of split {self._source.split!r} cannot be read ({cli.one_line(error)})'
    shard = self._shards[k]
    position = shard.skip + key - (self._ends[k - 1] if k else 0)
    return (f'{shard.path}: record {position} (scene {key} of split {str(self._source.split)!r}) cannot be read '
            f'({cli.one_line(error)}); expected an intact ArrayRecord record ({_ADVICE})')

  def __getattr__(self, name: str):
    if name.startswith('__') or name in ('_source', '_shards', '_ends'):   # unpickling: before __dict__ is set
      raise AttributeError(name)
    return getattr(self._source, name)

  def __repr__(self) -> str:
    return f'CheckedSource({self._source!r})'


def checked(source) -> CheckedSource:
  """`verify` the source's shards, then the source with reading errors that name the shard and the record."""
  return CheckedSource(source, verify(source))
