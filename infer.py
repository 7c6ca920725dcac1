"""Depth maps of your own footage: `python infer.py --checkpoint PATH --input FOLDER_OR_VIDEO --output DIR`.

PATH is a training workdir (its best checkpoint), a checkpoint directory (e.g. from `torch_import`), or a
PyTorch `.pth.tar` imported on the fly. Pairs are (frame t, frame t + frame_shift); each output is named after
the pair's second frame: `<stem>_depth.png` (rainbow, 0-100 m), `<stem>_disp.png` (1/depth, bone),
`<stem>_depth.npy` (float32 metres at the input size), and `depth.gif` / `depth.mp4` (input beside depth).
Without any --output_* flag, depth and disparity PNGs and the raw arrays are written (and the video for a video).

Geometry: by default frames are resized to the size the network was trained at (512x512 for imported PyTorch
weights); `--fov DEG` resizes so that the footage's focal length matches the network's training focal length;
`--height/--width` set the size; `--no_resize` keeps the frames as they are.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from depthnet_jax import footage

_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'training workdir, checkpoint directory, or .pth.tar')
_INPUT = flags.DEFINE_string('input', None, 'folder of frames (sorted by name) or a video file')
_OUTPUT = flags.DEFINE_string('output', None, 'output folder (created)')
_SHIFT = flags.DEFINE_integer('frame_shift', 1, 'pairs are (frame t, frame t + frame_shift)')
_BATCH = flags.DEFINE_integer('batch_size', 8, 'pairs per network call')
_NO_RESIZE = flags.DEFINE_bool('no_resize', False, 'feed the frames at their own size')
_HEIGHT = flags.DEFINE_integer('height', None, 'network input height (with --width)')
_WIDTH = flags.DEFINE_integer('width', None, 'network input width (with --height)')
_FOV = flags.DEFINE_float('fov', None, 'horizontal field of view of the footage, degrees: resize to match the '
                          "network's training focal length")
_TRAIN_FOV = flags.DEFINE_float('train_fov', None, "the network's training FOV (default: from the checkpoint, or 90)")
_EXTENSIONS = flags.DEFINE_list('extensions', list(footage.IMAGE_EXTENSIONS), 'image extensions read in a folder')
_OUT_DEPTH = flags.DEFINE_bool('output_depth', False, 'write <stem>_depth.png')
_OUT_DISP = flags.DEFINE_bool('output_disp', False, 'write <stem>_disp.png')
_OUT_RAW = flags.DEFINE_bool('output_raw', False, 'write <stem>_depth.npy')
_OUT_VIDEO = flags.DEFINE_bool('output_video', False, 'write the input beside its depth as an animation')
_VIDEO_FORMAT = flags.DEFINE_enum('video_format', 'gif', ['gif', 'mp4'], 'animation format of --output_video')
_FPS = flags.DEFINE_float('fps', 10.0, 'frame rate of the animation')
flags.mark_flags_as_required(['checkpoint', 'input', 'output'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it reads at INFO
  try:
    summary = footage.run(
        checkpoint=_CHECKPOINT.value, source=_INPUT.value, output=_OUTPUT.value, frame_shift=_SHIFT.value,
        batch_size=_BATCH.value, no_resize=_NO_RESIZE.value, height=_HEIGHT.value, width=_WIDTH.value,
        fov=_FOV.value, train_fov=_TRAIN_FOV.value, extensions=_EXTENSIONS.value, output_depth=_OUT_DEPTH.value,
        output_disp=_OUT_DISP.value, output_raw=_OUT_RAW.value, output_video=_OUT_VIDEO.value,
        video_format=_VIDEO_FORMAT.value, fps=_FPS.value)
  except (footage.FootageError, FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(1)
  print(summary, flush=True)


if __name__ == '__main__':
  app.run(main)
