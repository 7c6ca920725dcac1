"""infer.py's flags, checked once: `from_flags` turns the parsed command line into a frozen `InferOptions`.

Every flag is checked against its stated range (infer.py's --help) and every combination that cannot work is
refused here, before the run looks at the input, the checkpoint or the output folder. What the run needs is
settled here once, so that no later stage parses a flag again: the frame shift parsed (an integer or 'auto'), the
extensions normalised, the network input size as one (h, w), the auto-shift settings defaulted, and the outputs
chosen (without any --output_* flag: depth and disparity PNGs and the raw arrays, and the animation for a video).
"""

from __future__ import annotations

import dataclasses
import os

from depthnet_jax.checkpoints.loading import MAX_IMAGE_SIDE
from depthnet_jax.common import cli, compile_cache, memory
from depthnet_jax.common.conventions import MAX_DEPTH
from depthnet_jax.infer import motion
from depthnet_jax.infer.predictor import STATISTICS, TARGET_DEPTH

IMAGE_EXTENSIONS = ('jpg', 'jpeg', 'png', 'bmp')
MAX_SIZE = MAX_IMAGE_SIDE    # --height/--width beyond this are typos, not network inputs (16384)
MAX_SHIFT = 10               # --max_shift's default: the authors' frame picker looks at most 10 frames back
MAX_SHIFT_LIMIT = 100        # --max_shift beyond this are typos (and K pairs per frame go through the network)
MULTI_SHIFTS = ('auto', 'fuse')   # --frame_shift values that try every shift 1..--max_shift
MAX_ANGLE = 360.0            # --camera_rotation angles beyond this are typos
MAX_TIME_OFFSET = 1e7        # seconds (115 days) beyond which --time_offset is a typo


@dataclasses.dataclass(frozen=True)
class InferOptions:
  """What one run of infer.py does, every flag checked (made by `from_flags`; the fields are its flags').

  `source` is --input made absolute, `motion_log` is --motion, `size` is --height/--width; `max_shift`,
  `target_depth` and `shift_statistic` hold their defaults unless `frame_shift` is 'auto'.
  """
  checkpoint: str
  source: str
  output: str
  frame_shift: int | str
  max_shift: int
  target_depth: float
  shift_statistic: str
  displacement: float | None
  motion_log: str | None
  nominal_displacement: float | None
  batch_size: int
  no_resize: bool
  size: tuple[int, int] | None
  fov: float | None
  train_fov: float | None
  extensions: tuple[str, ...]
  output_depth: bool
  output_disp: bool
  output_raw: bool
  output_video: bool
  video_format: str
  fps: float
  overwrite: bool
  compilation_cache: str
  no_compilation_cache: bool
  prefer: str = 'best'
  runtime: str = 'auto'
  attitude: str | None = None
  frame_times: str | None = None
  time_offset: float = 0.0
  camera_rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)
  calibration: str | None = None
  undistort_balance: float | None = None

  @property
  def auto(self) -> bool:
    """Several candidate shifts per frame: 'auto' (one kept per frame) or 'fuse' (one kept per pixel)."""
    return self.frame_shift in MULTI_SHIFTS

  @property
  def fuse(self) -> bool:
    return self.frame_shift == 'fuse'


def parse_frame_shift(value) -> int | str:
  """`--frame_shift`: an integer >= 1, 'auto' or 'fuse'."""
  expected = "expected an integer >= 1, 'auto' or 'fuse'"
  if isinstance(value, str):
    text = value.strip().lower()
    if text in MULTI_SHIFTS:
      return text
    try:
      value = int(text)   # shown as a number from here on, as the other flags' values
    except ValueError:
      raise cli.UserError(f"--frame_shift={value!r}: {expected}") from None
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise cli.UserError(f"--frame_shift={value!r}: {expected}")
  return value


