"""Writes `tfds_stillbox/dummy_data/`: a tiny tree in the real Still Box layout, for the builder's tests.

    python -m tfds_stillbox.make_dummy_data

Five rendered 64x64 scenes of 4 frames in two sub-folders. Sub-folder 1 is made to look like the other variants
of the published lists: other zero paddings in the file names (`RGB_1_003.jpg`) and float16 depth maps, so that
the reader is shown to use the metadata lists, not the names, and to accept either depth precision.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

from tfds_stillbox.render import export

DUMMY = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'dummy_data')


def _restyle(folder: str) -> None:
  path = os.path.join(folder, 'metadata.json')
  with open(path) as f:
    metadata = json.load(f)
  for s, scene in enumerate(metadata['scenes']):
    for kind, prefix in (('imgs', 'RGB'), ('depth', 'D')):
      names = []
      for t, old in enumerate(scene[kind]):
        new = f'{prefix}_{s}_{t:03d}{os.path.splitext(old)[1]}'
        if kind == 'depth':
          np.save(os.path.join(folder, new), np.load(os.path.join(folder, old)).astype(np.float16))
          os.remove(os.path.join(folder, old))
        else:
          os.rename(os.path.join(folder, old), os.path.join(folder, new))
        names.append(new)
      scene[kind] = names
  with open(path, 'w') as f:
    json.dump(metadata, f, indent=1)


def main() -> None:
  with tempfile.TemporaryDirectory() as tmp:
    export.export(tmp, 64, num_scenes=5, seed=2017, num_frames=4, scenes_per_folder=3)
    _restyle(os.path.join(tmp, '64', '1'))
    shutil.rmtree(DUMMY, ignore_errors=True)
    shutil.copytree(tmp, DUMMY)
  print(f'wrote {DUMMY}')


if __name__ == '__main__':
  main()
