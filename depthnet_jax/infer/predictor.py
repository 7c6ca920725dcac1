"""Depth from frame pairs of any size: the `Predictor`.

    predictor = Predictor.from_checkpoint('runs/synth64')          # a workdir, a checkpoint dir or a .pth.tar
    depth = predictor.predict(frame1, frame2)                      # uint8 RGB [H, W, 3] x 2 -> [H, W] metres

Frames are resized to the network's input size (`size`, or left as they are), normalised as in training, and
the network's output (1/4 of its input) is upsampled bilinearly to the frames' size, as the original's
run_inference does. The network runs in ONNX Runtime or JAX (`model.runtimes`: `runtime='auto'` takes ONNX
Runtime when JAX is on a CPU, JAX on a GPU or TPU); everything around it is this module's, the same for both.
The footage's geometry (`geometry`), the pictures (`colormaps`), the flight's motion (`motion`) and the files
(`atomic`, `outputs`) have their own modules; `footage` runs infer.py.

**Metric depth.** The network's depths assume the displacement it was trained with between a pair's frames
(`Predictor.displacement`, the checkpoint's record: 0.3 m for Still Box). A pair whose frames are d metres apart
has depth `output x d / displacement` (`metric_scale`); `predict_metric` applies it.

**Choosing the frame shift** (`choose_shift`, the authors' later evaluation code): a pair resolves depths up to a
few hundred times its displacement, so far scenes need frames further apart. For a frame t, the pairs
(t - k, t), k = 1..K, are predicted in one batch, and the k whose mean (or median) raw output is closest to a
target depth (50 m: the middle of the 0-100 m training range) is kept, then made metric by its own displacement.
"""

from __future__ import annotations

import os

import numpy as np

from depthnet_jax.checkpoints import loading
from depthnet_jax.common.conventions import NOMINAL_DISPLACEMENT, STILLBOX_FOV
from depthnet_jax.model import runtimes

DEFAULT_SIZE = (512, 512)  # the original's inference default (its published network ends at 512x512)
TARGET_DEPTH = 50.0        # choose_shift's default: the authors' later evaluation code aims at 50 m
STATISTICS = ('mean', 'median')
# --frame_shift fuse: a raw output (metres at the nominal displacement) at or above FUSE_CEILING is taken as the
# network's saturation (its targets were clipped to MAX_DEPTH = 100 m) and that candidate is passed over. Measured:
# scripts/fusion_table.py's sweep of the ceiling on validation flights (docs/inference.md).
FUSE_CEILING = 97.0


def metric_scale(displacement: float, nominal: float) -> float:
  """The factor that makes a pair's output metric: its frames' real displacement over the network's nominal one."""
  return float(displacement) / float(nominal)


def choose_shift(raw: np.ndarray, target: float = TARGET_DEPTH, statistic: str = 'mean') -> tuple[int, np.ndarray]:
  """The candidate whose raw output is closest to `target` (ties: the first, i.e. the smallest shift).

  Args:
    raw: `[K, h, w]` the network's outputs for the candidate pairs of one frame, in the order of their shifts.
    statistic: 'mean' (the authors' choice) or 'median' of each output.

  Returns:
    (index of the chosen candidate, `[K]` the statistic of every candidate).
  """
  if statistic not in STATISTICS:
    raise ValueError(f'statistic={statistic!r}: expected one of {STATISTICS}')
  raw = np.asarray(raw, np.float64).reshape(len(raw), -1)
  values = raw.mean(axis=1) if statistic == 'mean' else np.median(raw, axis=1)
  return int(np.argmin(np.abs(values - float(target)))), values


