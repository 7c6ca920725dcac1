"""What DepthNet is: its four options, defined once; and the choices of how it is computed and scored.

`ModelSpec` is the one definition of the options of the original's DepthNet. The constructor takes it
(`models.DepthNet(spec)`), checkpoints store it (the `model_config` item holds its fields at top level), the
PyTorch importer resolves one, warm start compares two, and a training config holds one as its nested `model`
section (`config.model.batch_norm`, ...).

`CONV_IMPLS`, `COMPUTE_DTYPES` and `LOSSES` are the one definition of the choices of the config fields conv_impl,
compute_dtype and loss (conv.py, models.py and losses.py act on them). Only the standard library: train.py checks
configs with this module before JAX is imported.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

CONV_IMPLS = ('auto', 'xla', 'patches')   # how a convolution is computed (conv.py)
COMPUTE_DTYPES = ('float32', 'bfloat16')   # the dtype of activations and matmuls (models.py)
LOSSES = ('L1', 'SmoothL1', 'MSE')         # the training loss per scale (losses.py)


def normalize_depth_activation(value: Any) -> str | None:
  """Maps the spellings a checkpoint or config may use ('elu', 'ELU', 'none', '', None) to None or 'elu'."""
  if value is None or (isinstance(value, str) and value.lower() in ('none', '')):
    return None
  if isinstance(value, str) and value.lower() == 'elu':
    return 'elu'
  raise ValueError(f"depth_activation must be one of None, 'elu'; got {value!r}")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """The options of the original's DepthNet.

  Attributes:
    batch_norm: BatchNorm after every conv of the encoder and decoder (the published weights use it).
    depth_activation: None (raw output) or 'elu', i.e. `elu(x) + 1` (the published weights use it).
    clamp: clamp the depth to [10, 60] metres (the multi-range paper's option).
    with_confidence: prediction heads with two channels (channel 0 the depth, channel 1 a raw confidence).
  """
  batch_norm: bool = True
  depth_activation: str | None = 'elu'
  clamp: bool = False
  with_confidence: bool = False

  def __post_init__(self):
    for name in ('batch_norm', 'clamp', 'with_confidence'):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f'{name} must be True or False; got {getattr(self, name)!r}')
    object.__setattr__(self, 'depth_activation', normalize_depth_activation(self.depth_activation))

  @classmethod
  def from_mapping(cls, mapping: Mapping[str, Any], *, where: str = 'the options') -> 'ModelSpec':
    """The spec whose fields `mapping` holds (other keys are ignored: a checkpoint's `model_config` also holds
    provenance). A missing field or a bad value is a ValueError naming `where` and the field."""
    missing = [f for f in FIELDS if f not in mapping]
    if missing:
      raise ValueError(f'{where} lacks the model option(s) {", ".join(missing)}')
    try:
      return cls(**{f: mapping[f] for f in FIELDS})
    except ValueError as e:
      raise ValueError(f'{where}: {e}') from None

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def describe(self) -> str:
    """`batch_norm=True, depth_activation='elu', clamp=False, with_confidence=False`."""
    return ', '.join(f'{f}={getattr(self, f)!r}' for f in FIELDS)

  def differences(self, other: 'ModelSpec') -> dict[str, tuple[Any, Any]]:
    """{field: (ours, theirs)} of the fields that differ."""
    return {f: (getattr(self, f), getattr(other, f)) for f in FIELDS if getattr(self, f) != getattr(other, f)}


FIELDS = tuple(f.name for f in dataclasses.fields(ModelSpec))
