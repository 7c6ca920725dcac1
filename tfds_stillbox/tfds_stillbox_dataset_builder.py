"""Still Box (Pinard et al. 2017) as a TFDS dataset: the real one from a manual download, or rendered scenes.

    tfds build tfds_stillbox --config synth64 --data_dir DATA        # rendered here, no download
    tfds build tfds_stillbox --config 64 --manual_dir STILLBOX --data_dir DATA
    tfds build tfds_stillbox --data_dir DATA --config '{"name": "synth96_60", "source": "synth",
        "resolution": 96, "fov": 60, "num_scenes": 2000}'              # any resolution and FOV

One example is one scene: its frames (the JPEG bytes as they were, never re-encoded), its depth maps
(zlib-compressed float32 .npy, one per frame; see `tfds_stillbox.codec`), the camera speed, time step and
field of view. Splits `train` / `validation` are by scene, deterministic: the scene ids, sorted, are shuffled
with a fixed seed and the first `train_percent` % are the training set. Stored as ArrayRecord (random access
for grain through `tfds.data_source`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import sys

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from tensorflow_datasets.core import constants as tfds_constants

from depthnet_jax.common import folder_lock
from depthnet_jax.common.cli import UserError, check_int, report, shown_names
from tfds_stillbox import tree
from tfds_stillbox.render import checks, export

_DESCRIPTION = """
Still Box: synthetic scenes of random textured 3-D shapes seen by a camera in pure translation (no rotation),
with depth, for supervised depth from motion with a stabilized camera (Pinard et al., ISPRS Annals 2017).
Configs 64/128/256/512 read the published dataset (manual download); synth* configs render Still-Box-like
scenes with tfds_stillbox.render at any resolution and field of view.
"""

_MANUAL = """
The real Still Box is a ~50 GB torrent (all four resolutions; the 512 part alone is ~30 GB):
http://academictorrents.com/details/4d3a60ad3c9ceac7662735ba8e90fb467b43a3aa

Pass its root as --manual_dir. For config `64` the builder reads `<manual_dir>/64/<k>/metadata.json` and the
files each lists (or `<manual_dir>/<k>/metadata.json` when manual_dir is the resolution folder itself):

    <manual_dir>/64/0/metadata.json    {"args": {"fov": 90, "resolution": [64, 64], ...},
                                        "scenes": [{"imgs": [...jpg], "depth": [...npy], "speed": [x, y, z],
                                                    "time_step": t, ...}, ...]}
    <manual_dir>/64/0/RGB_0000_00.jpg ...

