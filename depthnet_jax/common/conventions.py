"""The conventions of the Still Box data that DepthNet learns, shared by training, import, inference and the
renderer: image normalisation, the depth cap, the camera's field of view and its motion between frames.

Only the standard library and NumPy-like array methods: `normalize` works on NumPy and JAX arrays alike.
"""

from __future__ import annotations

# Image normalisation, as the original: x = (pixel / 255 - MEAN) / STD on every channel of both frames.
MEAN, STD = 0.5, 0.2
# Depth targets are clipped to [0, MAX_DEPTH] metres; a pair of one frame with itself has MAX_DEPTH everywhere.
# The depth colormaps span the same range.
MAX_DEPTH = 100.0
# Still Box's horizontal field of view in degrees (square images: the vertical one too).
STILLBOX_FOV = 90.0
# Still Box's camera moves STEP metres per frame (speed x time step); the network's nominal pair is SHIFT frames
# apart, so every depth it outputs assumes a displacement of SHIFT x STEP = 0.3 m between its two frames.
STEP = 0.1
SHIFT = 3
# The displacement a network's depths assume when its checkpoint does not record one (PyTorch weights, checkpoints
# written before depthnet-jax recorded it): Still Box's SHIFT x STEP, in metres.
NOMINAL_DISPLACEMENT = SHIFT * STEP


def normalize(frames):
  """uint8 (or float 0..255) frames -> float32 (x / 255 - MEAN) / STD; NumPy in, NumPy out; JAX in, JAX out."""
  import numpy as np
  return (frames.astype(np.float32) * np.float32(1 / 255) - np.float32(MEAN)) * np.float32(1 / STD)


def denormalize(x):
  """The inverse of `normalize`, as uint8 (rounded, clipped to 0..255). NumPy only."""
  import numpy as np
  return np.clip((np.asarray(x) * STD + MEAN) * 255 + 0.5, 0, 255).astype(np.uint8)
