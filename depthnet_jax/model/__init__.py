"""The network and what it is judged by: DepthNet's options (`spec`), the convolutions (`conv`), the Flax NNX
model (`models`), the losses and metrics (`losses`). Imports only `depthnet_jax.common`."""
