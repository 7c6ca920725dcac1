"""Depth maps of your own footage: `python infer.py --checkpoint PATH --input FOLDER_OR_VIDEO --output DIR`.

PATH is a training workdir (its best checkpoint), a checkpoint directory (e.g. from `torch_import`), or a
PyTorch `.pth.tar` imported on the fly. Pairs are (frame t - frame_shift, frame t); each output is named after
the pair's second frame, whose depth it is: `<stem>_depth.png` (rainbow, 0-100 m), `<stem>_disp.png` (1/depth, bone),
`<stem>_depth.npy` (float32 metres at the input size), and `depth.gif` / `depth.mp4` (input beside depth).
Without any --output_* flag, depth and disparity PNGs and the raw arrays are written (and the video for a video).

Geometry: by default frames are resized to the size the network was trained at (512x512 for imported PyTorch
weights); `--fov DEG` resizes so that the footage's focal length matches the network's training focal length;
`--height/--width` set the size; `--no_resize` keeps the frames as they are.

Metric depth: the network's depths assume the displacement between a pair's frames it was trained with (0.3 m
for Still Box; recorded in our checkpoints). `--displacement M` (metres per frame) or `--motion CSV` (the flight's
positions `frame,x,y,z` or velocities `time,vx,vy,vz`; see depthnet_jax/infer/motion.py) scale each depth by the
pair's real displacement over that one, and `--frame_shift auto` picks per frame the shift whose output is nearest
`--target_depth` (see depthnet_jax/infer/predictor.py); `shifts.csv` lists per frame the pair, displacement and
scale.

Compiled programs are kept in JAX's persistent compilation cache (`--compilation_cache DIR`, default
~/.cache/depthnet-jax/jax-compilation-cache, see depthnet_jax/common/compile_cache.py), so a second run of the
same shapes skips XLA compilation; `--no_compilation_cache` turns it off.

The output folder gets `depthnet_infer.json`: the run's status ('complete', 'incomplete', 'failed' and the error),
its settings and the files it wrote. Files infer.py did not write are never replaced, and its outputs are never
read as frames. Every user error is one `error:` line and exit code 1, found before the model loads or anything
is written; Ctrl-C exits with 130. `--debug` (or DEPTHNET_DEBUG=1) adds the traceback.
"""

from __future__ import annotations

import argparse
import sys

from depthnet_jax.common import cli, compile_cache
from depthnet_jax.common.conventions import MAX_DEPTH
from depthnet_jax.infer import footage, motion, options
from depthnet_jax.infer.outputs import MANIFEST
from depthnet_jax.infer.predictor import FUSE_CEILING, STATISTICS, TARGET_DEPTH
from depthnet_jax.model.models import CLAMP_RANGE
from depthnet_jax.model.runtimes import RUNTIMES

SHIPPED_MODELS = """\
shipped models (models/, docs/reference_models.md), trained on 90-degree frames: with --fov the frames are
resized to the model's focal length, width W' = W tan(FOV/2) for a model trained at width W, so a narrower lens
gives the network fewer pixels (its depth map is a quarter as wide, then upsampled to the frames):

  model                trained at   network input width at FOV 90 / 70 / 60 deg   its depth map's width
  models/reference64   64x64         64 /  45 /  37 px                              16 / 12 / 10
  models/reference128  128x128      128 /  90 /  74 px                              32 / 23 / 19
  models/reference256  256x256      256 / 179 / 148 px                              64 / 45 / 37

Take the largest whose input width your frames reach (finest depth, 4x the compute of the next; upsampled
frames make a model worse than the smaller one); reference64 where speed matters most."""


def _extensions(text: str) -> list[str]:
  return [e.strip() for e in text.split(',') if e.strip()]


