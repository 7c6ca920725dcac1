"""The input footage: frames read as people have them, and the input opened (`open_input`) before any work.

Frames are read as people have them: grayscale, RGBA and 16-bit images are converted to 8-bit RGB. A folder must
hold frames of one size; its frames are its image files sorted by name, except hidden files (our temporaries) and
the outputs of infer.py its manifest lists. Opening a folder decodes every frame (all readable, one size) and
checks that no two frames would write outputs of one name; opening a video decodes its first frame. Either way
the input's identity (a digest of its bytes) is taken, and with the flight's motion the log must cover every
frame. Every problem is a `FootageError` (a `cli.UserError`) naming the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
from typing import Iterator

import numpy as np

from depthnet_jax.common import cli
from depthnet_jax.infer.outputs import MANIFEST, Manifest, digest, tree_identity
from depthnet_jax.infer.pairs import Plan

Frames = Iterator[tuple[str, np.ndarray]]   # (stem, uint8 RGB [H, W, 3]) in the input's order


class FootageError(cli.UserError):
  """Input footage that cannot be used; the message names the file."""


# --- Reading frames --------------------------------------------------------------------------------------------

def to_rgb8(image: np.ndarray, path: str) -> np.ndarray:
  """Any decoded image -> uint8 RGB `[H, W, 3]` (gray expanded, alpha dropped, 16-bit and float scaled)."""
  a = np.asarray(image)
  if a.ndim == 2:
    a = a[..., None]
  if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4) or 0 in a.shape:
    raise FootageError(f'{path}: expected an image [H, W] or [H, W, 1-4 channels]; got an array of shape {a.shape}')
  if a.dtype == np.uint16:
    a = ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
  elif a.dtype == np.bool_:
    a = a.astype(np.uint8) * 255
  elif np.issubdtype(a.dtype, np.floating):
    scale = 255.0 if np.nanmax(a) <= 1.0 else 1.0
    a = np.clip(np.nan_to_num(a) * scale + 0.5, 0, 255).astype(np.uint8)
  elif a.dtype != np.uint8:
    raise FootageError(f'{path}: unsupported pixel type {a.dtype}; expected 8- or 16-bit or float images')
  channels = a.shape[-1]
  if channels in (1, 2):       # gray, gray + alpha
    a = np.repeat(a[..., :1], 3, axis=-1)
  elif channels == 4:          # RGBA
    a = a[..., :3]
  return np.ascontiguousarray(a)


def read_image(path: str, data: bytes | None = None) -> np.ndarray:
  """The image at `path` (or its bytes `data`, already read) as uint8 RGB."""
  import imageio.v3 as iio
  try:
    if data is None:
      image = iio.imread(path)
    else:   # the bytes carry no name: the extension picks the plugin as it does for the path
      image = iio.imread(data, extension=os.path.splitext(path)[1].lower() or None)
  except Exception as e:  # noqa: BLE001 - any decoder failure is the file's fault here
    raise FootageError(f'{path}: cannot read the image ({type(e).__name__}: {cli.one_line(e)[:300]}); expected '
                       'a readable image file') from None
  if image.ndim == 4:   # an animated image: its first frame
    image = image[0]
  return to_rgb8(image, path)


def stem(path: str) -> str:
  """A frame's name without folder and extension: its outputs are named after it."""
  return os.path.splitext(os.path.basename(path))[0]


def list_frames(folder: str, extensions) -> list[str]:
  """The frames of `folder`, sorted by name: files with one of `extensions`, except hidden files (our
  temporaries among them) and every output of infer.py its manifest lists."""
  exts = {e.lower().lstrip('.') for e in extensions}
  outputs = set(Manifest.read(folder, '--input').files)
  names, skipped = [], 0
  for n in sorted(os.listdir(folder)):
    if n.startswith('.') or n.rsplit('.', 1)[-1].lower() not in exts or n == MANIFEST:
      continue
    if n in outputs:
      skipped += 1
      continue
    names.append(n)
  if not names:
    besides = f' besides the {skipped} outputs of infer.py its {MANIFEST} lists' if skipped else ''
    raise FootageError(f'--input {folder}: no frames with extensions {sorted(exts)}{besides} (change --extensions?)')
  return [os.path.join(folder, n) for n in names]


def check_frames(paths: list[str]) -> tuple[tuple[int, int], str]:
  """Decodes every frame (all must be readable and of one size) before anything is written.

  Returns:
    (h, w) of the frames, and the identity of the input: a digest of every frame's name and bytes.
  """
  shape = first = None
  digests = []
  for path in paths:
    try:
      with open(path, 'rb') as f:
        data = f.read()
    except OSError as e:
      raise FootageError(f'{path}: cannot read it ({e.strerror or e}); expected a readable image file') from None
    image = read_image(path, data)
    if shape is None:
      shape, first = image.shape, path
    elif image.shape != shape:
      raise _size_error(path, image.shape, first, shape)
    digests.append([os.path.basename(path), hashlib.sha256(data).hexdigest()])
  return shape[:2], digest(digests)


