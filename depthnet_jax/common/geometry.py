"""The pinhole camera of Still Box and of footage: focal length, and the input size at which footage of another
field of view has the focal length the network was trained at. Only the standard library.
"""

from __future__ import annotations

import math

from depthnet_jax.common import cli
from depthnet_jax.common.conventions import STILLBOX_FOV


def focal_length(width: float, fov: float) -> float:
  """Focal length in pixels of an image `width` pixels wide with horizontal field of view `fov` degrees."""
  return (width / 2) / math.tan(math.radians(fov) / 2)


def size_for_fov(height: int, width: int, fov: float, train_width: int, train_fov: float = STILLBOX_FOV
                 ) -> tuple[int, int]:
  """Network input size for footage of horizontal FOV `fov`: the size at which its focal length equals the one
  the network was trained at (`train_width` pixels wide at `train_fov`). W' = 2 f tan(fov / 2), H' = H W' / W.
  """
  if not 0 < fov < 180:
    raise cli.UserError(f'fov must be in (0, 180) degrees; got {fov}')
  if fov > train_fov + 1e-9:
    raise cli.UserError(
        f'the footage\'s FOV ({fov} deg) is wider than the network\'s training FOV ({train_fov} deg): at the '
        f'training focal length its borders fall outside anything the network has seen. Crop the footage to at '
        f'most {train_fov} deg (a centred crop {crop_width_for_fov(width, train_fov, fov):.0f} px wide of its '
        f'{width} px) or use a network trained wider.')
  new_width = 2 * focal_length(train_width, train_fov) * math.tan(math.radians(fov) / 2)
  return max(1, round(height * new_width / width)), max(1, round(new_width))


def crop_width_for_fov(width: int, fov: float, train_fov: float = STILLBOX_FOV) -> float:
  """Width of a centred crop of a `train_fov` image that has FOV `fov` at the same focal length."""
  return width * math.tan(math.radians(fov) / 2) / math.tan(math.radians(train_fov) / 2)
