"""Depth from frame pairs of any size: the `Predictor`.

    predictor = Predictor.from_checkpoint('runs/synth64')          # a workdir, a checkpoint dir or a .pth.tar
    depth = predictor.predict(frame1, frame2)                      # uint8 RGB [H, W, 3] x 2 -> [H, W] metres

Frames are resized to the network's input size (`size`, or left as they are), normalised as in training, and
the network's output (1/4 of its input) is upsampled bilinearly to the frames' size, as the original's
run_inference does. One compiled function per input shape. The footage's geometry (`geometry`), the pictures
(`colormaps`) and the files (`atomic`, `outputs`) have their own modules; `footage` runs infer.py.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from flax import nnx

from depthnet_jax import loading, models
from depthnet_jax.conventions import STILLBOX_FOV, normalize

DEFAULT_SIZE = (512, 512)  # the original's inference default (its published network ends at 512x512)


# --- The predictor -----------------------------------------------------------------------------------------------

def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """uint8 [H, W, C] -> [h, w, C]: area averaging when shrinking, bilinear when enlarging."""
  import cv2
  h, w = size
  if image.shape[:2] == (h, w):
    return image
  shrink = h * w < image.shape[0] * image.shape[1]
  out = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
  return out.reshape(h, w, -1)


class Predictor:
  """A DepthNet ready for inference, compiled once per input shape."""

  def __init__(self, model, *, train_size: tuple[int, int] | None = None, train_fov: float | None = None,
               source: str = ''):
    model.eval()
    self._graphdef, self._state = nnx.split(model)
    self.spec = model.spec
    self.train_size = tuple(train_size) if train_size else None   # (h, w) the network was trained at, if known
    self.train_fov = float(train_fov or STILLBOX_FOV)
    self.source = source
    self._forward = jax.jit(self._forward_impl, static_argnums=(2,))

  @classmethod
  def from_checkpoint(cls, path: str | os.PathLike, prefer: str = 'best', *,
                      info: loading.CheckpointInfo | None = None) -> 'Predictor':
    """From a training workdir (its best checkpoint, else latest), a model checkpoint or a `.pth.tar`.

    Args:
      info: `loading.checkpoint_info(path, prefer)` if the caller has it already (the checkpoint it resolved to is
        then the one loaded, even if training has written a better one since).
    """
    info = info or loading.checkpoint_info(path, prefer)
    model = loading.load_any(info.resolved, prefer)   # checks every array is finite
    return cls(model, train_size=info.train_size, train_fov=info.train_fov, source=info.path)

  def default_size(self) -> tuple[int, int]:
    return self.train_size or DEFAULT_SIZE

  def _forward_impl(self, state, pairs: jax.Array, out_size: tuple[int, int]):
    x = normalize(pairs)                                                  # [B, h, w, 6]
    depth = models.depth_of(nnx.merge(self._graphdef, state)(x))          # [B, h/4, w/4]
    # bilinear, half-pixel centres: torch's interpolate(mode='bilinear', align_corners=False) when upsampling
    return depth, jax.image.resize(depth, (depth.shape[0], *out_size), 'bilinear')

  def predict_batch(self, first: np.ndarray, second: np.ndarray, size: tuple[int, int] | None = None,
                    *, full: bool = True) -> np.ndarray:
    """uint8 RGB `[B, H, W, 3]` x 2 -> depth `[B, H, W]` metres (or the network's own output if not `full`).

    Args:
      size: network input (h, w) the frames are resized to; None keeps them as they are.
    """
    first, second = np.asarray(first), np.asarray(second)
    if first.shape != second.shape or first.ndim != 4 or first.shape[-1] != 3:
      raise ValueError(f'expected two uint8 RGB batches [B, H, W, 3] of one shape; got {first.shape} and '
                       f'{second.shape}')
    out_size = first.shape[1:3]
    if size is not None and tuple(size) != out_size:
      first = np.stack([resize(f, size) for f in first])
      second = np.stack([resize(f, size) for f in second])
    pairs = np.concatenate([first, second], axis=-1)
    low, high = self._forward(self._state, pairs, tuple(out_size))
    return np.asarray(high if full else low)

  def predict(self, frame1: np.ndarray, frame2: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 RGB `[H, W, 3]` x 2 -> `[H, W]` metres."""
    return self.predict_batch(frame1[None], frame2[None], size)[0]
