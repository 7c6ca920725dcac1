"""`python -m depthnet_jax.export`: the command (`depthnet_jax.checkpoints.export_command`); the ONNX graph is
`depthnet_jax.model.onnx_graph`, the `.pth.tar` writer `depthnet_jax.checkpoints.torch_save`."""

import sys

from depthnet_jax.checkpoints.export_command import main

if __name__ == '__main__':
  sys.exit(main())
