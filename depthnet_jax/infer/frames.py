"""The input footage: frames read as people have them, and the input opened (`open_input`) before any work.

Frames are read as people have them: every colour mode `common.images` decodes (grayscale, palette, RGBA, CMYK,
16-bit, 1-bit, ...) becomes 8-bit RGB, and a mode it refuses is one line naming the file and the mode. A folder
must hold frames of one size; its frames are its image files sorted by name, except hidden files (our temporaries)
and the outputs of infer.py its manifest lists. Opening a folder decodes every frame (all readable, one size) and
checks that no two frames would write outputs of one name; opening a video decodes its first frame and its key
frames (`check_video_size`): a frame of another size than the first is refused before any work, naming its index
and both sizes. Either way the input's identity (a digest of its bytes) is taken, and with the flight's motion
the log must cover every frame (a log longer than the input is a note, `motion.Motion.check_covers`). Every
problem is a `FootageError` (a `cli.UserError`) naming the file.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import os
from typing import Iterator

import numpy as np

from depthnet_jax.common import cli, images
from depthnet_jax.infer.outputs import MANIFEST, Manifest, digest, tree_identity
from depthnet_jax.infer.pairs import Plan

Frames = Iterator[tuple[str, np.ndarray]]   # (stem, uint8 RGB [H, W, 3]) in the input's order


class FootageError(cli.UserError):
  """Input footage that cannot be used; the message names the file."""


# --- Reading frames --------------------------------------------------------------------------------------------

def read_image(path: str, data: bytes | None = None) -> np.ndarray:
  """The image at `path` (or its bytes `data`, already read) as uint8 RGB: `images.decode`, whatever the file's
  colour mode (a mode it refuses, or an unreadable file, is a `FootageError` naming the file and the mode)."""
  try:
    return images.read(path) if data is None else images.decode(data, path)
  except images.ImageError as e:
    raise FootageError(str(e)) from None


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
  """A video's frames in decoding order, as uint8 RGB (FFmpeg converts every pixel format to rgb24); a frame of
  another size than the first is a `FootageError` naming its index and both sizes (`check_video_size` finds it
  before any work; this, raised when the frame is met, is the last guard: the outputs before it stay whole)."""
  import imageio.v3 as iio
  first = None
  try:
    for i, frame in enumerate(iio.imiter(path, plugin='pyav')):
      try:
        image = images.to_rgb8(frame, f'--input {path}, frame {i}')
      except images.ImageError as e:
        raise FootageError(str(e)) from None
      if first is None:
        first = image.shape
      elif image.shape != first:
        raise _video_size_error(path, i, image.shape[1::-1], first[1::-1])
      yield f'{i:06d}', image
  except FootageError:
    raise
  except Exception as e:  # noqa: BLE001
    raise _video_error(path, e) from None


def _video_error(path: str, e: Exception) -> FootageError:
  return FootageError(f'--input {path}: cannot read the video ({type(e).__name__}: {cli.one_line(e)[:300]}); '
                      'expected a video file FFmpeg can decode')


def _video_size_error(path: str, index: int, size: tuple[int, int], first: tuple[int, int]) -> FootageError:
  """Frame `index` of (width, height) `size` differs from frame 0's `first`."""
  return FootageError(f'--input {path}, frame {index}: frame size {size[0]}x{size[1]} differs from frame 0\'s '
                      f'{first[0]}x{first[1]}; expected every frame of a video to have one size (re-encode it at '
                      'one size, e.g. ffmpeg -vf scale=W:H)')


def check_video_size(path: str) -> None:
  """A `FootageError` naming the first frame whose size differs from frame 0's, found before any work by decoding
  the key frames only (FFmpeg's `skip_frame=NONKEY`): a video's frame size changes only at a key frame (a new
  size comes with a new sequence header, which only a key frame can follow: H.264, HEVC, VP9, AV1, MPEG-2 alike;
  an intra-only codec's frames are all key frames). Such a key frame starts a closed group: the packets before it
  in decoding order are the frames before it in display order, so its index is their count. This reads the file
  once more (as its identity digest does) and decodes a key frame every few seconds of video (all frames of an
  intra-only codec), less than the run decodes."""
  import av
  try:
    with av.open(path) as container:
      stream = container.streams.video[0]
      stream.codec_context.skip_frame = 'NONKEY'
      packets, keys, first, decoded, every = 0, collections.deque(), None, 0, False
      for packet in container.demux(stream):
        if packet.size:
          if packet.is_keyframe:
            keys.append(packets)
          packets += 1
        for frame in packet.decode():   # key frames only, in order: one per key packet
          every = every or not frame.key_frame   # a decoder that ignores skip_frame: frames counted as decoded
          index = decoded if every else keys.popleft() if keys else packets - 1
          decoded += 1
          if first is None:
            first = (frame.width, frame.height)
          elif (frame.width, frame.height) != first:
            raise _video_size_error(path, index, (frame.width, frame.height), first)
  except FootageError:
    raise
  except Exception as e:  # noqa: BLE001 - a file FFmpeg cannot demux: the same line as decoding it gives
    raise _video_error(path, e) from None


def recorded_length(path: str) -> int | None:
  """The number of frames a video's container records (MP4, MOV, AVI do; MPEG-TS, MKV do not), read from its
  header without decoding; None if it records none or cannot be opened."""
  try:
    import av
    with av.open(path) as container:
      return int(container.streams.video[0].frames or 0) or None
  except Exception:  # noqa: BLE001 - the decoding that follows reports a bad file
    return None


def video_length(path: str) -> int:
  """The number of frames of a video: its container's count when it records one, else by decoding."""
  return recorded_length(path) or sum(1 for _ in video_frames(path))


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
  check_video_size(source)   # every frame of one size, before any work
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
