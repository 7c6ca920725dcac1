"""Depth from frame pairs of any size: the `Predictor`, the pinhole FOV geometry, colormaps and atomic writers.

    predictor = Predictor.from_checkpoint('runs/synth64')          # a workdir, a checkpoint dir or a .pth.tar
    depth = predictor.predict(frame1, frame2)                      # uint8 RGB [H, W, 3] x 2 -> [H, W] metres

Frames are resized to the network's input size (`size`, or left as they are), normalised as in training, and
the network's output (1/4 of its input) is upsampled bilinearly to the frames' size, as the original's
run_inference does. One compiled function per input shape.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from depthnet_jax import checkpointing, cli, input_pipeline

MAX_DEPTH = 100.0
DEFAULT_SIZE = (512, 512)  # the original's inference default (its published network ends at 512x512)
DEFAULT_FOV = 90.0         # Still Box


# --- Pinhole geometry -------------------------------------------------------------------------------------------

def focal_length(width: float, fov: float) -> float:
  """Focal length in pixels of an image `width` pixels wide with horizontal field of view `fov` degrees."""
  return (width / 2) / math.tan(math.radians(fov) / 2)


def size_for_fov(height: int, width: int, fov: float, train_width: int, train_fov: float = DEFAULT_FOV
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


def crop_width_for_fov(width: int, fov: float, train_fov: float = DEFAULT_FOV) -> float:
  """Width of a centred crop of a `train_fov` image that has FOV `fov` at the same focal length."""
  return width * math.tan(math.radians(fov) / 2) / math.tan(math.radians(train_fov) / 2)


# --- Colormaps (OpenCV's) ----------------------------------------------------------------------------------------

def _apply(values01: np.ndarray, colormap: int) -> np.ndarray:
  import cv2
  index = np.round(np.clip(np.nan_to_num(values01, nan=1.0), 0, 1) * 255).astype(np.uint8)
  return cv2.applyColorMap(index, colormap)[..., ::-1].copy()  # BGR -> RGB


def depth_to_rgb(depth: np.ndarray, max_depth: float = MAX_DEPTH) -> np.ndarray:
  """Depth [H, W] metres -> RGB uint8, OpenCV's rainbow from violet (0 m) to red (`max_depth` and beyond)."""
  import cv2
  return _apply(1 - np.asarray(depth, np.float32) / max_depth, cv2.COLORMAP_RAINBOW)


def disparity_to_rgb(depth: np.ndarray, max_disparity: float | None = None) -> np.ndarray:
  """Disparity 1 / depth -> RGB uint8 with OpenCV's bone colormap, scaled to `max_disparity` (default its max)."""
  import cv2
  disparity = 1 / np.maximum(np.asarray(depth, np.float32), 1e-3)
  top = max_disparity or float(disparity.max()) or 1.0
  return _apply(disparity / top, cv2.COLORMAP_BONE)


# --- Atomic writers ----------------------------------------------------------------------------------------------

def temporary_path(path: str) -> str:
  """Where `_atomic` writes `path` first: `.NAME.tmp-PID.EXT` beside it (hidden, and named after its writer, so a
  later run can tell a dead writer's leftover from a live one's file; see `outputs.sweep_temporaries`)."""
  directory, name = os.path.split(os.path.abspath(path))
  return os.path.join(directory, f'.{name}.tmp-{os.getpid()}{os.path.splitext(name)[1]}')


def _atomic(path: str, write) -> str:
  """Calls `write(tmp)` and renames tmp to `path`; the temporary is removed whatever happens (Ctrl-C included)."""
  tmp = temporary_path(path)
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.lexists(tmp):
      os.remove(tmp)
  return path


def write_png(path: str, image: np.ndarray) -> str:
  import imageio.v3 as iio
  return _atomic(path, lambda tmp: iio.imwrite(tmp, image, extension='.png'))


def write_npy(path: str, array: np.ndarray) -> str:
  def write(tmp):
    with open(tmp, 'wb') as f:
      np.save(f, array, allow_pickle=False)
  return _atomic(path, write)


# --- Checkpoints -------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
  """What inference needs to know of a checkpoint before loading its weights."""
  path: str                             # as given (absolute)
  resolved: str                         # the model checkpoint directory read, or the .pth.tar file
  train_size: tuple[int, int] | None    # (h, w) the network was trained at, if recorded
  train_fov: float | None               # its training FOV in degrees, if recorded


def checkpoint_info(path: str | os.PathLike, prefer: str = 'best') -> CheckpointInfo:
  """Resolves `path` (a workdir's best or latest step, a checkpoint, a `.pth.tar`) and reads its recorded
  geometry (only the small `model_config` item; no weights). Raises FileNotFoundError for a missing path or a
  directory that holds no checkpoint."""
  path = os.path.abspath(os.fspath(path))
  if os.path.isfile(path):
    return CheckpointInfo(path, path, None, None)   # PyTorch weights record neither: 512x512 and 90 deg
  if not os.path.exists(path):
    raise FileNotFoundError(f'checkpoint {path} does not exist')
  resolved = checkpointing.resolve_checkpoint(path, prefer)
  config = checkpointing.read_model_config(resolved)
  size = config.get('image_size')
  return CheckpointInfo(path, resolved, tuple(int(x) for x in size) if size else None,
                        float(config['fov']) if config.get('fov') else None)


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
    self.options = model.options()
    self.train_size = tuple(train_size) if train_size else None   # (h, w) the network was trained at, if known
    self.train_fov = float(train_fov or DEFAULT_FOV)
    self.source = source
    self._forward = jax.jit(self._forward_impl, static_argnums=(2,))

  @classmethod
  def from_checkpoint(cls, path: str | os.PathLike, prefer: str = 'best', *,
                      info: 'CheckpointInfo | None' = None) -> 'Predictor':
    """From a training workdir (its best checkpoint, else latest), a model checkpoint or a `.pth.tar`.

    Args:
      info: `checkpoint_info(path, prefer)` if the caller has it already (the checkpoint it resolved to is
        then the one loaded, even if training has written a better one since).
    """
    info = info or checkpoint_info(path, prefer)
    model = checkpointing.load_any(info.resolved, prefer)   # checks every array is finite
    return cls(model, train_size=info.train_size, train_fov=info.train_fov, source=info.path)

  def default_size(self) -> tuple[int, int]:
    return self.train_size or DEFAULT_SIZE

  def _forward_impl(self, state, pairs: jax.Array, out_size: tuple[int, int]):
    x = (pairs.astype(jnp.float32) / 255 - input_pipeline.MEAN) / input_pipeline.STD  # [B, h, w, 6]
    depth = nnx.merge(self._graphdef, state)(x)
    depth = depth[..., 0] if depth.ndim == 4 else depth                                # [B, h/4, w/4]
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