def from_flags(flags) -> InferOptions:
  """infer.py's parsed flags (an `argparse.Namespace` of its `parser()`) checked, as `InferOptions`.

  Raises:
    cli.UserError: a flag out of its range, or flags that contradict each other; the message names them.
  """
  compile_cache.check_flag(flags.compilation_cache, flags.no_compilation_cache)
  frame_shift = parse_frame_shift(flags.frame_shift)
  batch_size = cli.check_int('--batch_size', flags.batch_size, 1)
  size, fov, train_fov = _network_input(flags)
  extensions = _extensions(flags.extensions)
  fps = _fps(flags.video_format, flags.fps)
  displacement, nominal = _motion(flags)
  max_shift, target_depth, shift_statistic = _auto_shift(frame_shift, flags)
  camera = _camera(flags)
  source = os.path.abspath(os.fspath(flags.input))
  chosen = (flags.output_depth, flags.output_disp, flags.output_raw, flags.output_video)
  depth, disp, raw, video = chosen if any(chosen) else (True, True, True, os.path.isfile(source))
  return InferOptions(
      checkpoint=os.fspath(flags.checkpoint), source=source, output=flags.output, frame_shift=frame_shift,
      max_shift=max_shift, target_depth=target_depth, shift_statistic=shift_statistic, displacement=displacement,
      motion_log=flags.motion, nominal_displacement=nominal, batch_size=batch_size, no_resize=bool(flags.no_resize),
      size=size, fov=fov, train_fov=train_fov, extensions=extensions, output_depth=bool(depth),
      output_disp=bool(disp), output_raw=bool(raw), output_video=bool(video), video_format=flags.video_format,
      fps=fps, overwrite=bool(flags.overwrite), compilation_cache=flags.compilation_cache,
      no_compilation_cache=bool(flags.no_compilation_cache), runtime=getattr(flags, 'runtime', 'auto'), **camera)


def _network_input(flags) -> tuple[tuple[int, int] | None, float | None, float | None]:
  """(--height/--width as (h, w), --fov, --train_fov), checked: at most one way of setting the input size."""
  height, width, fov, train_fov = flags.height, flags.width, flags.fov, flags.train_fov
  if (height is None) != (width is None):
    raise cli.UserError(f'--height={height!r} --width={width!r}: expected both (the network input size) or neither')
  size = None
  if height is not None:
    size = cli.check_int('--height', height, 1, MAX_SIZE), cli.check_int('--width', width, 1, MAX_SIZE)
  if fov is not None:
    fov = cli.check_float('--fov', fov, 0, 180, low_open=True, high_open=True)
  if train_fov is not None:
    train_fov = cli.check_float('--train_fov', train_fov, 0, 180, low_open=True, high_open=True)
    if fov is None:
      raise cli.UserError(f'--train_fov={train_fov!r}: used only with --fov (the footage\'s FOV it is matched to); '
                          'expected --fov too')
  chosen = [name for name, given in (('--no_resize', flags.no_resize), ('--height/--width', size is not None),
                                     ('--fov', fov is not None)) if given]
  if len(chosen) > 1:
    raise cli.UserError(f'{" and ".join(chosen)}: expected at most one of --no_resize, --height/--width, --fov '
                        '(each sets the network input size)')
  return size, fov, train_fov


def parse_angles(text, flag: str = '--camera_rotation') -> tuple[float, float, float]:
  """'ROLL,PITCH,YAW' (degrees, each within +-MAX_ANGLE) -> three floats."""
  expected = f'expected ROLL,PITCH,YAW: three numbers of degrees within +-{MAX_ANGLE:g}, e.g. 0,-90,0'
  try:
    values = tuple(float(v) for v in str(text).split(','))
  except ValueError:
    raise cli.UserError(f'{flag}={text!r}: {expected}') from None
  if len(values) != 3 or not all(-MAX_ANGLE <= v <= MAX_ANGLE for v in values):
    raise cli.UserError(f'{flag}={text!r}: {expected}')
  return values


def _camera(flags) -> dict:
  """--attitude, --frame_times, --time_offset, --camera_rotation, --calibration, --undistort_balance checked
  together (their files are read later, by `footage`, still before any work)."""
  attitude, times, offset = flags.attitude, flags.frame_times, flags.time_offset
  ulg_motion = str(flags.motion or '').lower().endswith('.ulg')
  if attitude is None and not ulg_motion:
    given = [f'{n}={v!r}' for n, v in (('--frame_times', times), ('--time_offset', offset),
                                       ('--camera_rotation', flags.camera_rotation)) if v is not None]
    if given:
      raise cli.UserError(f'{" ".join(given)}: used only with --attitude LOG (or a .ulg --motion); expected '
                          '--attitude too')
  if offset is not None:
    offset = cli.check_float('--time_offset', offset, -MAX_TIME_OFFSET, MAX_TIME_OFFSET)
  rotation = (0.0, 0.0, 0.0) if flags.camera_rotation is None else parse_angles(flags.camera_rotation)
  balance = flags.undistort_balance
  if balance is not None:
    if flags.calibration is None:
      raise cli.UserError(f'--undistort_balance={balance!r}: used only with --calibration FILE; expected '
                          '--calibration too')
    balance = cli.check_float('--undistort_balance', balance, 0, 1)
  if flags.calibration is not None and flags.fov is not None:
    raise cli.UserError(f'--calibration {flags.calibration} and --fov={flags.fov!r}: expected one of them (the '
                        'calibration gives the FOV)')
  return {'attitude': attitude, 'frame_times': times, 'time_offset': float(offset or 0.0),
          'camera_rotation': rotation, 'calibration': flags.calibration, 'undistort_balance': balance}


