"""Scenes in, batches out: the grain pipeline over TFDS sources and Still Box trees (`input_pipeline`,
`tree_source`), and host batches as global arrays on the device mesh (`sharding`). Imports `common` and
`tfds_stillbox`."""
