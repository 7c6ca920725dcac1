"""Footage in, depth out (behind `infer.py`): frames from a folder or a video, pairs, the predictor, the files.

Frames are read as people have them: grayscale, RGBA and 16-bit images are converted to 8-bit RGB. A folder must
hold frames of one size.

**Checks first.** `run` checks every option, the input, the checkpoint's path and recorded geometry, the output
folder and every file the run would write, and for a folder decodes every frame, all before it loads the model
or creates any file or folder: a user error is one `cli.UserError` (one line from `infer.py`) and leaves the
disk as it was.

The output folder (its manifest `depthnet_infer.json`, what may be replaced, temporaries) is
`depthnet_jax.outputs`'s.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import os
import re
import time
from typing import Iterator

import numpy as np

from depthnet_jax.checkpoints import loading, torch_pickle
from depthnet_jax.common import atomic, cli, colormaps, compile_cache, geometry, progress
from depthnet_jax.common.conventions import MAX_DEPTH, STILLBOX_FOV
from depthnet_jax.infer import motion
from depthnet_jax.infer import predictor as inference
from depthnet_jax.infer.outputs import (
  KIND_SUFFIXES,
  MANIFEST,
  SHIFTS_CSV,
  Animation,
  Manifest,
  OutputError,
  OutputFolder,
  check_targets,
  digest,
  tree_identity,
)

IMAGE_EXTENSIONS = ('jpg', 'jpeg', 'png', 'bmp')
RESULTS_VERSION = 1          # bump when the same settings would give other bytes (colormaps, writers, resizing)
MAX_SIZE = 16384             # --height/--width beyond this are typos, not network inputs
MAX_SHIFT = 10               # --max_shift's default: the authors' frame picker looks at most 10 frames back
MAX_SHIFT_LIMIT = 100        # --max_shift beyond this are typos (and K pairs per frame go through the network)


class FootageError(cli.UserError):
  """Input footage that cannot be used; the message names the file."""


class CheckpointError(cli.UserError):
  """A checkpoint that is missing or cannot be loaded; the message names it."""


# --- Frames ------------------------------------------------------------------------------------------------------

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


def _folder_frames(paths: list[str]) -> Iterator[tuple[str, np.ndarray]]:
  shape = None
  for path in paths:
    image = read_image(path)
    if shape is None:
      shape, first = image.shape, path
    elif image.shape != shape:   # changed since check_frames read it
      raise _size_error(path, image.shape, first, shape)
    yield os.path.splitext(os.path.basename(path))[0], image


def _video_frames(path: str) -> Iterator[tuple[str, np.ndarray]]:
  import imageio.v3 as iio
  try:
    for i, frame in enumerate(iio.imiter(path, plugin='pyav')):
      yield f'{i:06d}', to_rgb8(frame, path)
  except FootageError:
    raise
  except Exception as e:  # noqa: BLE001
    raise FootageError(f'--input {path}: cannot read the video ({type(e).__name__}: {cli.one_line(e)[:300]}); '
                       'expected a video file FFmpeg can decode') from None


# --- Options ---------------------------------------------------------------------------------------------------

def parse_frame_shift(value) -> int | str:
  """`--frame_shift`: an integer >= 1 or 'auto'."""
  if isinstance(value, str):
    text = value.strip().lower()
    if text == 'auto':
      return 'auto'
    try:
      value = int(text)   # shown as a number from here on, as the other flags' values
    except ValueError:
      raise cli.UserError(f"--frame_shift={value!r}: expected an integer >= 1 or 'auto'") from None
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise cli.UserError(f"--frame_shift={value!r}: expected an integer >= 1 or 'auto'")
  return value


def check_options(*, frame_shift, batch_size, no_resize, height, width, fov, train_fov, extensions, video_format,
                  fps, displacement=None, motion_log=None, max_shift=None, target_depth=None,
                  shift_statistic='mean', nominal_displacement=None) -> list[str]:
  """Checks every option against its stated range (see infer.py's --help); returns the extensions, normalised."""
  frame_shift = parse_frame_shift(frame_shift)
  cli.check_int('--batch_size', batch_size, 1)
  if (height is None) != (width is None):
    raise cli.UserError(f'--height={height!r} --width={width!r}: expected both (the network input size) or neither')
  if height is not None:
    cli.check_int('--height', height, 1, MAX_SIZE)
    cli.check_int('--width', width, 1, MAX_SIZE)
  if fov is not None:
    cli.check_float('--fov', fov, 0, 180, low_open=True, high_open=True)
  if train_fov is not None:
    cli.check_float('--train_fov', train_fov, 0, 180, low_open=True, high_open=True)
    if fov is None:
      raise cli.UserError(f'--train_fov={train_fov!r}: used only with --fov (the footage\'s FOV it is matched to); '
                          'expected --fov too')
  chosen = [name for name, given in (('--no_resize', no_resize), ('--height/--width', height is not None),
                                     ('--fov', fov is not None)) if given]
  if len(chosen) > 1:
    raise cli.UserError(f'{" and ".join(chosen)}: expected at most one of --no_resize, --height/--width, --fov '
                        '(each sets the network input size)')
  exts = [str(e).strip().lower().lstrip('.') for e in extensions]
  if not [e for e in exts if e]:
    raise cli.UserError(f'--extensions={",".join(map(str, extensions))!r}: expected at least one image extension, '
                        'e.g. jpg,png')
  cli.check_choice('--video_format', video_format, ('gif', 'mp4'))
  if video_format == 'gif':
    try:
      cli.check_float('--fps', fps, 0.01, 100)
    except cli.UserError as e:
      raise cli.UserError(f'{e} with --video_format gif (GIF frame delays are whole 1/100 s)') from None
  else:
    cli.check_float('--fps', fps, 0, 1000, low_open=True)
  if displacement is not None and motion_log is not None:
    raise cli.UserError(f'--displacement={displacement!r} and --motion {motion_log}: expected one of them (both say '
                        'how far the camera moved)')
  if displacement is not None:
    motion.constant(displacement)
  if nominal_displacement is not None:
    cli.check_float('--nominal_displacement', nominal_displacement, 0, motion.MAX_DISPLACEMENT, low_open=True)
  if frame_shift == 'auto':
    if displacement is None and motion_log is None:
      raise cli.UserError('--frame_shift auto: expected --displacement M or --motion CSV too (the pairs of '
                          'different shifts are put on one metric scale by the camera\'s displacement)')
    cli.check_int('--max_shift', MAX_SHIFT if max_shift is None else max_shift, 1, MAX_SHIFT_LIMIT)
    cli.check_float('--target_depth', inference.TARGET_DEPTH if target_depth is None else target_depth, 0,
                    MAX_DEPTH, low_open=True)
    cli.check_choice('--shift_statistic', shift_statistic, inference.STATISTICS)
  else:
    given = [f'{n}={v!r}' for n, v in (('--max_shift', max_shift), ('--target_depth', target_depth)) if v is not None]
    if shift_statistic != 'mean':
      given.append(f'--shift_statistic={shift_statistic!r}')
    if given:
      raise cli.UserError(f'{" ".join(given)}: used only with --frame_shift auto; expected --frame_shift auto too')
  return [e for e in exts if e]


def network_size(default_size: tuple[int, int], default_fov: float, height: int, width: int, *, no_resize=False,
                 size=None, fov=None, train_fov=None) -> tuple[int, int] | None:
  """The network input size the options ask for, for frames of height x width (None: as they are)."""
  if no_resize:
    return None
  if size is not None:
    return tuple(size)
  if fov is not None:
    try:
      return geometry.size_for_fov(height, width, fov, default_size[1], train_fov or default_fov)
    except cli.UserError as e:
      raise cli.UserError(f'--fov={fov!r}: {e}') from None
  return tuple(default_size)


# --- The run ---------------------------------------------------------------------------------------------------

# Errors of the checkpoint code whose message already names the checkpoint and what is wrong with it.
def _named_errors() -> tuple[type[BaseException], ...]:
  return cli.UserError, FileNotFoundError, torch_pickle.TorchCheckpointError


def _checkpoint(checkpoint: str, prefer: str) -> loading.CheckpointInfo:
  if not os.path.exists(checkpoint):
    raise CheckpointError(f'--checkpoint {checkpoint}: no such file or directory; expected a training workdir, a '
                          'checkpoint directory or a .pth.tar')
  try:
    return loading.checkpoint_info(checkpoint, prefer)
  except _named_errors() as e:
    raise CheckpointError(f'--checkpoint: {cli.one_line(e)}') from e
  except Exception as e:  # noqa: BLE001 - any failure to read its config: the checkpoint is damaged
    raise CheckpointError(f'--checkpoint {checkpoint}: cannot read its model_config ({type(e).__name__}: '
                          f'{cli.one_line(e)[:300]}); expected an intact checkpoint') from e


def _load(info: loading.CheckpointInfo, checkpoint: str, prefer: str) -> inference.Predictor:
  try:
    return inference.Predictor.from_checkpoint(info.path, prefer, info=info)
  except _named_errors() as e:
    raise CheckpointError(f'--checkpoint: {cli.one_line(e)}') from e
  except Exception as e:  # noqa: BLE001 - a checkpoint that does not load (truncated, damaged, not ours)
    raise CheckpointError(f'--checkpoint {checkpoint}: cannot load {info.resolved} ({type(e).__name__}: '
                          f'{cli.one_line(e)[:300]}); expected an intact checkpoint') from e


def _inside(path: str, folder: str) -> bool:
  path, folder = os.path.realpath(path), os.path.realpath(folder)
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class _Plan:
  """Which pairs give each frame its depth: (frame t - k, frame t) for a fixed k, or every k of 1..K for
  `--frame_shift auto`; with the flight's motion, the pairs whose displacement is zero or unknown are dropped."""

  def __init__(self, frame_shift, max_shift: int, flight: motion.Motion | None):
    self.auto = frame_shift == 'auto'
    self.shifts = tuple(range(1, max_shift + 1)) if self.auto else (frame_shift,)
    self.reach = max(self.shifts)   # frames held back in memory
    self.flight = flight

  def candidates(self, t: int) -> list[tuple[int, float]]:
    """(k, displacement in metres or NaN without motion) of the usable pairs (t - k, t) of frame t."""
    out = []
    for k in self.shifts:
      if k > t:
        break
      d = self.flight.displacement(t - k, t) if self.flight else float('nan')
      if self.flight is None or motion.usable(d):
        out.append((k, d))
    return out


def _video_length(path: str) -> int:
  """The number of frames of a video: its container's count when it records one, else by decoding."""
  try:
    import av
    with av.open(path) as container:
      recorded = int(container.streams.video[0].frames or 0)
  except Exception:  # noqa: BLE001 - counted by decoding below, which reports a bad file
    recorded = 0
  return recorded or sum(1 for _ in _video_frames(path))


def _check_target(target: float, spec) -> None:
  low, high = inference.CLAMP_RANGE
  if spec.clamp and not low <= target <= high:
    raise cli.UserError(f'--target_depth={target!r}: the network clamps its depths to [{low:g}, {high:g}] m '
                        f'(clamp=True); expected a target inside that range')


SHIFTS_COLUMNS = ('frame', 'index', 'first_frame', 'shift', 'displacement_m', 'scale', 'raw_mean_m', 'raw_median_m',
                  'candidates', 'note')


def _csv_text(rows: list[dict]) -> str:
  """shifts.csv: a row per frame (SHIFTS_COLUMNS; a skipped frame has only frame, index and note)."""
  import csv
  import io
  text = io.StringIO()
  writer = csv.writer(text, lineterminator='\n')
  writer.writerow(SHIFTS_COLUMNS)
  for row in rows:
    writer.writerow([f'{v:.6g}' if isinstance(v, float) else v for v in (row.get(c, '') for c in SHIFTS_COLUMNS)])
  return text.getvalue()


def run(*, checkpoint: str, source: str, output: str, frame_shift: int | str = 1, batch_size: int = 8,
        no_resize: bool = False, height: int | None = None, width: int | None = None, fov: float | None = None,
        train_fov: float | None = None, extensions=IMAGE_EXTENSIONS, output_depth=False, output_disp=False,
        output_raw=False, output_video=False, video_format: str = 'gif', fps: float = 10.0, overwrite=False,
        prefer: str = 'best', compilation_cache: str = '', no_compilation_cache: bool = False,
        displacement: float | None = None, motion_log: str | None = None, max_shift: int | None = None,
        target_depth: float | None = None, shift_statistic: str = 'mean',
        nominal_displacement: float | None = None) -> str:
  """Runs `infer.py` (the keyword arguments are its flags; `motion_log` is --motion); returns the summary line.

  Raises:
    cli.UserError (FootageError, CheckpointError, OutputError, motion.MotionError): a user error, found before any
      file is written when it can be (see the module docstring).
  """
  extensions = check_options(frame_shift=frame_shift, batch_size=batch_size, no_resize=no_resize, height=height,
                             width=width, fov=fov, train_fov=train_fov, extensions=extensions,
                             video_format=video_format, fps=fps, displacement=displacement, motion_log=motion_log,
                             max_shift=max_shift, target_depth=target_depth, shift_statistic=shift_statistic,
                             nominal_displacement=nominal_displacement)
  frame_shift = parse_frame_shift(frame_shift)
  auto = frame_shift == 'auto'
  max_shift = MAX_SHIFT if max_shift is None else int(max_shift)
  target_depth = inference.TARGET_DEPTH if target_depth is None else float(target_depth)
  source = os.path.abspath(os.fspath(source))
  if not os.path.exists(source):
    raise FootageError(f'--input {source}: no such folder or video file')
  is_video = os.path.isfile(source)
  if not is_video and not os.path.isdir(source):
    raise FootageError(f'--input {source}: neither a folder nor a regular file; expected a folder of frames or a '
                       'video file')
  flight = None
  if displacement is not None:
    flight = motion.constant(displacement)
  elif motion_log is not None:
    flight = motion.read_log(motion_log)
  plan = _Plan(frame_shift, max_shift, flight)
  first_shift = plan.shifts[0]
  if not (output_depth or output_disp or output_raw or output_video):
    output_depth = output_disp = output_raw = True
    output_video = is_video
  output = cli.check_writable_dir(output, '--output')
  info = _checkpoint(os.fspath(checkpoint), prefer)
  if os.path.isdir(info.resolved) and _inside(output, info.resolved):
    raise OutputError(f'--output {output}: inside the checkpoint {info.resolved}; expected a folder outside it')
  nominal = float(nominal_displacement) if nominal_displacement is not None else info.displacement
  nominal_said = ('--nominal_displacement' if nominal_displacement is not None
                  else 'recorded in the checkpoint' if info.displacement_recorded
                  else 'Still Box\'s; the checkpoint records none')

  # The frames: a folder's are listed (outputs of ours skipped), a video's first one decoded.
  need = first_shift + 1
  if is_video:
    frames = _video_frames(source)
    first = next(frames, None)
    if first is None:
      raise FootageError(f'--input {source}: no frames in the video; expected at least {need}')
    frames = itertools.chain([first], frames)
    try:
      input_id = tree_identity(source)
    except OSError as e:
      raise FootageError(f'--input {source}: cannot read it ({e.strerror or e})') from None
    frame_size, paths = first[1].shape[:2], None
    count = _video_length(source) if flight is not None and flight.frames is not None else None
    total = None if count is None else sum(1 for t in range(count) if plan.candidates(t))   # progress only
  else:
    paths = list_frames(source, extensions)
    if len(paths) < need:
      raise FootageError(f'--input {source}: {len(paths)} frame(s); pairs at --frame_shift {frame_shift} need at '
                         f'least {need}')
    count = len(paths)
    seen: dict[str, str] = {}
    for path in paths[first_shift:]:
      stem = os.path.splitext(os.path.basename(path))[0]
      if stem in seen:
        raise FootageError(f'--input {source}: frames {os.path.basename(seen[stem])} and {os.path.basename(path)} '
                           f'would both write outputs named {stem}_*; expected one frame per name (rename one, or '
                           'narrow --extensions)')
      seen[stem] = path
    if flight is not None:
      flight.check_covers(count, f'--input {source}')
    # every frame decoded (readable, one size) before anything is written
    frame_size, input_id = check_frames(paths)
    with_pairs = [t for t in range(count) if plan.candidates(t)]   # the frames that get a depth map
    total = len(with_pairs)
  if is_video and count is not None:
    flight.check_covers(count, f'--input {source}')
  size = network_size(info.train_size or inference.DEFAULT_SIZE, info.train_fov or STILLBOX_FOV,
                      *frame_size, no_resize=no_resize, size=(height, width) if height is not None else None,
                      fov=fov, train_fov=train_fov)

  # What determines the results, and every file this run would write, checked against the folder.
  try:
    checkpoint_id = tree_identity(info.resolved)
  except OSError as e:
    raise CheckpointError(f'--checkpoint {checkpoint}: cannot read {e.filename or info.resolved} '
                          f'({e.strerror or e})') from None
  settings = {'results_version': RESULTS_VERSION, 'checkpoint': info.resolved, 'checkpoint_id': checkpoint_id,
              'input': source, 'input_id': input_id, 'frame_shift': frame_shift,
              'network_input': list(size) if size else 'as is'}
  if flight is not None:   # only then: earlier runs' settings (without these) stay the same settings
    settings['motion'] = (flight.source if flight.kind == 'constant'
                          else f'--motion {flight.path} ({tree_identity(flight.path)})')
    settings['nominal_displacement'] = nominal
  if auto:
    settings.update(max_shift=max_shift, target_depth=target_depth, shift_statistic=shift_statistic)
  key = digest({k: v for k, v in settings.items() if k not in ('checkpoint', 'input')})
  all_settings = {key: settings}
  video_key = None
  if output_video:
    video_settings = dict(settings, fps=float(fps))
    video_key = digest({k: v for k, v in video_settings.items() if k not in ('checkpoint', 'input')})
    all_settings[video_key] = video_settings
  suffixes = [KIND_SUFFIXES[k] for k, on in (('depth', output_depth), ('disp', output_disp), ('raw', output_raw))
              if on]
  animation_name = f'depth.{video_format}' if output_video else None
  shifts_name = SHIFTS_CSV if flight is not None else None
  manifest = Manifest.read(output, '--output') if os.path.isdir(output) else Manifest(output)
  if manifest.writer_alive():
    raise OutputError(f'--output {output}: another infer.py (pid {manifest.run["pid"]}, started '
                      f'{manifest.run.get("started")}) is writing there; expected it to finish first, or choose '
                      'another --output')
  if is_video:
    planned = None
    pattern = re.compile(r'^(\d{6,})(' + '|'.join(map(re.escape, suffixes)) + r')$') if suffixes else None
    existing = os.listdir(output) if os.path.isdir(output) else []
    targets = {n: key for n in existing if pattern and (m := pattern.match(n)) and int(m[1]) >= first_shift}
  else:
    planned = [os.path.splitext(os.path.basename(paths[t]))[0] + x for t in with_pairs for x in suffixes]
    targets = dict.fromkeys(planned, key)
  singles = {}
  if animation_name:
    targets[animation_name] = singles[animation_name] = video_key
  if shifts_name:
    targets[shifts_name] = singles[shifts_name] = key
  if os.path.isdir(output):
    check_targets(output, manifest, targets, all_settings, overwrite)

  if not is_video:
    frames = _folder_frames(paths)
  # After every check (a mistake creates no cache folder), before the first compile (the model's load).
  compile_cache.enable(compilation_cache, disabled=no_compilation_cache)
  predictor = _load(info, os.fspath(checkpoint), prefer)
  if auto:
    _check_target(target_depth, predictor.spec)

  animation = Animation(os.path.join(output, animation_name), fps) if animation_name else None
  out = OutputFolder(output, manifest, key, video_key, all_settings, planned, suffixes, animation, singles=singles)
  window: collections.deque = collections.deque(maxlen=plan.reach + 1)
  jobs: list = []           # (frame index, stem, image, [(k, first image, displacement, first stem)])
  rows: list[dict] = []     # shifts.csv
  counts, started = {'frames': 0, 'pairs': 0, 'predicted': 0, 'skipped': 0}, time.time()
  shown = progress.Progress(total or None, 'pairs', desc='predicted')
  per_call = max(1, batch_size // len(plan.shifts)) if auto else batch_size

  def flush():
    width = len(plan.shifts)   # candidates per frame: 1, or K with --frame_shift auto (padded: one shape per call)
    firsts, seconds = [], []
    for _, _, image, cands in jobs:
      firsts += [c[1] for c in cands + [cands[-1]] * (width - len(cands))]
      seconds += [image] * width
    low, high = predictor.predict_pairs(np.stack(firsts), np.stack(seconds), size)
    counts['predicted'] += sum(len(c) for *_, c in jobs)
    out.enter([stem for _, stem, _, _ in jobs])
    for j, (t, stem, second, cands) in enumerate(jobs):
      at = j * width
      pick = inference.choose_shift(low[at:at + len(cands)], target_depth, shift_statistic)[0] if auto else 0
      k, _, d, first_stem = cands[pick]
      raw_low = low[at + pick]
      scale = inference.metric_scale(d, nominal) if flight is not None else 1.0
      depth = (high[at + pick] * np.float32(scale)).astype(np.float32)
      if flight is not None:
        rows.append({'frame': stem, 'index': t, 'first_frame': first_stem, 'shift': k,
                     'displacement_m': float(d), 'scale': float(scale), 'raw_mean_m': float(raw_low.mean()),
                     'raw_median_m': float(np.median(raw_low)), 'candidates': len(cands)})
      if output_depth:
        out.write(f'{stem}_depth.png', atomic.write_png, colormaps.depth_to_rgb(depth))
      if output_disp:
        out.write(f'{stem}_disp.png', atomic.write_png, colormaps.disparity_to_rgb(depth))
      if output_raw:
        out.write(f'{stem}_depth.npy', atomic.write_npy, depth)
      if animation:
        animation.add(np.concatenate([second, colormaps.depth_to_rgb(depth)], axis=1))
      counts['pairs'] += 1
    shown.update(len(jobs))
    jobs.clear()

  try:
    for t, (stem, image) in enumerate(frames):
      counts['frames'] += 1
      if flight is not None and flight.frames is not None and t >= flight.frames:
        raise motion.MotionError(f'--motion {flight.path}: the log covers {flight.frames} frames but --input '
                                 f'{source} has more; expected one row per frame')
      window.append((stem, image))
      cands = plan.candidates(t)
      if not cands:
        if t >= first_shift:
          counts['skipped'] += 1
          rows.append({'frame': stem, 'index': t, 'note': 'skipped: displacement zero or unknown for every pair'})
        continue
      held = list(window)
      jobs.append((t, stem, image, [(k, held[-1 - k][1], d, held[-1 - k][0]) for k, d in cands]))
      if len(jobs) == per_call:
        flush()
    if jobs:
      flush()
    if counts['pairs'] == 0:
      if counts['frames'] >= need:
        raise FootageError(f'--input {source}: no pair has a usable displacement ({flight.source} gives zero or '
                           'unknown distances between the frames of every pair); expected the camera to move')
      raise FootageError(f'--input {source}: {counts["frames"]} frame(s); pairs at --frame_shift {frame_shift} '
                         f'need at least {need}')
    if shifts_name:
      out.write(shifts_name, atomic.write_text, _csv_text(rows))
    out.finish(counts['pairs'])
  except BaseException as e:
    shown.close()
    out.abort(e, counts['pairs'])
    raise
  shown.close()
  elapsed = time.time() - started
  network = 'as they are' if size is None else f'{size[1]}x{size[0]}'
  used = [r for r in rows if 'shift' in r]   # with the flight's motion (always with auto): a row per depth map
  if auto:
    shifts = np.array([r['shift'] for r in used])
    pairs_said = (f'{counts["pairs"]} depth maps (shift auto 1..{max_shift}, target {target_depth:g} m by '
                  f'{shift_statistic}: chose {shifts.min()}'
                  f'{"" if shifts.min() == shifts.max() else f" to {shifts.max()}"}, median {np.median(shifts):g}; '
                  f'{counts["predicted"]} pairs predicted)')
  else:
    pairs_said = f'{counts["pairs"]} pairs (shift {frame_shift})'
  if flight is None:
    depth_said = (f'depths assume the nominal displacement of {nominal:g} m between a pair\'s frames ({nominal_said});'
                  ' give --displacement or --motion for metric depth')
  else:
    scales = [r['scale'] for r in used]
    depth_said = (f'metric depths from {flight.source} (scale {min(scales):.3g} to {max(scales):.3g} over a nominal '
                  f'{nominal:g} m, {nominal_said}); {counts["skipped"]} frame(s) skipped: displacement zero or '
                  f'unknown; per frame in {SHIFTS_CSV}')
  rate = f'{counts["pairs"] / elapsed:.1f} {"depth maps" if auto else "pairs"}/s'
  return (f'{counts["frames"]} frames, {pairs_said}, network input {network}: {elapsed:.1f} s, {rate} -> {output} '
          f'({MANIFEST}: complete); {depth_said}')