def _extensions(extensions) -> tuple[str, ...]:
  """--extensions without dots, in lower case; at least one."""
  exts = tuple(e for e in (str(e).strip().lower().lstrip('.') for e in extensions) if e)
  if not exts:
    raise cli.UserError(f'--extensions={",".join(map(str, extensions))!r}: expected at least one image extension, '
                        'e.g. jpg,png')
  return exts


def _fps(video_format: str, fps) -> float:
  cli.check_choice('--video_format', video_format, ('gif', 'mp4'))
  if video_format == 'gif':
    try:
      return cli.check_float('--fps', fps, 0.01, 100)
    except cli.UserError as e:
      raise cli.UserError(f'{e} with --video_format gif (GIF frame delays are whole 1/100 s)') from None
  return cli.check_float('--fps', fps, 0, 1000, low_open=True)


def _motion(flags) -> tuple[float | None, float | None]:
  """(--displacement, --nominal_displacement), checked; --displacement and --motion exclude each other."""
  displacement, nominal = flags.displacement, flags.nominal_displacement
  if displacement is not None and flags.motion is not None:
    raise cli.UserError(f'--displacement={displacement!r} and --motion {flags.motion}: expected one of them (both '
                        'say how far the camera moved)')
  if displacement is not None:
    displacement = motion.constant(displacement).per_frame
  if nominal is not None:
    nominal = cli.check_float('--nominal_displacement', nominal, 0, motion.MAX_DISPLACEMENT, low_open=True)
  return displacement, nominal


def _auto_shift(frame_shift, flags) -> tuple[int, float, str]:
  """(max shift, target depth, statistic) of --frame_shift auto, defaulted; refused without it."""
  if frame_shift not in MULTI_SHIFTS:
    given = [f'{n}={v!r}' for n, v in (('--max_shift', flags.max_shift), ('--target_depth', flags.target_depth))
             if v is not None]
    if flags.shift_statistic != 'mean':
      given.append(f'--shift_statistic={flags.shift_statistic!r}')
    if given:
      raise cli.UserError(f'{" ".join(given)}: used only with --frame_shift auto or fuse; expected --frame_shift '
                          'auto or fuse too')
    return MAX_SHIFT, TARGET_DEPTH, 'mean'
  if flags.displacement is None and flags.motion is None:
    raise cli.UserError(f'--frame_shift {frame_shift}: expected --displacement M or --motion CSV too (the pairs of '
                        'different shifts are put on one metric scale by the camera\'s displacement)')
  max_shift = cli.check_int('--max_shift', MAX_SHIFT if flags.max_shift is None else flags.max_shift, 1,
                            MAX_SHIFT_LIMIT)
  target_depth = cli.check_float('--target_depth', TARGET_DEPTH if flags.target_depth is None else flags.target_depth,
                                 0, MAX_DEPTH, low_open=True)
  return max_shift, target_depth, cli.check_choice('--shift_statistic', flags.shift_statistic, STATISTICS)


# Bytes per pixel of the input frames that a pair holds besides the network's: the two uint8 RGB frames, their
# resized copies, the depth upsampled to the frames' size (float32) and the pictures written from it.
FRAME_BYTES_PER_PIXEL = 24


def check_batch_memory(batch_size: int, shifts: int, network: tuple[int, int], frame: tuple[int, int],
                       frames: int | None) -> int:
  """--batch_size bounded by the work and the machine's memory, before the model loads: the pairs held at once
  (at most --batch_size; for a folder, at most its frames x `shifts` candidate pairs) must fit in the memory,
  besides the frames held back for later pairs (`shifts` + 1 at the frames' size). A `cli.UserError` stating the
  bound otherwise; the value, checked."""
  (h, w), (fh, fw) = network, frame
  used = batch_size if frames is None else min(batch_size, max(1, frames * shifts))
  each = memory.INFER_BYTES_PER_PIXEL * h * w + FRAME_BYTES_PER_PIXEL * fh * fw
  return memory.check_count('--batch_size', batch_size, each, f'a pair at network input {w}x{h} (frames {fw}x{fh})',
                            used=used, reserve=(shifts + 1) * 3 * fh * fw, reserved='the frames held back')
