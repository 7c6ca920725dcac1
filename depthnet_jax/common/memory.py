"""How much a flag that sizes memory may ask for: the machine's memory, and DepthNet's footprint per pair.

A batch size (of training, evaluation or inference) times what one pair takes must fit in the machine's physical
memory (`os.sysconf`: pages x page size), or the kernel's OOM killer ends the run, and other processes with it.
`check_count` refuses a value over that bound before any work, in one line naming the flag, the value, the bound
and the estimate it comes from. The bound is loose on purpose (the whole memory, not what is free now): it stops
the typo and the impossible, not a batch that would merely be slow.

DepthNet's footprint per pixel of the network input and per pair, from XLA's memory analysis of the compiled
programs on the CPU (`jax.jit(...).lower(...).compile().memory_analysis()`, temporary buffers): how much they grow
between inputs of 64x64 and 128x128 pixels at batches 2 and 4. The fixed part besides (weights, optimizer state,
gradients: ~100 MB) is not counted: these bounds stop the typo, not the last 100 MB.

- training step (forward, backward, update) with the CPU's patch convolutions: 590-680 bytes measured.
  XLA's own convolutions (`conv_impl='xla'`) could not be measured that way (at these small sizes their
  temporaries, 65-75 MB, hardly grow with the input). `TRAIN_BYTES_PER_PIXEL` rounds up to 1024, an estimate
  that includes the host's batches and their prefetch buffers;
- inference forward with the upsampling: 170-190 bytes measured; `INFER_BYTES_PER_PIXEL` rounds up to 256;
- evaluation: `EVAL_BYTES_PER_PIXEL` 320, an estimate, not measured: the inference forward, the host batch of
  float32 pairs and depth (28 bytes a pixel) and the metrics' temporaries.

On an accelerator the device's own memory may bound a batch first; running out of it is XLA's own error
(RESOURCE_EXHAUSTED), which kills no other process.

Standard library only (the checks run before JAX starts).
"""

from __future__ import annotations

import os

from depthnet_jax.common import cli

TRAIN_BYTES_PER_PIXEL = 1024
INFER_BYTES_PER_PIXEL = 256
EVAL_BYTES_PER_PIXEL = 320


def physical_memory() -> int | None:
  """The machine's physical memory in bytes; None where the system does not say."""
  try:
    pages, size = os.sysconf('SC_PHYS_PAGES'), os.sysconf('SC_PAGE_SIZE')
  except (ValueError, OSError, AttributeError):
    return None
  return pages * size if pages > 0 and size > 0 else None


def shown(n: float) -> str:
  """Bytes as people read them: '512 B', '3.2 MB', '23.4 GB', '1.5 TB' (powers of 1000)."""
  for unit, scale in (('TB', 1e12), ('GB', 1e9), ('MB', 1e6), ('kB', 1e3)):
    if n >= scale:
      return f'{n / scale:.3g} {unit}'
  return f'{int(n)} B'


def most(each: int, reserve: int = 0, total: int | None = None) -> int | None:
  """How many of something taking `each` bytes fit in the memory, besides `reserve` bytes (None: unknown)."""
  total = physical_memory() if total is None else total
  if total is None:
    return None
  return max(0, (total - reserve) // max(1, each))


def check_count(flag: str, value: int, each: int, what: str, *, used: int | None = None, reserve: int = 0,
                reserved: str = '') -> int:
  """`value`, if `used` (default: `value`) of something taking `each` bytes, plus `reserve` bytes, fit in the
  machine's memory; else a `cli.UserError`: `FLAG=VALUE: expected at most N (WHAT takes ~X: V would need ~Y, the
  machine has Z of memory)`. `what` names one of them; `reserved` what the reserve is, for the message."""
  total = physical_memory()
  used = value if used is None else used
  if total is None or used * each + reserve <= total:
    return value
  limit = most(each, reserve, total)
  besides = f' besides {shown(reserve)} for {reserved}' if reserve and reserved else ''
  raise cli.UserError(f'{flag}={value!r}: expected at most {limit} ({what} takes ~{shown(each)}{besides}: {used} '
                      f'would need ~{shown(used * each + reserve)}, the machine has {shown(total)} of memory)')