`python -m tfds_stillbox.render --out DIR --resolution 64 --scenes N --seed S` writes a tree of the same layout.
"""

_SPLIT_SEED = 'depthnet-jax stillbox split v1'


@dataclasses.dataclass(eq=False)
class StillBoxConfig(tfds.core.BuilderConfig):
  """A Still Box variant.

  Attributes:
    source: 'manual' (the real Still Box under --manual_dir) or 'synth' (rendered while building).
    resolution: square size or [width, height]; for 'manual', the folder name under manual_dir.
    num_scenes: scenes to render ('synth').
    fov: horizontal field of view in degrees of rendered scenes ('synth'; the real data is 90).
    num_frames: frames per rendered scene.
    seed: seed of the rendered scenes: scene i is `tfds_stillbox.render.scenes.render_scene((seed, i), ...)`.
    train_percent: share of the scenes in the training split.
    skip_bad_scenes: leave out scenes with missing or broken files (reported) instead of failing.
    jobs: rendering processes (0: one per core).
  """
  source: str = 'manual'
  resolution: int | list[int] = 64
  num_scenes: int = 0
  fov: float = 90.0
  num_frames: int = 10
  seed: int = 0
  train_percent: float = 90.0
  skip_bad_scenes: bool = False
  jobs: int = 0

  def __post_init__(self):
    """Refuses a field out of its range as the config is made (`tfds build --config '{...}'` included), naming
    the field, its value and the range."""
    where = f'StillBoxConfig {self.name!r}: '
    try:
      if self.source not in ('manual', 'synth'):
        raise UserError(f"source={self.source!r}: expected 'manual' or 'synth'")
      expected = f'expected an integer like 64 or a list [width, height], each from 1 to {checks.MAX_RESOLUTION}'
      if isinstance(self.resolution, str):  # '96x64' would read as a folder name, not a size
        raise UserError(f'resolution={self.resolution!r}: {expected}')
      try:
        width, height = checks.check_resolution('resolution', self.resolution)
      except UserError:
        raise UserError(f'resolution={self.resolution!r}: {expected}') from None
      self.resolution = width if isinstance(self.resolution, (int, float)) and width == height else [width, height]
      if self.source == 'synth':  # the real data has its own number of scenes, frames and field of view
        self.num_scenes = check_int('num_scenes', self.num_scenes, 2,
                                    why='the train and validation splits need a scene each')
      self.fov = checks.check_fov('fov', self.fov)
      self.num_frames = checks.check_frames('num_frames', self.num_frames, (width, height))
      self.seed = check_int('seed', self.seed, 0)
      self.jobs = check_int('jobs', self.jobs, 0, why='0: one per core')
      if isinstance(self.train_percent, bool) or not isinstance(self.train_percent, (int, float)) or not (
          0.0 < self.train_percent < 100.0):
        raise UserError(f'train_percent={self.train_percent!r}: expected a number in (0, 100) (both splits '
                        'hold scenes)')
      self.train_percent = float(self.train_percent)
      if not isinstance(self.skip_bad_scenes, bool):
        raise UserError(f'skip_bad_scenes={self.skip_bad_scenes!r}: expected true or false')
    except UserError as e:
      raise UserError(where + str(e)) from None

  @property
  def size(self) -> tuple[int, int]:
    """(height, width)."""
    if isinstance(self.resolution, int):
      return self.resolution, self.resolution
    width, height = self.resolution
    return int(height), int(width)

  @property
  def folder(self) -> str:
    h, w = self.size
    return str(w) if w == h else f'{w}x{h}'


def _manual(resolution: int) -> StillBoxConfig:
  return StillBoxConfig(name=str(resolution), resolution=resolution,
                        description=f'The real Still Box at {resolution}x{resolution} (manual download).')


def _synth(name: str, resolution, num_scenes: int, num_frames: int = 10, description: str = '',
           jobs: int = 0) -> StillBoxConfig:
  return StillBoxConfig(name=name, source='synth', resolution=resolution, num_scenes=num_scenes,
                        num_frames=num_frames, jobs=jobs,
                        description=description or f'{num_scenes} rendered Still-Box-like scenes at {resolution}.')


def split_scenes(ids: list[str], train_percent: float) -> tuple[set[str], set[str]]:
  """(train ids, validation ids): sorted ids shuffled by a fixed seed; the first train_percent % train.

  At least one scene goes to each split when there are two or more (so a tiny build has a validation set).
  """
  ordered = sorted(ids)
  seed = int.from_bytes(hashlib.sha256(_SPLIT_SEED.encode()).digest()[:8], 'little')
  order = np.random.default_rng(seed).permutation(len(ordered))
  n_train = int(len(ordered) * train_percent / 100)
  if len(ordered) >= 2:
    n_train = min(max(n_train, 1), len(ordered) - 1)
  train = {ordered[i] for i in order[:n_train]}
  return train, set(ordered) - train


def remove_interrupted(version_dir: str) -> list[str]:
  """Removes the folders TFDS's builds of `version_dir` (`<data_dir>/<name>/<config>/<version>`) left beside it,
  `incomplete.<random>_<version>`; returns them. Only for a build holding the version (no other build runs).

  Listed and tested through `epath`, as TFDS's own file operations (its builder tests forbid `os.listdir` and
  `os.path.isdir` in a builder's module, for file systems other than the local one)."""
  parent = epath.Path(os.path.abspath(version_dir)).parent
  version = os.path.basename(os.path.abspath(version_dir))
  pattern = re.compile(re.escape(tfds_constants.INCOMPLETE_PREFIX) + r'[A-Za-z0-9]+_' + re.escape(version))
  try:
    found = sorted(os.fspath(p) for p in parent.iterdir() if pattern.fullmatch(p.name))
  except OSError:
    return []
  removed = []
  for folder in found:
    if not os.path.islink(folder) and epath.Path(folder).is_dir():
      shutil.rmtree(folder, ignore_errors=True)
      if not os.path.lexists(folder):
        removed.append(folder)
  if removed:
    print(f'removed {len(removed)} temporary folder{"s" if len(removed) > 1 else ""} of an interrupted build: '
          f'{shown_names(removed, 3)}', file=sys.stderr, flush=True)
  return removed


def _under_tfds_cli() -> bool:
  """Whether this process is TFDS's `tfds` command (`tfds build ...`, or `python -m
  tensorflow_datasets.scripts.cli.main`), whose main module is or imports its `launch_cli`."""
  main = sys.modules.get('__main__')
  name = 'tensorflow_datasets.scripts.cli.main'
  return getattr(getattr(main, '__spec__', None), 'name', None) == name or \
      getattr(getattr(main, 'launch_cli', None), '__module__', None) == name


def _synth_id(config: StillBoxConfig, index: int) -> str:
  return f'synth/{config.folder}/{config.seed}/{index}'


