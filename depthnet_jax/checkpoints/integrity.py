"""Reading Orbax checkpoints safely: checksums of every array, and one line for every damaged file.

Orbax compresses arrays (zstd, without a frame checksum), so bytes changed inside a data file at the same size
often decode into other values without any error: the `checksums` item (the sha256 of every array's bytes, with
its dtype and shape, keyed by item and tree path, computed at save time from the very arrays handed to Orbax) is
what finds them. `verify_arrays` checks restored arrays against it (and that parameters are finite).

Every failure to read a checkpoint is a `CheckpointError` (a `cli.UserError`): one line naming the checkpoint
and the array or file, never Orbax's and TensorStore's tracebacks (`reading`, `restore`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging as logging_std
import os
import re
import sys
import warnings
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from depthnet_jax.common import cli

MODEL_ITEM = 'model'
CONFIG_ITEM = 'model_config'
CHECKSUM_ITEM = 'checksums'
# Key of `model_config` saying the checkpoint has a `checksums` item (so a deleted one is noticed).
CHECKSUM_KEY = 'array_checksums'
CHECKSUM_ALGORITHM = 'sha256'


class CheckpointError(cli.UserError):
  """A checkpoint that cannot be used; the message names it and what is wrong."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
  """No checkpoint at the path given (nothing there, or not a depthnet-jax checkpoint)."""


class DamagedCheckpointError(CheckpointError):
  """A checkpoint whose files cannot be read, or whose arrays differ from their checksums or are not finite."""


def checkpointer() -> ocp.Checkpointer:
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


# --- Checksums ------------------------------------------------------------------------------------------------

