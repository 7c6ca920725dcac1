"""TFDS's own checks of the builder (`tfds.testing.DatasetBuilderTestCase`): download_and_prepare, as_dataset, the
split sizes, a reload, the registration and the tags, on the real layout (`dummy_data/`, as --manual_dir) and on a
rendered config. The project's own builder tests are tests/test_builder.py.
"""

import tensorflow_datasets as tfds

from tfds_stillbox import tfds_stillbox_dataset_builder


class _AsTFRecord:
  """The builder writes ArrayRecord (for tfds.data_source and grain), which `as_dataset` cannot read; TFDS's checks
  read through `as_dataset` (tf.data), so here the same examples are written as TFRecord. (A mixin, not a test
  case: a DatasetBuilderTestCase without BUILDER_CONFIG_NAMES_TO_TEST would build every config, synth64 too.)"""
  DATASET_CLASS = tfds_stillbox_dataset_builder.Builder

  def _make_builder(self, config=None):
    return self.dataset_class(data_dir=self.tmp_dir, config=config, version=self.VERSION,
                              file_format=tfds.core.FileFormat.TFRECORD)


class RealLayoutTest(_AsTFRecord, tfds.testing.DatasetBuilderTestCase):
  """Config `64` over `dummy_data/` (python -m tfds_stillbox.make_dummy_data): 5 scenes, 4 for training."""
  BUILDER_CONFIG_NAMES_TO_TEST = ['64']
  SPLITS = {'train': 4, 'validation': 1}
  # The tree reader (tree.py) reads the local manual_dir with np.load(path), which TFDS's mock of np.load refuses
  # (it wants file objects from tf.io.gfile, for cloud file systems). The rendered configs pass with the mock.
  MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False


class RenderedTest(_AsTFRecord, tfds.testing.DatasetBuilderTestCase):
  """Config `synth_tiny`: 12 scenes rendered while building (32x32, 6 frames, in this process), 10 for training."""
  BUILDER_CONFIG_NAMES_TO_TEST = ['synth_tiny']
  SPLITS = {'train': 10, 'validation': 2}


if __name__ == '__main__':
  tfds.testing.test_main()
