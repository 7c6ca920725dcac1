"""CRC-32C (Castagnoli), the checksum of TFRecord framing (TensorBoard event files), with the standard library and
NumPy only: the venv has no compiled crc32c (no `google-crc32c` or `crc32c` package; TensorFlow's would cost seconds
to import and TensorBoard's is a byte-by-byte Python loop).

    crc32c.value(b'123456789') == 0xE3069283      # the check value of CRC-32C
    crc32c.masked(data)                           # TFRecord's masked form: rotated right by 15, plus 0xa282ead8

Short inputs run the table-driven loop in Python; long ones (an event file's images) run it in NumPy over
independent blocks at once, then join the blocks' CRCs (CRC is linear: the register after block A then block B is
the register after A, carried through |B| zero bytes, XOR the CRC of B from zero): a megabyte in about 11 ms
instead of 130 ms (measured on this project's 2-core machine).
"""

from __future__ import annotations

import functools
import math

import numpy as np

_POLY = 0x82F63B78        # the Castagnoli polynomial, bit-reflected
_MASK_DELTA = 0xA282EAD8  # TFRecord's mask
_NUMPY_FROM = 32 * 1024   # bytes from which the block-parallel NumPy path is faster than the Python loop


def _make_table() -> np.ndarray:
  table = np.arange(256, dtype=np.uint32)
  for _ in range(8):
    table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
  return table


_TABLE = _make_table()
_TABLE_LIST = [int(x) for x in _TABLE]


def _python(register: int, data: bytes) -> int:
  table = _TABLE_LIST
  for byte in data:
    register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
  return register


@functools.lru_cache(maxsize=16)
def _zeros_tables(length: int) -> tuple[list[int], ...]:
  """The linear map 'carry a register through `length` zero bytes' as four byte tables: the register x becomes
  t0[x & 255] ^ t1[(x >> 8) & 255] ^ t2[(x >> 16) & 255] ^ t3[x >> 24]."""
  values = np.concatenate([np.arange(256, dtype=np.uint32) << np.uint32(8 * i) for i in range(4)])
  for _ in range(length):
    values = _TABLE[values & 0xFF] ^ (values >> 8)
  return tuple(values[256 * i:256 * (i + 1)].tolist() for i in range(4))


def _numpy(data: bytes) -> int:
  """The CRC-32C register of `data` (init 0xffffffff, not inverted), computed in NumPy over blocks in parallel."""
  n = len(data)
  block = math.isqrt(n) + 1
  blocks = -(-n // block)
  padded = np.zeros(blocks * block, np.uint8)
  padded[blocks * block - n:] = np.frombuffer(data, np.uint8)   # leading zeros leave a zero register as it is
  padded[blocks * block - n:blocks * block - n + 4] ^= 0xFF      # the initial 0xffffffff, as the first 4 bytes
  lanes = np.ascontiguousarray(padded.reshape(blocks, block).T)  # [position in block, block]
  registers = np.zeros(blocks, np.uint32)
  for column in lanes:
    registers = _TABLE[(registers ^ column) & 0xFF] ^ (registers >> 8)
  t0, t1, t2, t3 = _zeros_tables(block)
  total = 0
  for r in registers.tolist():
    total = t0[total & 0xFF] ^ t1[(total >> 8) & 0xFF] ^ t2[(total >> 16) & 0xFF] ^ t3[total >> 24] ^ r
  return total


def value(data: bytes | bytearray | memoryview) -> int:
  """The CRC-32C of `data`."""
  data = bytes(data)
  register = _numpy(data) if len(data) >= _NUMPY_FROM else _python(0xFFFFFFFF, data)
  return register ^ 0xFFFFFFFF


def mask(crc: int) -> int:
  """TFRecord's masked CRC: `((crc >> 15 | crc << 17) + 0xa282ead8) & 0xffffffff`."""
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def masked(data: bytes | bytearray | memoryview) -> int:
  """The masked CRC-32C of `data`, as TFRecord stores it after the length and after the data."""
  return mask(value(data))


def masked_windows(data: np.ndarray, width: int) -> np.ndarray:
  """The masked CRC-32C of every `width`-byte window of the uint8 array `data` (window i is data[i:i + width]):
  uint32 [len(data) - width + 1], in NumPy (e.g. to find where a TFRecord frame's 8-byte length and its checksum
  line up again after a damaged one)."""
  count = len(data) - width + 1
  if count <= 0:
    return np.zeros(0, np.uint32)
  register = np.full(count, 0xFFFFFFFF, np.uint32)
  for k in range(width):
    register = _TABLE[(register ^ data[k:k + count]) & 0xFF] ^ (register >> 8)
  crc = register ^ np.uint32(0xFFFFFFFF)
  return (((crc >> 15) | (crc << 17)) + np.uint32(_MASK_DELTA)).astype(np.uint32)