def parser() -> argparse.ArgumentParser:
  p = cli.ArgumentParser(prog='python infer.py', description=__doc__.split('\n\n')[0], epilog=SHIPPED_MODELS,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--checkpoint', required=True, help='training workdir, checkpoint directory, or .pth.tar')
  p.add_argument('--input', required=True, help='folder of frames (sorted by name) or a video file')
  p.add_argument('--output', required=True,
                 help='output folder (created; if it exists, files infer.py did not write are never replaced)')
  p.add_argument('--overwrite', action='store_true',
                 help="replace results of an earlier run with other settings (only files listed in the folder's "
                      f'{MANIFEST})')
  p.add_argument('--frame_shift', default='1',
                 help="pairs are (frame t - frame_shift, frame t), each giving frame t's depth; an integer >= 1 "
                      "(default 1), or 'auto': per frame, the shift k of 1..--max_shift whose raw output is "
                      "closest to --target_depth, or 'fuse': per pixel, the smallest shift whose raw output is "
                      f'under {FUSE_CEILING:g} m, just under the training cap of 100 m (docs/inference.md); both need '
                      '--displacement or --motion')
  p.add_argument('--max_shift', type=int, default=None,
                 help=f'with --frame_shift auto or fuse: the largest shift tried, 1 to {options.MAX_SHIFT_LIMIT} '
                      f'(default {options.MAX_SHIFT}); K pairs per frame go through the network')
  p.add_argument('--target_depth', type=float, default=None,
                 help='with --frame_shift auto: the raw output (metres at the nominal displacement) aimed at, in '
                      f'(0, {MAX_DEPTH:g}] (default {TARGET_DEPTH:g}; clamp networks: inside [{CLAMP_RANGE[0]:g}, '
                      f'{CLAMP_RANGE[1]:g}])')
  p.add_argument('--shift_statistic', default='mean', choices=STATISTICS,
                 help='with --frame_shift auto: compare the mean (default, as the authors) or the median raw output '
                      'with --target_depth')
  p.add_argument('--displacement', type=float, default=None, metavar='M',
                 help='metres the camera moves between consecutive frames (constant speed): depths are scaled by '
                      "the pair's displacement over the network's nominal one; in (0, "
                      f'{motion.MAX_DISPLACEMENT:g}]')
  p.add_argument('--motion', default=None, metavar='CSV',
                 help="the flight's motion log: a header and one row per frame, positions frame,x,y,z (metres; "
                      'frame = index in the input from 0) or velocities time,vx,vy,vz (seconds, m/s; row i = '
                      'frame i); depths are scaled by each pair\'s real displacement over the nominal one; pairs '
                      'whose displacement is zero or unknown (empty cells) are skipped; or a PX4 .ulg: '
                      'vehicle_local_position x, y, z at the frame times (--frame_times or camera_capture)')
  p.add_argument('--attitude', default=None, metavar='LOG',
                 help='the orientation of every frame, to remove the rotation between a pair\'s frames: a CSV '
                      '(frame or time, then qw,qx,qy,qz or roll,pitch,yaw in degrees, Z-Y-X: the camera\'s '
                      'camera-to-world rotation), a PX4 .ulg (vehicle_attitude) or the CSV ulog2csv writes of it '
                      '(timestamp in microseconds, q[0]..q[3]: the body\'s); see docs/inference.md')
  p.add_argument('--frame_times', default=None, metavar='CSV',
                 help='with a timed --attitude or a .ulg --motion: frame,time (seconds on the log\'s clock, e.g. a '
                      'ULog timestamp / 1e6) per frame (default: the .ulg\'s camera_capture topic)')
  p.add_argument('--time_offset', type=float, default=None, metavar='SECONDS',
                 help='added to every frame time to put it on the log\'s clock (default 0)')
  p.add_argument('--camera_rotation', default=None, metavar='ROLL,PITCH,YAW',
                 help='degrees the camera is turned on the body, for body-frame logs (.ulg, ulog2csv); default '
                      '0,0,0: looking forward; a gimbal pointing down: 0,-90,0')
  p.add_argument('--calibration', default=None, metavar='FILE',
                 help='the lens: an OpenCV calibration (cv2.FileStorage YAML, XML or JSON: camera_matrix, '
                      'distortion_coefficients, image_width, image_height[, distortion_model]) or a ROS '
                      'camera_info YAML, radial-tangential or fisheye; frames are undistorted and the FOV taken '
                      'from it')
  p.add_argument('--undistort_balance', type=float, default=None, metavar='B',
                 help='with --calibration: 0 to 1, the undistorted camera as OpenCV chooses it (0: only valid '
                      'pixels, 1: every source pixel kept); default: the calibration\'s own camera matrix')
  p.add_argument('--nominal_displacement', type=float, default=None, metavar='M',
                 help="the displacement between a pair's frames that the network's depths assume (default: the "
                      'checkpoint\'s record, else 0.3 m as Still Box)')
  p.add_argument('--batch_size', type=int, default=8,
                 help='pairs per network call; >= 1 and at most what the memory holds (checked before the model '
                      'loads), default 8')
  p.add_argument('--no_resize', action='store_true', help='feed the frames at their own size')
  p.add_argument('--height', type=int, default=None,
                 help=f'network input height, 1 to {options.MAX_SIZE}, given with --width')
  p.add_argument('--width', type=int, default=None,
                 help=f'network input width, 1 to {options.MAX_SIZE}, given with --height')
  p.add_argument('--fov', type=float, default=None,
                 help="horizontal field of view of the footage, degrees in (0, 180), at most the network's "
                      "training FOV: resize to match the network's training focal length")
  p.add_argument('--train_fov', type=float, default=None,
                 help="the network's training FOV, degrees in (0, 180), with --fov (default: from the checkpoint, "
                      'or 90)')
  p.add_argument('--extensions', type=_extensions, default=list(options.IMAGE_EXTENSIONS),
                 help='comma-separated image extensions read in a folder; at least one, default '
                      f'{",".join(options.IMAGE_EXTENSIONS)}')
  p.add_argument('--output_depth', action='store_true', help='write <stem>_depth.png')
  p.add_argument('--output_disp', action='store_true', help='write <stem>_disp.png')
  p.add_argument('--output_raw', action='store_true', help='write <stem>_depth.npy')
  p.add_argument('--output_video', action='store_true', help='write the input beside its depth as an animation')
  p.add_argument('--video_format', choices=['gif', 'mp4'], default='gif',
                 help='animation format of --output_video, default gif')
  p.add_argument('--fps', type=float, default=10.0,
                 help='frame rate of the animation: 0.01 to 100 for gif, > 0 up to 1000 for mp4; default 10')
  p.add_argument('--runtime', choices=RUNTIMES, default='auto',
                 help='what runs the network: onnx (ONNX Runtime, the fastest on a CPU), jax (XLA: GPUs and TPUs) '
                 'or auto (onnx when JAX has only the CPU, else jax); the same depths within 1e-4')
  p.add_argument('--compilation_cache', default='', metavar='DIR', help=compile_cache.FLAG_HELP)
  p.add_argument('--no_compilation_cache', action='store_true', help=compile_cache.OFF_FLAG_HELP)
  return p


def checked(argv: list[str]) -> options.InferOptions:
  """The options of an infer.py command line, every flag checked (what `main` runs; for programs and tests)."""
  return options.from_flags(parser().parse_args(argv))


def _work(args: argparse.Namespace) -> None:
  opts = options.from_flags(args)
  from absl import logging
  logging.set_verbosity(logging.WARNING)  # Orbax logs every file it reads at INFO
  print(footage.run(opts), flush=True)


def main(argv: list[str] | None = None) -> int:
  return cli.main(parser(), _work, argv)


if __name__ == '__main__':
  sys.exit(main())
