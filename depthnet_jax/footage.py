"""Footage in, depth out (behind `infer.py`): frames from a folder or a video, pairs, the predictor, the files.

Frames are read as people have them: grayscale, RGBA and 16-bit images are converted to 8-bit RGB. A folder must
hold frames of one size. Every file is written atomically (temporary name, then rename), so an interrupted run
leaves no truncated picture.
"""

from __future__ import annotations

import collections
import os
import sys
import time
from typing import Iterator

import numpy as np

from depthnet_jax import inference

IMAGE_EXTENSIONS = ('jpg', 'jpeg', 'png', 'bmp')


class FootageError(ValueError):
  """Input footage that cannot be used; the message names the file."""


def to_rgb8(image: np.ndarray, path: str) -> np.ndarray:
  """Any decoded image -> uint8 RGB `[H, W, 3]` (gray expanded, alpha dropped, 16-bit and float scaled)."""
  a = np.asarray(image)
  if a.ndim == 2:
    a = a[..., None]
  if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4):
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


def read_image(path: str) -> np.ndarray:
  import imageio.v3 as iio
  try:
    image = iio.imread(path)
  except Exception as e:  # noqa: BLE001 - any decoder failure is the file's fault here
    raise FootageError(f'{path}: cannot read the image ({type(e).__name__}: {e})') from None
  if image.ndim == 4:   # an animated image: its first frame
    image = image[0]
  return to_rgb8(image, path)


def list_frames(folder: str, extensions) -> list[str]:
  exts = {e.lower().lstrip('.') for e in extensions}
  names = sorted(n for n in os.listdir(folder) if n.rsplit('.', 1)[-1].lower() in exts and not n.startswith('.'))
  if not names:
    raise FootageError(f'{folder}: no frames with extensions {sorted(exts)} (change --extensions?)')
  return [os.path.join(folder, n) for n in names]


def _folder_frames(paths: list[str]) -> Iterator[tuple[str, np.ndarray]]:
  shape = None
  for path in paths:
    image = read_image(path)
    if shape is None:
      shape, first = image.shape, path
    elif image.shape != shape:
      raise FootageError(f'{path}: frame size {image.shape[1]}x{image.shape[0]} differs from {first}\'s '
                         f'{shape[1]}x{shape[0]}; all frames of a folder must have one size')
    yield os.path.splitext(os.path.basename(path))[0], image


def _video_frames(path: str) -> Iterator[tuple[str, np.ndarray]]:
  import imageio.v3 as iio
  try:
    for i, frame in enumerate(iio.imiter(path, plugin='pyav')):
      yield f'{i:06d}', to_rgb8(frame, path)
  except FootageError:
    raise
  except Exception as e:  # noqa: BLE001
    raise FootageError(f'{path}: cannot read the video ({type(e).__name__}: {e})') from None


class _Animation:
  """Input beside depth, as a GIF (kept in memory) or an MP4 (streamed); written atomically."""

  def __init__(self, path: str, fps: float):
    self.path, self.fps, self.frames, self._writer, self._tmp = path, fps, [], None, None

  def add(self, frame: np.ndarray) -> None:
    if self.path.endswith('.gif'):
      self.frames.append(frame)
      return
    import imageio.v3 as iio
    frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)))  # yuv420p: even sizes
    if self._writer is None:
      directory, name = os.path.split(self.path)
      self._tmp = os.path.join(directory, f'.{name}.tmp-{os.getpid()}.mp4')
      self._writer = iio.imopen(self._tmp, 'w', plugin='pyav')
      self._writer.init_video_stream('libx264', fps=self.fps)
    self._writer.write_frame(frame)

  def close(self) -> None:
    if self.path.endswith('.gif'):
      import imageio.v3 as iio
      inference._atomic(self.path, lambda tmp: iio.imwrite(tmp, np.stack(self.frames), extension='.gif',
                                                           duration=1000 / self.fps, loop=0))
    elif self._writer is not None:
      self._writer.close()
      os.replace(self._tmp, self.path)


