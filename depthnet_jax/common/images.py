"""Every image we read, decoded to 8-bit RGB whatever its colour mode, or refused with one line (`decode`, `read`).

The network sees 8-bit RGB, as training decodes Still Box's JPEGs (OpenCV's IMREAD_COLOR). A frame of another mode
is converted the way that keeps what the camera recorded:

| mode (Pillow's name) | becomes |
|---|---|
| RGB, YCbCr | RGB (YCbCr converted) |
| L (grayscale), 1 (1-bit) | the gray repeated in R, G and B (1-bit: 0 or 255) |
| LA, La (grayscale + alpha) | the gray repeated; alpha dropped |
| RGBA, RGBX, RGBa | RGB; alpha dropped (RGBa un-premultiplied first) |
| P, PA (palette) | the palette's colours; transparency dropped |
| CMYK (JPEG, TIFF) | RGB by Pillow's conversion (Adobe's inverted CMYK JPEGs included; no ICC profile applied) |
| 16 bits a channel (gray, 48/64-bit RGB/RGBA; PNG, TIFF, PGM/PPM) | 8 bits, `round(v x 255 / 65535)`, not clipped |

Alpha is dropped, not composited: the colour under it is what the camera saw, a background colour would be an
invention, and OpenCV (training's decoder) drops it too. Pillow opens some 16-bit grays as mode 'I' (a 16-bit PGM
as OpenCV writes it; PNGs in older Pillows): they are taken as 16-bit when the file's own raw mode says 16 bits
(or PGM's, which Pillow scales to 0-65535). Anything else (32-bit integer or float pixels, 'I' and 'F' TIFFs,
HSV, LAB, ...) is an `ImageError` naming the file and its mode. An animated image (GIF, APNG) gives its
first frame; EXIF orientation is not applied (frames are taken as stored, as a video's are).

Standard library, NumPy, Pillow and OpenCV only (no JAX): imported by infer.py's checks.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np

from depthnet_jax.common import cli

# Frames above this many pixels (8192 x 8192) are refused before they are decoded: a decoded frame takes 3 bytes a
# pixel (16-bit ones 8 while converted), and infer.py holds several. Below Pillow's own warning (89.5 M pixels).
MAX_PIXELS = 2**26

# Pillow's modes that `decode` converts (see the table above); others are refused.
_GRAY = ('L', '1')
_GRAY_ALPHA = ('LA', 'La')
_RGB_ALPHA = ('RGBA', 'RGBX', 'RGBa')
_CONVERTED = ('YCbCr', 'CMYK', 'P', 'PA')
_SIXTEEN = ('I;16', 'I;16L', 'I;16B', 'I;16N')
MODES = ('RGB', *_GRAY, *_GRAY_ALPHA, *_RGB_ALPHA, *_CONVERTED, *_SIXTEEN)
EXPECTED = ('expected an 8- or 16-bit image in RGB, grayscale, palette, CMYK or YCbCr (with or without alpha), or a '
            '1-bit image')


class ImageError(cli.UserError):
  """An image that cannot be read as a frame; the message names the file, and the mode when it is the mode."""


def scale16(a: np.ndarray) -> np.ndarray:
  """uint16 -> uint8, `round(v x 255 / 65535)`: 65535 -> 255, 0 -> 0, never clipped."""
  return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def to_rgb8(image: np.ndarray, name: str) -> np.ndarray:
  """A decoded array (uint8, uint16 or bool; [H, W] or [H, W, 1-4]) -> uint8 RGB `[H, W, 3]`: gray repeated,
  alpha dropped, 16 bits scaled. A video's frames, and `decode`'s last step."""
  a = np.asarray(image)
  if a.ndim == 2:
    a = a[..., None]
  if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4) or 0 in a.shape:
    raise ImageError(f'{name}: expected an image [H, W] or [H, W, 1-4 channels]; got an array of shape {a.shape}')
  if a.dtype == np.uint16:
    a = scale16(a)
  elif a.dtype == np.bool_:
    a = a.astype(np.uint8) * 255
  elif a.dtype != np.uint8:
    raise ImageError(f'{name}: pixels of type {a.dtype}; {EXPECTED}')
  if a.shape[-1] in (1, 2):      # gray, gray + alpha
    a = np.repeat(a[..., :1], 3, axis=-1)
  elif a.shape[-1] == 4:         # RGBA
    a = a[..., :3]
  return np.ascontiguousarray(a)


def _raw_mode(image) -> str | None:
  """The raw mode of the file's first tile (how its bytes encode the pixels, e.g. 'RGB;16B'), if Pillow says."""
  tile = getattr(image, 'tile', None) or []
  args = tile[0][3] if tile and len(tile[0]) > 3 else None
  raw = args[0] if isinstance(args, tuple) and args else args
  return raw if isinstance(raw, str) else None


