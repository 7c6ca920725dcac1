"""Pictures of depth: the colormaps (OpenCV's) and the example strips that training and the demo draw.

NumPy and OpenCV only (imported when a picture is drawn).
"""

from __future__ import annotations

import numpy as np

from depthnet_jax.common.conventions import MAX_DEPTH, denormalize


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


def upsample_nearest(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """[N, h, w] -> [N, H, W] by repeating pixels (the network's 1/4 output shown at its input's size)."""
  h, w = size
  ry, rx = -(-h // depth.shape[1]), -(-w // depth.shape[2])
  return np.repeat(np.repeat(depth, ry, axis=1), rx, axis=2)[:, :h, :w]


def example_strips(image_pair: np.ndarray, depth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
  """[N, H, 4W, 3] uint8: frame 1, frame 2, ground truth and prediction (rainbow, 0-100 m) side by side.

  `image_pair` is the network's normalised input [N, H, W, 6]; `depth` the truth [N, H, W]; `prediction` the
  network's depth [N, h, w] at any size (shown at the input's size).
  """
  frames = denormalize(image_pair)
  h, w = image_pair.shape[1:3]
  truth = np.stack([depth_to_rgb(d) for d in depth])
  predicted = np.stack([depth_to_rgb(d) for d in upsample_nearest(np.asarray(prediction), (h, w))])
  return np.concatenate([frames[..., :3], frames[..., 3:], truth, predicted], axis=2)
