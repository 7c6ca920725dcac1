"""Still Box for TensorFlow Datasets: the real dataset (manual download) and procedurally rendered scenes.

`tfds build tfds_stillbox --config synth64` renders and builds; `--config 64 --manual_dir TREE` builds the real
Still Box. `tfds_stillbox.codec` decodes the stored frames and depth maps.
"""