def _size_error(path, shape, first, first_shape) -> FootageError:
  return FootageError(f'{path}: frame size {shape[1]}x{shape[0]} differs from {first}\'s {first_shape[1]}x'
                      f'{first_shape[0]}; expected all frames of a folder to have one size')


def folder_frames(paths: list[str]) -> Frames:
  shape = None
  for path in paths:
    image = read_image(path)
    if shape is None:
      shape, first = image.shape, path
    elif image.shape != shape:   # changed since check_frames read it
      raise _size_error(path, image.shape, first, shape)
    yield stem(path), image


def video_frames(path: str) -> Frames:
  import imageio.v3 as iio
  try:
    for i, frame in enumerate(iio.imiter(path, plugin='pyav')):
      yield f'{i:06d}', to_rgb8(frame, path)
  except FootageError:
    raise
  except Exception as e:  # noqa: BLE001
    raise FootageError(f'--input {path}: cannot read the video ({type(e).__name__}: {cli.one_line(e)[:300]}); '
                       'expected a video file FFmpeg can decode') from None


def video_length(path: str) -> int:
  """The number of frames of a video: its container's count when it records one, else by decoding."""
  try:
    import av
    with av.open(path) as container:
      recorded = int(container.streams.video[0].frames or 0)
  except Exception:  # noqa: BLE001 - counted by decoding below, which reports a bad file
    recorded = 0
  return recorded or sum(1 for _ in video_frames(path))


# --- Opening the input -----------------------------------------------------------------------------------------

def is_video(source: str) -> bool:
  """Whether --input (absolute) is a video file; a `FootageError` unless it is a file or a folder."""
  if not os.path.exists(source):
    raise FootageError(f'--input {source}: no such folder or video file')
  if not os.path.isfile(source) and not os.path.isdir(source):
    raise FootageError(f'--input {source}: neither a folder nor a regular file; expected a folder of frames or a '
                       'video file')
  return os.path.isfile(source)


@dataclasses.dataclass
class Footage:
  """The input, opened and checked: what the outputs are planned from, and its frames.

  Attributes:
    size: (h, w) of its frames.
    identity: a digest of its frames' names and bytes (a folder) or of its bytes (a video).
    paths: a folder's frames (None for a video).
    depth_frames: the indices of the frames that get a depth map (None for a video: known as it is decoded).
    total: how many frames get a depth map (None if unknown), for the progress only.
  """
  source: str
  is_video: bool
  size: tuple[int, int]
  identity: str
  paths: list[str] | None
  depth_frames: list[int] | None
  total: int | None
  _video: Frames | None = None

  def frames(self) -> Frames:
    """Its frames, decoded in order (a video's from the first one, decoded when it was opened)."""
    return self._video if self.is_video else folder_frames(self.paths)

  def planned_stems(self) -> list[str] | None:
    """A folder's frames that get a depth map, by name (None for a video)."""
    return None if self.is_video else [stem(self.paths[t]) for t in self.depth_frames]


def open_input(source: str, video: bool, extensions, plan: Plan) -> Footage:
  """Opens --input for the pairs of `plan` (see the module docstring); a `FootageError` or `MotionError` if it
  cannot give them."""
  return _open_video(source, plan) if video else _open_folder(source, extensions, plan)


def _open_video(source: str, plan: Plan) -> Footage:
  frames = video_frames(source)
  first = next(frames, None)
  if first is None:
    raise FootageError(f'--input {source}: no frames in the video; expected at least {plan.need}')
  try:
    identity = tree_identity(source)
  except OSError as e:
    raise FootageError(f'--input {source}: cannot read it ({e.strerror or e})') from None
  flight, total = plan.flight, None
  if flight is not None and flight.frames is not None:   # the log must cover the video: counted only then
    count = video_length(source)
    total = sum(1 for t in range(count) if plan.candidates(t))
    flight.check_covers(count, f'--input {source}')
  return Footage(source, True, first[1].shape[:2], identity, None, None, total,
                 _video=itertools.chain([first], frames))


def _open_folder(source: str, extensions, plan: Plan) -> Footage:
  paths = list_frames(source, extensions)
  if len(paths) < plan.need:
    raise FootageError(f'--input {source}: {len(paths)} frame(s); pairs at --frame_shift {plan.frame_shift} need at '
                       f'least {plan.need}')
  seen: dict[str, str] = {}
  for path in paths[plan.first_shift:]:
    name = stem(path)
    if name in seen:
      raise FootageError(f'--input {source}: frames {os.path.basename(seen[name])} and {os.path.basename(path)} '
                         f'would both write outputs named {name}_*; expected one frame per name (rename one, or '
                         'narrow --extensions)')
    seen[name] = path
  if plan.flight is not None:
    plan.flight.check_covers(len(paths), f'--input {source}')
  size, identity = check_frames(paths)   # every frame decoded (readable, one size) before anything is written
  depth_frames = [t for t in range(len(paths)) if plan.candidates(t)]
  return Footage(source, False, size, identity, paths, depth_frames, len(depth_frames))
