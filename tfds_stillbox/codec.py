"""How frames and depth maps are stored in a Still Box record, and read back.

One record is one scene. Its frames are kept as the JPEG bytes they were on disk (never re-encoded), its depth
maps as zlib-compressed `.npy` bytes (float32, metres), one entry per frame, so that a training sample decodes
only the two frames and the one depth map it uses, not the whole scene.
"""

from __future__ import annotations

import io
import zlib

import numpy as np

try:  # OpenCV decodes JPEG about 3x faster than Pillow; it is optional.
  import cv2
except ImportError:  # pragma: no cover - depends on the environment
  cv2 = None

JPEG_QUALITY = 90


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
  """RGB uint8 `[H, W, 3]` -> JPEG bytes."""
  from PIL import Image
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'expected an RGB uint8 image [H, W, 3]; got {image.dtype} {image.shape}')
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format='JPEG', quality=quality)
  return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
  """JPEG (or PNG) bytes -> RGB uint8 `[H, W, 3]`; grayscale is expanded to three channels."""
  if cv2 is not None:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
      raise ValueError('not a decodable image')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
  from PIL import Image
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert('RGB'))


def encode_depth(depth: np.ndarray) -> bytes:
  """Depth `[H, W]` in metres -> zlib-compressed `.npy` bytes of float32."""
  buf = io.BytesIO()
  np.save(buf, np.ascontiguousarray(depth, dtype=np.float32), allow_pickle=False)
  return zlib.compress(buf.getvalue(), 6)


def decode_depth(data: bytes) -> np.ndarray:
  """Bytes from `encode_depth` -> float32 `[H, W]`."""
  return np.load(io.BytesIO(zlib.decompress(data)), allow_pickle=False)