def _key_name(key) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def array_leaves(tree) -> list[tuple[str, Any]]:
  """(tree path 'a/b/c', leaf) of every leaf."""
  return [('/'.join(_key_name(k) for k in path), x) for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _host(x) -> np.ndarray | None:
  """This process's host copy of an array; None for an array split across processes (not checksummed).

  The train state is replicated, so the first local shard is the whole array: no cross-process gather.
  """
  if isinstance(x, jax.Array):
    if x.is_fully_replicated:
      return np.asarray(x.addressable_shards[0].data)
    return np.asarray(x) if x.is_fully_addressable else None
  return np.asarray(x)


def _describe(a: np.ndarray) -> dict[str, Any]:
  data = np.ascontiguousarray(a).reshape(-1).view(np.uint8)   # the bytes in C order (a scalar's too)
  return {'dtype': a.dtype.name, 'shape': list(a.shape), CHECKSUM_ALGORITHM: hashlib.sha256(data).hexdigest()}


def array_checksums(tree) -> dict[str, dict[str, Any]]:
  """{tree path: {dtype, shape, sha256}} of every array of `tree`, from this process's host copies."""
  described = {}
  for path, x in array_leaves(tree):
    a = _host(x)
    if a is not None:
      described[path] = _describe(a)
  return described


def checksum_record(items: dict[str, Any]) -> dict[str, Any]:
  return {'algorithm': CHECKSUM_ALGORITHM, 'items': {name: array_checksums(tree) for name, tree in items.items()}}


def verify_arrays(directory: str, item: str, tree, expected: dict[str, Any] | None, *, finite: bool) -> None:
  """Raises DamagedCheckpointError unless every array of `tree` matches its checksum (and is finite if asked).

  Args:
    directory: the checkpoint, for the message.
    item: the Orbax item `tree` was restored from (`model`, `opt_state`, `train`).
    expected: the item's checksums as saved ({tree path: {dtype, shape, sha256}}); None for a checkpoint written
      before checksums existed (then only finiteness is checked).
    finite: also require every floating-point value to be finite.
  """
  for path, x in array_leaves(tree):
    name = f'{item}/{path}'
    a = _host(x)
    if a is None:   # split across processes: neither summed at save nor checked here
      continue
    if expected is not None:
      want = expected.get(path)
      if not isinstance(want, dict):
        raise DamagedCheckpointError(
            f'checkpoint {directory} is damaged: array {name} has no checksum in {CHECKSUM_ITEM}/ (the arrays and '
            'their checksums do not belong together)')
      got = _describe(a)
      if (got['dtype'], got['shape']) != (want.get('dtype'), want.get('shape')):
        raise DamagedCheckpointError(
            f'checkpoint {directory} is damaged: array {name} is {got["dtype"]}{got["shape"]} but was saved as '
            f'{want.get("dtype")}{want.get("shape")}')
      if got[CHECKSUM_ALGORITHM] != want.get(CHECKSUM_ALGORITHM):
        raise DamagedCheckpointError(
            f'checkpoint {directory} is damaged: array {name} does not match the checksum written when it was '
            'saved')
    if finite and jnp.issubdtype(a.dtype, jnp.inexact):
      good = int(np.count_nonzero(np.isfinite(a)))
      if good != a.size:
        raise DamagedCheckpointError(
            f'checkpoint {directory} cannot be used: array {name} holds {a.size - good} NaN or infinite value(s) '
            f'of {a.size}')


def expected_checksums(directory: str, record: dict[str, Any] | None, item: str) -> dict[str, Any] | None:
  """The saved checksums of one item, or None for a checkpoint without checksums."""
  if record is None:
    return None
  items = record.get('items') if isinstance(record, dict) else None
  if not isinstance(items, dict) or record.get('algorithm') != CHECKSUM_ALGORITHM or not isinstance(
      items.get(item), dict):
    raise DamagedCheckpointError(f'checkpoint {directory} is damaged: {CHECKSUM_ITEM}/ holds no {CHECKSUM_ALGORITHM} '
                                 f'checksums of the {item} item')
  return items[item]


def has_checksums(directory: str, config: dict[str, Any]) -> bool:
  """Whether the checkpoint has a `checksums` item; one its config promises but that is gone is damage."""
  present = os.path.isdir(os.path.join(directory, CHECKSUM_ITEM))
  if config.get(CHECKSUM_KEY) and not present:
    raise DamagedCheckpointError(f'checkpoint {directory} is damaged: {CHECKSUM_ITEM}/ is missing (its '
                                 f'{CONFIG_ITEM} says the arrays were saved with {config[CHECKSUM_KEY]} checksums)')
  return present


# --- Turning Orbax's and TensorStore's failures into one line -------------------------------------------------

_TS_STATUS = re.compile(r'\b(OUT_OF_RANGE|FAILED_PRECONDITION|DATA_LOSS|NOT_FOUND|INVALID_ARGUMENT|INTERNAL|UNKNOWN|'
                        r'PERMISSION_DENIED|RESOURCE_EXHAUSTED|UNAVAILABLE|ABORTED|UNIMPLEMENTED): ')
_TS_KEY = re.compile(r'"([^"]+)" in OCDBT database at local file "([^"]+)"')
_TS_FILE = re.compile(r'(?:Error decoding |Error reading )?local file "([^"]+)":?\s*')
_TS_DRIVER = re.compile(r'Error opening "[a-z_]+" driver: ')
_JSON_ITEMS = (CONFIG_ITEM, CHECKSUM_ITEM, 'data')


def _chain(error: BaseException) -> Iterator[BaseException]:
  seen = set()
  while error is not None and id(error) not in seen and len(seen) < 20:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def _relative(path: str, directory: str) -> str:
  path = os.path.normpath(path)
  return os.path.relpath(path, directory) if path.startswith(directory + os.sep) else path


def _tensorstore_reason(text: str, directory: str) -> str | None:
  """'array model/conv1/conv/kernel cannot be read (CODE: what)' from a TensorStore status message."""
  status = _TS_STATUS.search(text)
  if not status:
    return None
  detail = text[status.end():].split(' [tensorstore_spec')[0].split('\n')[0]
  detail = _TS_DRIVER.sub('', detail)
  subject = None
  key = _TS_KEY.search(detail)
  if key:
    name, database = key.groups()
    item = os.path.basename(os.path.normpath(database))
    subject = f'array {item}/{name.split("/")[0].replace(".", "/")}'
    detail = (detail[:key.start()] + f'"{name}"' + detail[key.end():])
  files = [f for f in _TS_FILE.findall(detail) if not f.endswith('/')]
  if files:
    subject = f'file {_relative(files[-1], directory)}' + (f' ({subject})' if subject else '')
  detail = _TS_FILE.sub('', detail).strip(' :;')
  detail = re.sub(r'^Error (reading|opening) "[^"]+":\s*', '', detail)
  return f'{subject or "its data"} cannot be read ({status.group(1)}: {detail[:300]})'


def _missing(directory: str, items: tuple[str, ...]) -> str | None:
  """The first file or folder that the items being read need and that is not there."""
  for item in items:
    path = os.path.join(directory, item)
    if not os.path.isdir(path):
      return f'{item}/ is missing'
    needed = 'metadata' if item in _JSON_ITEMS else 'manifest.ocdbt'
    if not os.path.isfile(os.path.join(path, needed)):
      return f'file {item}/{needed} is missing'
  return None


def _invalid_json(directory: str, items: tuple[str, ...]) -> str | None:
  """The first JSON file of the items being read that does not parse."""
  for item in items:
    for name in ('metadata', '_METADATA'):
      path = os.path.join(directory, item, name)
      if os.path.isfile(path):
        try:
          with open(path, 'rb') as f:
            json.loads(f.read())
        except (OSError, ValueError) as e:
          return f'file {item}/{name} is not readable JSON ({cli.one_line(e)[:200]})'
  return None


def _reason(error: BaseException, directory: str, items: tuple[str, ...]) -> str:
  found = _missing(directory, items)
  for e in _chain(error):
    found = found or _tensorstore_reason(str(e), directory)
  found = found or _invalid_json(directory, items)
  return found or f'{type(error).__name__}: {cli.one_line(error)[:300]}'


# How Orbax's abandoned reads show: its coroutine's name and the message its read errors start with.
_ABANDONED_READ_MARKS = ('_read_array_index_and_device_put', 'Encountered error while reading array index')


def _is_abandoned_read_noise(unraisable) -> bool:
  """Orbax's other reads of a failed restore, failing later in threads and coroutines nobody awaits any more."""
  error, obj = unraisable.exc_value, unraisable.object
  if isinstance(error, RuntimeError) and 'Event loop is closed' in str(error):
    return True
  code = getattr(obj, 'cr_code', None)
  return (code is not None and code.co_name == _ABANDONED_READ_MARKS[0]) or _ABANDONED_READ_MARKS[1] in str(error)


def _quiet_abandoned_reads() -> None:
  """Silences (installed once, for the process) the dozens of tracebacks that follow a failed restore.

  Orbax reads every array concurrently; when one fails, the others fail afterwards in background threads and
  un-awaited coroutines and tasks, each printed by Python ('Exception ignored in', 'Task exception was never
  retrieved', '_GatheringFuture exception was never retrieved', 'coroutine ... was never awaited') with
  TensorStore's whole spec. The first failure is the one reported (and chained, for --debug); anything else still
  reaches the usual hooks and the asyncio log.
  """
  asyncio_log = logging_std.getLogger('asyncio')
  if _not_abandoned_read_log not in asyncio_log.filters:
    asyncio_log.addFilter(_not_abandoned_read_log)
  warnings.filterwarnings('ignore', message="coroutine '_read_array_index_and_device_put' was never awaited",
                          category=RuntimeWarning)
  previous = sys.unraisablehook
  if getattr(previous, '_depthnet_quiet', False):
    return

  def hook(unraisable):
    if not _is_abandoned_read_noise(unraisable):
      previous(unraisable)

  hook._depthnet_quiet = True
  sys.unraisablehook = hook


def _not_abandoned_read_log(record) -> bool:
  text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else '')
  return not any(mark in text for mark in _ABANDONED_READ_MARKS)


@contextlib.contextmanager
def reading(directory: str, items: tuple[str, ...]):
  """Any failure inside (Orbax, TensorStore, JSON, OS) -> DamagedCheckpointError naming the checkpoint."""
  _quiet_abandoned_reads()   # before reading: the other reads may fail before the first error gets here
  try:
    yield
  except CheckpointError:
    raise
  except Exception as e:  # noqa: BLE001 - whatever Orbax raises for a bad file, the user sees one line
    raise DamagedCheckpointError(
        f'checkpoint {directory} is damaged or incomplete: {_reason(e, directory, items)}') from e


def restore(directory: str, args: dict[str, Any]) -> dict[str, Any]:
  with reading(directory, tuple(args)), checkpointer() as ckptr:
    return ckptr.restore(directory, ocp.args.Composite(**args))
