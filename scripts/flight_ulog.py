"""A rendered flight as a PX4 drone logs it: one ULog file for `infer.py --attitude F.ulg --motion F.ulg`.

    .venv/bin/python scripts/flight_ulog.py --flight flight/64/0 --out flight.ulg [--scene 0]
        [--camera_rotation 0,-90,0] [--boot_offset 12.5] [--overwrite] [--smoke]

Reads scene `--scene` of a sub-folder the renderer wrote (`python -m tfds_stillbox.render --rotation ...`: its
metadata.json's `orientation` and its motion log) and writes, with pyulog's own writer, what PX4 would have logged
on that flight: `vehicle_attitude` (the body's FRD -> world orientation: the camera's turned back by the mount
`--camera_rotation`, degrees, default a forward-looking camera), `vehicle_local_position` (the camera's positions,
metres) and `camera_capture` (one sample per frame), all on a clock that started `--boot_offset` seconds before
the first frame. infer.py then needs neither `--frame_times` (the captures time the frames) nor a camera CSV.
The renderer's world axes stand in for NED: DepthNet needs only the rotation and the distance between frames.
`--smoke` (a check that it runs): renders a 4-frame turning flight of 32x32 into a temporary folder first.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile

import numpy as np

from depthnet_jax.common import cli, rotations
from depthnet_jax.infer import options
from depthnet_jax.testing import ulog_writer


def read_flight(folder: str, scene: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(times [T] s, camera orientations [T, 3, 3], positions [T, 3] m) of one rendered scene."""
  meta_path = os.path.join(folder, 'metadata.json')
  if not os.path.isfile(meta_path):
    raise cli.UserError(f'--flight {os.path.abspath(folder)}: no metadata.json; expected a sub-folder written by '
                        'python -m tfds_stillbox.render')
  with open(meta_path) as f:
    scenes = json.load(f)['scenes']
  if not 0 <= scene < len(scenes):
    raise cli.UserError(f'--scene={scene}: expected an index from 0 to {len(scenes) - 1} ({meta_path})')
  entry = scenes[scene]
  if not entry.get('orientation'):
    raise cli.UserError(f'{meta_path}: scene {scene} has no orientation; expected a flight rendered with '
                        '--rotation or --trajectory')
  with open(os.path.join(folder, entry['motion'])) as f:
    rows = list(csv.DictReader(f))
  times = np.array([float(r['time']) for r in rows])
  positions = np.array([[float(r[c]) for c in 'xyz'] for r in rows])
  return times, rotations.quaternion_to_matrix(np.asarray(entry['orientation'], np.float64)), positions


def write(path: str, times, cameras, positions, mount, boot_offset: float) -> str:
  """The ULog at `path`, whole (a temporary beside it, renamed)."""
  body = cameras @ rotations.camera_to_body(*mount).T   # camera = body @ camera_to_body
  log_times = np.asarray(times) + boot_offset
  temporary = f'{path}.partial-{os.getpid()}'
  try:
    ulog_writer.write_px4_log(temporary, log_times, rotations.matrix_to_quaternion(body), positions, log_times)
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)
  return path


def main(argv=None) -> int:
  p = cli.ArgumentParser(prog='scripts/flight_ulog.py', description=__doc__.split('\n\n')[0])
  p.add_argument('--flight', help='a sub-folder of a rendered tree (e.g. flight/64/0)')
  p.add_argument('--out', help='the .ulg file to write')
  p.add_argument('--scene', type=int, default=0)
  p.add_argument('--camera_rotation', default='0,0,0', metavar='ROLL,PITCH,YAW')
  p.add_argument('--boot_offset', type=float, default=12.5, metavar='S')
  p.add_argument('--overwrite', action='store_true')
  p.add_argument('--smoke', action='store_true')

  def work(a) -> int:
    flight, out = a.flight, a.out
    if a.smoke:
      from tfds_stillbox.render import export
      scratch = tempfile.mkdtemp(prefix='flight_ulog_')
      flight = flight or os.path.join(export.export(scratch, 32, 1, seed=0, num_frames=4, rotation=2.0), '0')
      out = out or os.path.join(scratch, 'flight.ulg')
    if not flight or not out:
      raise cli.UserError('--flight and --out: expected both (a rendered sub-folder and the .ulg to write)')
    path = cli.check_output_file('--out', out, a.overwrite, ('.ulg',))
    mount = options.parse_angles(a.camera_rotation)
    offset = cli.check_float('--boot_offset', a.boot_offset, 0.0, 1e6)
    times, cameras, positions = read_flight(flight, a.scene)
    write(path, times, cameras, positions, mount, offset)
    print(f'wrote {path}: {len(times)} frames, vehicle_attitude, vehicle_local_position and camera_capture '
          f'(camera mount {",".join(f"{v:g}" for v in mount)}, clock {offset:g} s ahead)')
    return 0

  return cli.main(p, work, argv)


if __name__ == '__main__':
  sys.exit(main())