class Builder(tfds.core.GeneratorBasedBuilder):
  """Still Box: real (manual download) and rendered configs."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Frames as JPEG bytes, depth as zlib float32 .npy per frame.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL
  BUILDER_CONFIG_CLASS = StillBoxConfig
  BUILDER_CONFIGS = [
      _manual(64), _manual(128), _manual(256), _manual(512),
      _synth('synth64', 64, 4000, description='4000 rendered scenes at 64x64, 90 degrees (the training default).'),
      _synth('synth64_large', 64, 16000,
             description='16000 rendered scenes at 64x64: the reference model (configs/reference64.py).'),
      _synth('synth128', 128, 2000),
      _synth('synth128_large', 128, 4000,
             description='4000 rendered scenes at 128x128: the reference128 model (configs/reference128.py).'),
      _synth('synth256_large', 256, 1000,
             description='1000 rendered scenes at 256x256: the reference256 model (configs/reference256.py).'),
      _synth('synth64_small', 64, 800, description='800 rendered scenes at 64x64: make demo, quick experiments.'),
      # one process: a fraction of a second of rendering, less than starting worker processes would take
      _synth('synth_tiny', 32, 12, num_frames=6, description='12 tiny rendered scenes, for tests.', jobs=1),
  ]

  def __init__(self, *, file_format=None, **kwargs):
    # ArrayRecord: random access for grain; the CLI's --file_format still wins when given.
    super().__init__(file_format=file_format or tfds.core.FileFormat.ARRAY_RECORD, **kwargs)

  def download_and_prepare(self, **kwargs):
    """TFDS's, one build of a config's version at a time, and what an interrupted build left removed.

    TFDS lets two builds of one version run side by side (each generates into its own `incomplete.*` folder; the
    second fails at its rename, after all the work) and never removes the `incomplete.*` folder of a killed build.
    So the version folder is held for the build (`folder_lock`: `.<version>.lock` beside it; another build is
    refused at once with a `folder_lock.HeldError` naming it and the holder's pid; under the `tfds build` command,
    one `error:` line and exit code 1), and while it is held no build of it runs: the `incomplete.*` folders of that
    version are a killed build's, and are removed (one line says so).
    """
    path = os.fspath(self.data_path)
    download_config = kwargs.get('download_config') or tfds.download.DownloadConfig()
    if '://' in path or (self.data_path.is_dir() and not download_config.download_mode.overwrite_dataset):
      return super().download_and_prepare(**kwargs)   # built already (TFDS reuses it), or not on a local disk
    try:
      lock = folder_lock.acquire(path, '--data_dir', beside=True)
    except UserError as e:
      if _under_tfds_cli():   # TFDS's command prints a traceback for any exception: a refusal is one line there
        report(e)
        raise SystemExit(1) from None
      raise
    try:
      remove_interrupted(path)
      return super().download_and_prepare(**kwargs)
    finally:
      lock.release()

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Text(doc='scene id: <sub-folder>/<index> (real) or synth/<res>/<seed>/<index>'),
            'frames': tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_),
                                             doc='JPEG bytes of each frame (tfds_stillbox.codec.decode_jpeg)'),
            'depth': tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_),
                                            doc='depth of each frame, metres (tfds_stillbox.codec.decode_depth)'),
            'speed': tfds.features.Tensor(shape=(3,), dtype=np.float32,
                                          doc='camera speed; x image-horizontal, y image-vertical, z optical axis'),
            'time_step': tfds.features.Scalar(dtype=np.float32, doc='frame i is at i * time_step * speed'),
            'fov': tfds.features.Scalar(dtype=np.float32, doc='horizontal field of view, degrees'),
            'height': tfds.features.Scalar(dtype=np.int32),
            'width': tfds.features.Scalar(dtype=np.int32),
        }),
        homepage='http://perso.ensta-paristech.fr/~pinard/depthnet/',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config = self.builder_config
    if config.source == 'synth':
      if config.num_scenes < 2:
        raise ValueError(f'config {config.name}: num_scenes must be at least 2, got {config.num_scenes}')
      ids = [_synth_id(config, i) for i in range(config.num_scenes)]
      train, validation = split_scenes(ids, config.train_percent)
      return {'train': self._generate_examples([i for i, s in enumerate(ids) if s in train]),
              'validation': self._generate_examples([i for i, s in enumerate(ids) if s in validation])}
    if config.source != 'manual':
      raise ValueError(f"config {config.name}: source must be 'manual' or 'synth', got {config.source!r}")
    root = tree.resolution_dir(os.fspath(dl_manager.manual_dir), config.folder)
    refs = tree.list_scenes(root)
    train, validation = split_scenes([r.id for r in refs], config.train_percent)
    logging.info('Still Box %s: %d scenes in %s (%d train, %d validation)', config.name, len(refs), root,
                 len(train), len(validation))
    return {'train': self._generate_examples([r for r in refs if r.id in train]),
            'validation': self._generate_examples([r for r in refs if r.id in validation])}

  def _generate_examples(self, scenes):
    """(id, example) of each scene: `scenes` are SceneRefs of a tree ('manual') or scene indices ('synth')."""
    config = self.builder_config
    if config.source == 'synth':
      jobs = [(_synth_id(config, i), config.seed, i, config.size, config.fov, config.num_frames) for i in scenes]
      yield from export.tfds_examples(jobs, config.jobs)
      return
    skipped: list[str] = []
    yield from tree.iter_examples(scenes, config.size, config.skip_bad_scenes, skipped)
    if skipped:
      logging.warning('Still Box %s: skipped %d of %d scenes with problems:\n  %s', config.name, len(skipped),
                      len(scenes), '\n  '.join(skipped[:20]))
      print(f'skipped {len(skipped)} of {len(scenes)} scenes with problems (skip_bad_scenes); first: {skipped[0]}')
