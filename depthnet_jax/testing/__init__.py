"""Helpers shared by the tests, the benchmarks and the scripts; the product (training, inference, import) uses none.

- `torch_reference`: the PyTorch DepthNet with the published parameter names, and checkpoints saved as the
  original saves them (imports torch: requirements-dev.txt).
- `parity`: one torch reference imported into ours, and the relative error between the two outputs.
- `random_models`: DepthNets with NumPy-drawn weights (no Flax initialiser to compile).
- `pickle_craft`: hand-made torch checkpoint files for the reader's tests.
- `config_files`: a config file's `get_config()`, loaded by path.
"""
