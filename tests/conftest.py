"""Shared test set-up: JAX on the CPU, the PyTorch reference on fixed threads."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')


import pytest  # noqa: E402


@pytest.fixture(scope='session')
def synth_tiny_dir(tmp_path_factory):
  """A data_dir holding `tfds_stillbox/synth_tiny` (12 rendered 32x32 scenes of 6 frames), built once per run."""
  import tensorflow_datasets as tfds  # noqa: F401
  from tfds_stillbox import tfds_stillbox_dataset_builder as stillbox
  data_dir = tmp_path_factory.mktemp('tfds_data')
  stillbox.Builder(config='synth_tiny', data_dir=str(data_dir)).download_and_prepare()
  return str(data_dir)
