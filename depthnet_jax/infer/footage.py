"""Footage in, depth out (behind `infer.py`): `run(options)` takes one run through its stages.

**Checks first.** `run` checks the input, the checkpoint's path and recorded geometry, the output folder and
every file the run would write, and for a folder decodes every frame, all before it loads the model or creates
any file or folder (the flags were checked before, by `options.from_flags`): a user error is one `cli.UserError`
(one line from `infer.py`) and leaves the disk as it was.

The stages, in this order:
1. the input's kind (`frames.is_video`), the flight's motion (`motion`), the pairs each frame gets
   (`pairs.Plan`), the output folder's path; the folder held (`folder_lock`: `<output>/.depthnet-lock`, created
   with the folder and removed again if the run writes nothing): another command writing there is refused at
   once; the checkpoint's record (`checkpoint_input`);
2. the input opened (`frames.open_input`: its size, identity, frames; a video's key frames checked for one
   size), the network input size, --batch_size against the machine's memory (`options.check_batch_memory`);
3. the outputs planned (`output_plan`: the settings, their keys, every target checked against the folder);
4. the model loaded (the first compile), then frames -> `pairs.PairBatcher` -> batches ->
   `results.ResultWriter` -> the files, `shifts.csv` and the summary line.

The output folder (its manifest `depthnet_infer.json`, what may be replaced, temporaries) is `outputs`'s.
"""

from __future__ import annotations

from depthnet_jax.common import cli, compile_cache, folder_lock, geometry, progress
from depthnet_jax.common.conventions import STILLBOX_FOV
from depthnet_jax.infer import checkpoint_input, flight_camera, frames, motion, output_plan, pairs, results
from depthnet_jax.infer import predictor as inference
from depthnet_jax.infer.camera import Camera
from depthnet_jax.infer.options import InferOptions, check_batch_memory
from depthnet_jax.infer.outputs import OutputFolder
from depthnet_jax.model import models


def run(opts: InferOptions) -> str:
  """Runs infer.py with these (checked) options; returns the summary line.

  Raises:
    cli.UserError (FootageError, CheckpointInputError, OutputError, motion.MotionError): a user error, found
      before any file is written when it can be (see the module docstring); `folder_lock.HeldError`: another
      command is writing into the output folder.
  """
  video = frames.is_video(opts.source)
  count = _frame_count(opts, video)
  times, read = flight_camera.frame_times(opts, count)
  flight = _flight(opts, count, times)
  camera = flight_camera.camera(opts, count, times, read)
  plan = pairs.Plan(opts.frame_shift, opts.max_shift, flight)
  output = cli.check_writable_dir(opts.output, '--output')
  # One writer per output folder (`folder_lock`): held from before its manifest is read to the last file.
  with folder_lock.hold(output, '--output'):
    return _run_held(opts, video, flight, plan, output, camera)


def _run_held(opts: InferOptions, video: bool, flight: motion.Motion | None, plan: pairs.Plan, output: str,
              camera: Camera) -> str:
  """`run`'s stages from the checkpoint's record on, the output folder held."""
  recorded = checkpoint_input.info(opts.checkpoint, opts.prefer)
  checkpoint_input.check_output_outside(output, recorded)
  nominal = checkpoint_input.nominal(opts.nominal_displacement, recorded)
  footage = frames.open_input(opts.source, video, opts.extensions, plan)
  camera.check_covers(footage.total, footage.source)
  camera.setup((footage.size[1], footage.size[0]), opts.train_fov or recorded.train_fov or STILLBOX_FOV)
  size = network_size(opts, recorded.train_size, recorded.train_fov, footage.size, camera.frame_fov)
  check_batch_memory(opts.batch_size, len(plan.shifts), size or footage.size, footage.size, footage.total)
  checkpoint_id = checkpoint_input.identity(recorded, opts.checkpoint)
  settings = output_plan.result_settings(opts, footage, recorded.resolved, checkpoint_id, size, flight, nominal)
  planned = output_plan.plan_outputs(opts, output, footage, plan, settings)
  # After every check (a mistake creates no cache folder), before the first compile (the model's load).
  compile_cache.enable(opts.compilation_cache, disabled=opts.no_compilation_cache)
  predictor = checkpoint_input.load(recorded, opts.checkpoint, opts.prefer, opts.runtime)
  if opts.auto:
    _check_target(opts.target_depth, predictor.spec)
  return _predict(opts, plan, footage, predictor, planned.open(opts.fps), size, nominal, camera)