def fuse_shifts(raw: np.ndarray, scales, valid=None, ceiling: float | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
  """Per pixel, the metric depth of the smallest shift whose raw output there is below `ceiling` (`FUSE_CEILING`),
  among the candidates valid there; where every valid one is at or above it, the one of the lowest raw output.

  The smallest shift sees the least occlusion and change between its frames; a raw output near the training cap
  (100 m) says only "that far or farther", so a larger shift, whose raw output there is smaller, takes over.

  Args:
    raw: `[K, H, W]` the candidates' raw outputs (metres at the nominal displacement), in increasing shift order.
    scales: `[K]` each candidate's metric scale (its displacement over the nominal one).
    valid: K masks `[H, W]` bool or None (every pixel valid), or None.

  Returns:
    (depth `[H, W]` float32 metres, NaN where no candidate is valid; `[K]` the share of pixels each gave).
  """
  raw = np.asarray(raw, np.float32)
  limit = np.float32(FUSE_CEILING if ceiling is None else ceiling)
  holes = np.zeros(raw.shape, bool)
  if valid is not None:
    for k, mask in enumerate(valid):
      if mask is not None:
        holes[k] = ~mask
  below = (raw < limit) & ~holes
  lowest = np.argmin(np.where(holes, np.inf, raw), axis=0)
  pick = np.where(below.any(axis=0), np.argmax(below, axis=0), lowest)
  chosen = np.take_along_axis(raw, pick[None], 0)[0] * np.asarray(scales, np.float32)[pick]
  chosen[np.all(holes, axis=0)] = np.nan
  shares = np.bincount(pick.ravel(), minlength=len(raw)) / pick.size
  return chosen.astype(np.float32), shares


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


def _resize_weights(n_in: int, n_out: int) -> np.ndarray:
  """`[n_out, n_in]` the weights of `jax.image.resize(..., 'bilinear')` along one axis: a triangle kernel at
  half-pixel centres (torch's `interpolate(mode='bilinear', align_corners=False)` when enlarging), widened by the
  factor when shrinking (antialiased), each row normalised over the pixels inside the image."""
  scale = n_out / n_in
  centres = (np.arange(n_out) + 0.5) / scale
  width = max(1.0 / scale, 1.0)
  w = np.maximum(0.0, 1.0 - np.abs(np.arange(n_in)[None] + 0.5 - centres[:, None]) / width)
  return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def upsample(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """`[B, h, w]` -> `[B, H, W]` bilinearly (`_resize_weights` along each axis), as the original's run_inference.

  Enlarging, OpenCV's INTER_LINEAR computes it (the same half-pixel triangle weights, the border replicated); a
  NumPy matrix product would hand it to OpenBLAS, whose threads spin on after the call and took half the CPU from
  the next network call (ONNX Runtime's 512x512 pair: 170 instead of 85 ms here). Shrinking (frames smaller than
  the network's output), the products of `_resize_weights`, antialiased as `jax.image.resize`."""
  import cv2
  h, w = depth.shape[1:3]
  depth = np.asarray(depth, np.float32)
  if (h, w) == tuple(size):
    return depth
  if size[0] >= h and size[1] >= w:
    return np.stack([cv2.resize(d, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for d in depth])
  return _resize_weights(h, size[0]) @ depth @ _resize_weights(w, size[1]).T


class Predictor:
  """A DepthNet ready for inference by a runtime (`runtimes.RUNTIMES`): ONNX Runtime or JAX, compiled once per
  input shape. Resizing, normalisation and upsampling are the same whichever runs the network."""

  def __init__(self, model, *, train_size: tuple[int, int] | None = None, train_fov: float | None = None,
               displacement: float = NOMINAL_DISPLACEMENT, source: str = '', runtime: str = 'auto'):
    self.spec = model.spec
    self.train_size = tuple(train_size) if train_size else None   # (h, w) the network was trained at, if known
    self.train_fov = float(train_fov or STILLBOX_FOV)
    self.displacement = float(displacement)   # metres between a pair's frames that its depths assume
    self.source = source
    self.runtime = runtimes.resolve(runtime)
    self._network = runtimes.make(model, self.runtime)

  @classmethod
  def from_checkpoint(cls, path: str | os.PathLike, prefer: str = 'best', *,
                      info: loading.CheckpointInfo | None = None, runtime: str = 'auto') -> 'Predictor':
    """From a training workdir (its best checkpoint, else latest), a model checkpoint or a `.pth.tar`.

    Args:
      info: `loading.checkpoint_info(path, prefer)` if the caller has it already (the checkpoint it resolved to is
        then the one loaded, even if training has written a better one since).
      runtime: 'auto' (ONNX Runtime on a CPU, else JAX), 'onnx' or 'jax'.
    """
    info = info or loading.checkpoint_info(path, prefer)
    model = loading.load_any(info.resolved, prefer)   # checks every array is finite
    return cls(model, train_size=info.train_size, train_fov=info.train_fov, displacement=info.displacement,
               source=info.path, runtime=runtime)

  def default_size(self) -> tuple[int, int]:
    return self.train_size or DEFAULT_SIZE

  def predict_batch(self, first: np.ndarray, second: np.ndarray, size: tuple[int, int] | None = None,
                    *, full: bool = True) -> np.ndarray:
    """uint8 RGB `[B, H, W, 3]` x 2 -> depth `[B, H, W]` metres (or the network's own output if not `full`).

    Args:
      size: network input (h, w) the frames are resized to; None keeps them as they are.
    """
    low, high = self.predict_pairs(first, second, size)
    return high if full else low

  def predict_pairs(self, first: np.ndarray, second: np.ndarray, size: tuple[int, int] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB `[B, H, W, 3]` x 2 -> (the network's output `[B, h/4, w/4]`, it upsampled to `[B, H, W]`).

    Both assume the network's nominal displacement between the two frames (see `predict_metric`).
    """
    first, second = np.asarray(first), np.asarray(second)
    if first.shape != second.shape or first.ndim != 4 or first.shape[-1] != 3:
      raise ValueError(f'expected two uint8 RGB batches [B, H, W, 3] of one shape; got {first.shape} and '
                       f'{second.shape}')
    out_size = first.shape[1:3]
    if size is not None and tuple(size) != out_size:
      first = np.stack([resize(f, size) for f in first])
      second = np.stack([resize(f, size) for f in second])
    low = self._network(first, second)   # [B, h/4, w/4]
    return low, upsample(low, out_size)

  def predict_metric(self, first: np.ndarray, second: np.ndarray, displacement, size=None) -> np.ndarray:
    """Depth `[B, H, W]` in metres of pairs whose frames are `displacement` metres apart (a number or `[B]`)."""
    scale = np.asarray(displacement, np.float64) / self.displacement
    if not np.all(np.isfinite(scale) & (scale > 0)):
      raise ValueError(f'displacement={displacement!r}: expected positive metres')
    depth = self.predict_batch(first, second, size)
    return (depth * scale.reshape(-1, 1, 1)).astype(np.float32)

  def predict(self, frame1: np.ndarray, frame2: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 RGB `[H, W, 3]` x 2 -> `[H, W]` metres."""
    return self.predict_batch(frame1[None], frame2[None], size)[0]