def network_size(predictor: inference.Predictor, height: int, width: int, *, no_resize=False, size=None, fov=None,
                 train_fov=None) -> tuple[int, int] | None:
  """The network input size the flags ask for, for frames of height x width."""
  chosen = [name for name, given in (('--no_resize', no_resize), ('--height/--width', size), ('--fov', fov)) if given]
  if len(chosen) > 1:
    raise ValueError(f'choose one of {", ".join(chosen)}')
  if no_resize:
    return None
  if size:
    return tuple(size)
  if fov:
    train_width = predictor.default_size()[1]
    return inference.size_for_fov(height, width, fov, train_width, train_fov or predictor.train_fov)
  return predictor.default_size()


def run(*, checkpoint: str, source: str, output: str, frame_shift: int = 1, batch_size: int = 8,
        no_resize: bool = False, height: int | None = None, width: int | None = None, fov: float | None = None,
        train_fov: float | None = None, extensions=IMAGE_EXTENSIONS, output_depth=False, output_disp=False,
        output_raw=False, output_video=False, video_format: str = 'gif', fps: float = 10.0) -> str:
  """Runs `infer.py`; returns the summary line."""
  if frame_shift < 1 or batch_size < 1:
    raise ValueError(f'frame_shift and batch_size must be at least 1; got {frame_shift} and {batch_size}')
  if (height is None) != (width is None):
    raise ValueError('give both --height and --width, or neither')
  if not os.path.exists(source):
    raise FileNotFoundError(f'{source}: no such folder or video file')
  is_video = os.path.isfile(source)
  if not (output_depth or output_disp or output_raw or output_video):
    output_depth = output_disp = output_raw = True
    output_video = is_video
  if is_video:
    frames, total = _video_frames(source), None
  else:
    paths = list_frames(source, extensions)
    if len(paths) <= frame_shift:
      raise FootageError(f'{source}: {len(paths)} frame(s); pairs at --frame_shift {frame_shift} need at least '
                         f'{frame_shift + 1}')
    frames, total = _folder_frames(paths), len(paths) - frame_shift
  predictor = inference.Predictor.from_checkpoint(checkpoint)
  os.makedirs(output, exist_ok=True)
  animation = _Animation(os.path.join(output, f'depth.{video_format}'), fps) if output_video else None
  window: collections.deque = collections.deque(maxlen=frame_shift + 1)
  batch: list = []
  size, counts, started = None, {'frames': 0, 'pairs': 0}, time.time()

  def flush():
    depth = predictor.predict_batch(np.stack([b[1] for b in batch]), np.stack([b[2] for b in batch]), size)
    for (stem, _, second), d in zip(batch, depth):
      if output_depth:
        inference.write_png(os.path.join(output, f'{stem}_depth.png'), inference.depth_to_rgb(d))
      if output_disp:
        inference.write_png(os.path.join(output, f'{stem}_disp.png'), inference.disparity_to_rgb(d))
      if output_raw:
        inference.write_npy(os.path.join(output, f'{stem}_depth.npy'), d.astype(np.float32))
      if animation:
        animation.add(np.concatenate([second, inference.depth_to_rgb(d)], axis=1))
    counts['pairs'] += len(batch)
    batch.clear()
    rate = counts['pairs'] / max(time.time() - started, 1e-9)
    print(f'\r{counts["pairs"]}/{total or "?"} pairs, {rate:.1f} pairs/s', end='', file=sys.stderr, flush=True)

  for stem, image in frames:
    if size is None and counts['frames'] == 0:
      size = network_size(predictor, *image.shape[:2], no_resize=no_resize,
                          size=(height, width) if height else None, fov=fov, train_fov=train_fov)
    counts['frames'] += 1
    window.append((stem, image))
    if len(window) == frame_shift + 1:
      batch.append((window[-1][0], window[0][1], window[-1][1]))
      if len(batch) == batch_size:
        flush()
  if batch:
    flush()
  print(file=sys.stderr)
  if counts['pairs'] == 0:
    raise FootageError(f'{source}: {counts["frames"]} frame(s); pairs at --frame_shift {frame_shift} need at least '
                       f'{frame_shift + 1}')
  if animation:
    animation.close()
  elapsed = time.time() - started
  shown = 'as they are' if size is None else f'{size[1]}x{size[0]}'
  return (f'{counts["frames"]} frames, {counts["pairs"]} pairs (shift {frame_shift}), network input {shown}: '
          f'{elapsed:.1f} s, {counts["pairs"] / elapsed:.1f} pairs/s -> {output}')
