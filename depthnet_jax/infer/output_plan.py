"""What a run would write and under which settings, settled and checked against the output folder before the
model loads (`plan_outputs`).

The settings are what determines the results (see `outputs`: the checkpoint's and the input's identities, the
frame shift, the network input, the motion, ...); their digest is the key the manifest lists each file under, and
the animation has its own key (the frame rate too). The targets are every file the run would write: a folder's
outputs are known by name; a video's are the frame-numbered outputs already in the folder (those it would
replace); the animation and shifts.csv come on top. `outputs.check_targets` then refuses the user's files and,
without --overwrite, the results of other settings.
"""

from __future__ import annotations

import dataclasses
import os
import re

from depthnet_jax.infer import motion
from depthnet_jax.infer.checkpoint_input import Nominal
from depthnet_jax.infer.frames import Footage
from depthnet_jax.infer.options import InferOptions
from depthnet_jax.infer.outputs import (
  KIND_SUFFIXES,
  SHIFTS_CSV,
  Animation,
  Manifest,
  OutputError,
  OutputFolder,
  check_targets,
  digest,
  tree_identity,
)
from depthnet_jax.infer.pairs import Plan

RESULTS_VERSION = 1          # bump when the same settings would give other bytes (colormaps, writers, resizing)
_SHOWN_ONLY = ('checkpoint', 'input')   # settings shown in the manifest, not compared (paths move)


@dataclasses.dataclass(frozen=True)
class OutputPlan:
  """The output folder of one run, planned: its manifest as read, the settings by key, the files to write.

  Attributes:
    key, video_key: the settings keys of the per-frame files and of the animation (None without one).
    planned: a folder's per-frame output names (None for a video: entered in the manifest as they come).
    singles: the run's other files (the animation, shifts.csv) -> their settings key.
  """
  folder: str
  manifest: Manifest
  key: str
  video_key: str | None
  settings: dict[str, dict]
  suffixes: list[str]
  planned: list[str] | None
  animation_name: str | None
  singles: dict[str, str]

  def open(self, fps: float) -> OutputFolder:
    """The `OutputFolder` that writes it (created at its first write)."""
    animation = Animation(os.path.join(self.folder, self.animation_name), fps) if self.animation_name else None
    return OutputFolder(self.folder, self.manifest, self.key, self.video_key, self.settings, self.planned,
                        self.suffixes, animation, singles=self.singles)


def result_settings(opts: InferOptions, footage: Footage, checkpoint: str, checkpoint_id: str,
             size: tuple[int, int] | None, flight: motion.Motion | None, nominal: Nominal) -> dict:
  """What determines the results (the manifest's `settings` of the per-frame files)."""
  out = {'results_version': RESULTS_VERSION, 'checkpoint': checkpoint, 'checkpoint_id': checkpoint_id,
         'input': footage.source, 'input_id': footage.identity, 'frame_shift': opts.frame_shift,
         'network_input': list(size) if size else 'as is'}
  if flight is not None:   # only then: earlier runs' settings (without these) stay the same settings
    out['motion'] = (flight.source if flight.kind == 'constant'
                     else f'--motion {flight.path} ({tree_identity(flight.path)})')
    out['nominal_displacement'] = nominal.metres
  if opts.auto:
    out.update(max_shift=opts.max_shift, target_depth=opts.target_depth, shift_statistic=opts.shift_statistic)
  for flag, path in (('calibration', opts.calibration), ('attitude', opts.attitude),
                     ('frame_times', opts.frame_times)):
    if path is not None:   # only then, as the motion: earlier runs' settings stay the same settings
      out[flag] = f'{path} ({tree_identity(path)})'
  if opts.calibration is not None:
    out['undistort_balance'] = opts.undistort_balance
  if opts.attitude is not None:
    out.update(time_offset=opts.time_offset, camera_rotation=list(opts.camera_rotation))
  return out


def _key(settings: dict) -> str:
  return digest({k: v for k, v in settings.items() if k not in _SHOWN_ONLY})


def plan_outputs(opts: InferOptions, output: str, footage: Footage, plan: Plan, settings: dict) -> OutputPlan:
  """Plans the files of a run of these `settings` (`result_settings`) in the folder `output` (absolute), and
  checks them against what the folder holds.

  Raises:
    OutputError: another infer.py is writing there, or a target is a file of the user's or (without
      --overwrite) a result of other settings.
  """
  key = _key(settings)
  by_key, video_key = {key: settings}, None
  if opts.output_video:
    video_settings = dict(settings, fps=float(opts.fps))
    video_key = _key(video_settings)
    by_key[video_key] = video_settings
  suffixes = [KIND_SUFFIXES[k] for k, on in (('depth', opts.output_depth), ('disp', opts.output_disp),
                                             ('raw', opts.output_raw)) if on]
  animation_name = f'depth.{opts.video_format}' if opts.output_video else None
  singles = {animation_name: video_key} if animation_name else {}
  if plan.flight is not None:
    singles[SHIFTS_CSV] = key
  manifest = _manifest(output)
  planned = footage.planned_stems()
  planned = None if planned is None else [s + x for s in planned for x in suffixes]
  targets = _video_targets(output, suffixes, key, plan.first_shift) if planned is None else dict.fromkeys(planned, key)
  targets.update(singles)
  if os.path.isdir(output):
    check_targets(output, manifest, targets, by_key, opts.overwrite)
  return OutputPlan(output, manifest, key, video_key, by_key, suffixes, planned, animation_name, singles)


def _manifest(output: str) -> Manifest:
  """The output folder's manifest (empty for a new folder); an `OutputError` if another run writes there."""
  manifest = Manifest.read(output, '--output') if os.path.isdir(output) else Manifest(output)
  if manifest.writer_alive():
    raise OutputError(f'--output {output}: another infer.py (pid {manifest.run["pid"]}, started '
                      f'{manifest.run.get("started")}) is writing there; expected it to finish first, or choose '
                      'another --output')
  return manifest


def _video_targets(output: str, suffixes: list[str], key: str, first_shift: int) -> dict[str, str]:
  """A video's outputs already in the folder that this run would write again (frames from the first pair on)."""
  if not suffixes or not os.path.isdir(output):
    return {}
  pattern = re.compile(r'^(\d{6,})(' + '|'.join(map(re.escape, suffixes)) + r')$')
  return {n: key for n in os.listdir(output) if (m := pattern.match(n)) and int(m[1]) >= first_shift}