def _sixteen_bit_colour(image) -> bool:
  """Whether Pillow would reduce this image's 16-bit colour channels to 8 bits itself (48/64-bit PNG, TIFF)."""
  return image.mode in ('RGB', 'RGBA', 'LA') and ';16' in (_raw_mode(image) or '')


def _sixteen_bit_gray(image) -> bool:
  """Whether a mode 'I' image holds 16-bit gray (raw mode I;16*, or a PGM: Pillow scales its values to 16 bits)."""
  if image.mode != 'I':
    return False
  tile = getattr(image, 'tile', None) or []
  return (_raw_mode(image) or '').startswith('I;16') or bool(tile) and tile[0][0] == 'ppm'


def _decode16(data: bytes, name: str) -> np.ndarray:
  """A 16-bit colour image by OpenCV, which keeps the 16 bits (BGR(A) -> RGB(A))."""
  import cv2
  a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if a is None or a.dtype != np.uint16:
    raise ImageError(f'{name}: cannot decode its 16-bit channels; {EXPECTED}')
  if a.ndim == 3 and a.shape[-1] >= 3:
    a = a[..., [2, 1, 0, 3][:a.shape[-1]]]
  return to_rgb8(a, name)


def _converted(image, name: str) -> np.ndarray:
  """An opened Pillow image of mode `MODES` -> uint8 RGB (see the table in the module docstring)."""
  mode = image.mode
  if mode in _SIXTEEN:
    return to_rgb8(np.asarray(image).astype(np.uint16), name)
  if mode == 'I':   # 16-bit gray (`_sixteen_bit_gray`): int32 values from 0 to 65535
    return to_rgb8(np.clip(np.asarray(image), 0, 65535).astype(np.uint16), name)
  if mode in _GRAY:
    return to_rgb8(np.asarray(image.convert('L')), name)
  if mode in _GRAY_ALPHA:
    return to_rgb8(np.asarray(image.convert('LA'))[..., 0], name)
  if mode == 'RGB':
    return to_rgb8(np.asarray(image), name)
  if mode in ('P', 'PA'):   # through RGBA: Pillow warns on a palette's transparency converted straight to RGB
    return to_rgb8(np.asarray(image.convert('RGBA'))[..., :3], name)
  return to_rgb8(np.asarray(image.convert('RGB')), name)   # YCbCr, CMYK, RGBA, RGBX, RGBa


def decode(data: bytes, name: str) -> np.ndarray:
  """The image file's bytes `data` as uint8 RGB `[H, W, 3]` (see the module docstring); `name` (its path) is what
  the messages name. Raises `ImageError` for a file that is not an image, of a mode refused, or too large."""
  from PIL import Image
  try:
    with warnings.catch_warnings():   # sizes Pillow warns about are refused below, in one line
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      image = Image.open(io.BytesIO(data))
    mode, (w, h) = image.mode, image.size
  except Image.DecompressionBombError as e:
    raise ImageError(f'{name}: {cli.one_line(e)[:200]}; expected at most {MAX_PIXELS} pixels a frame') from None
  except Exception as e:  # noqa: BLE001 - any decoder failure is the file's fault here
    raise ImageError(f'{name}: cannot read the image ({type(e).__name__}: {cli.one_line(e)[:300]}); expected a '
                     'readable image file') from None
  if mode not in MODES and not _sixteen_bit_gray(image):
    raise ImageError(f'{name}: colour mode {mode!r} ({image.format or "unknown format"}); {EXPECTED}')
  if w * h > MAX_PIXELS:
    raise ImageError(f'{name}: {w}x{h} pixels; expected at most {MAX_PIXELS} pixels a frame')
  try:
    if _sixteen_bit_colour(image):
      return _decode16(data, name)
    image.load()
    return _converted(image, name)
  except ImageError:
    raise
  except Exception as e:  # noqa: BLE001 - a truncated or damaged file fails when its pixels are decoded
    raise ImageError(f'{name}: cannot read the image ({type(e).__name__}: {cli.one_line(e)[:300]}); expected a '
                     'readable image file') from None


def read(path: str) -> np.ndarray:
  """The image file at `path` as uint8 RGB (`decode` of its bytes)."""
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise ImageError(f'{path}: cannot read it ({e.strerror or e}); expected a readable image file') from None
  return decode(data, os.fspath(path))