def _frame_count(opts: InferOptions, video: bool) -> int | None:
  """The input's frames, where they are counted before it is opened (a folder's files; a video whose container
  records its count), else None."""
  if video:
    return frames.recorded_length(opts.source)
  try:
    return len(frames.list_frames(opts.source, opts.extensions))
  except cli.UserError:   # reported when the input is opened, after the logs' own problems
    return None


def _flight(opts: InferOptions, count: int | None, times) -> motion.Motion | None:
  """The flight's motion: --displacement, or --motion read (every problem of the log found here; a .ulg at the
  frame times `times`). Where the input's frames are counted first, only the rows of those frames are kept:
  memory for the rows used, however long the log."""
  if opts.displacement is not None:
    return motion.constant(opts.displacement)
  if opts.motion_log is None:
    return None
  if flight_camera.is_ulog(opts.motion_log):
    return flight_camera.ulog_motion(opts.motion_log, times)
  return motion.read_log(opts.motion_log, count)


def network_size(opts: InferOptions, train_size: tuple[int, int] | None, train_fov: float | None,
                 frame_size: tuple[int, int], fov: float | None = None) -> tuple[int, int] | None:
  """The network input (h, w) the options ask for, for frames of `frame_size` (None: as they are), given the
  checkpoint's recorded training size and FOV (if any) and the frames' FOV (`fov`: --fov, or the calibration's)."""
  if opts.no_resize:
    return None
  if opts.size is not None:
    return tuple(opts.size)
  default = train_size or inference.DEFAULT_SIZE
  fov = opts.fov if fov is None else fov
  if fov is not None:
    flag = f'--fov={opts.fov!r}' if opts.fov is not None else f'--calibration {opts.calibration} (FOV {fov:.2f} deg)'
    try:
      return geometry.size_for_fov(*frame_size, fov, default[1], opts.train_fov or train_fov or STILLBOX_FOV)
    except cli.UserError as e:
      raise cli.UserError(f'{flag}: {e}') from None
  return tuple(default)


def _check_target(target: float, spec) -> None:
  low, high = models.CLAMP_RANGE
  if spec.clamp and not low <= target <= high:
    raise cli.UserError(f'--target_depth={target!r}: the network clamps its depths to [{low:g}, {high:g}] m '
                        f'(clamp=True); expected a target inside that range')


def _predict(opts: InferOptions, plan: pairs.Plan, footage: frames.Footage, predictor: inference.Predictor,
             out: OutputFolder, size: tuple[int, int] | None, nominal: checkpoint_input.Nominal,
             camera: Camera) -> str:
  """Every frame's depth written (or the folder marked failed, temporaries removed); the summary line."""
  shown = progress.Progress(footage.total or None, 'pairs', desc='predicted')
  writer = results.ResultWriter(predictor, opts, plan, size, nominal, out, shown, camera)
  batcher = pairs.PairBatcher(plan, plan.frames_per_call(opts.batch_size))
  try:
    for batch in batcher.batches(_logged_frames(footage, plan.flight, camera)):
      writer.add(batch)
    _check_some_pairs(writer.pairs, batcher.frames, plan, footage.source)
    writer.finish()
  except BaseException as e:
    shown.close()
    out.abort(e, writer.pairs)
    raise
  shown.close()
  return writer.summary(batcher.frames)


def _logged_frames(footage: frames.Footage, flight: motion.Motion | None, camera: Camera) -> frames.Frames:
  """The input's frames, undistorted (`camera`); a `MotionError` at the first frame the motion log has no row
  for, a `cli.UserError` at the first the attitude has no orientation for (a video, whose frames were not counted
  before)."""
  for t, (stem, image) in enumerate(footage.frames()):
    if flight is not None and flight.frames is not None and t >= flight.frames:
      raise motion.MotionError(f'--motion {flight.path}: the log covers {flight.frames} frames but --input '
                               f'{footage.source} has more; expected one row per frame')
    camera.check_covers(t + 1, footage.source)
    yield stem, camera.frame(image)


def _check_some_pairs(written: int, frames_read: int, plan: pairs.Plan, source: str) -> None:
  """A `FootageError` if no frame got a depth map (a video too short, or a camera that never moved)."""
  if written:
    return
  if frames_read >= plan.need:
    raise frames.FootageError(f'--input {source}: no pair has a usable displacement ({plan.flight.source} gives zero '
                              'or unknown distances between the frames of every pair); expected the camera to move')
  raise frames.FootageError(f'--input {source}: {frames_read} frame(s); pairs at --frame_shift {plan.frame_shift} '
                            f'need at least {plan.need}')
