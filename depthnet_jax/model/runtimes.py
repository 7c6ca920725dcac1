"""What runs the network for inference and evaluation, one of two runtimes: two uint8 frames `[B, h, w, 3]` in (or,
for `OnnxNetwork.depth`, pairs already normalised `[B, h, w, 6]`), depth `[B, h/4, w/4]` out (channel 0 of a
confidence model).

- `jax`: the Flax model, jitted (normalisation and forward in one program per input shape). The runtime for GPUs
  and TPUs.
- `onnx`: the same network exported as an ONNX graph (`model.onnx_graph`) and run by ONNX Runtime's CPU provider,
  the normalisation and the NHWC -> NCHW transpose in NumPy. Measured faster than XLA:CPU for this network
  (`benchmarks/inference.py`; README "Which runtime"), so `auto` takes it on a CPU-only JAX.

The graph is exported on the fly (under a second) and cached in `onnx-graphs/` inside the compilation cache's
directory (the one in use: `--compilation_cache`, ...; none with `--no_compilation_cache`), named by a digest of the
graph version, the options and every weight's bytes: a later run with the same weights reads it back. A cache that
cannot be written is not an error: one `warning:` line, and the graph stays in memory. The graph holds no checkpoint
record in its metadata (the cache is keyed by the weights alone, which several checkpoints may share); `python -m
depthnet_jax.export` writes one.
"""

from __future__ import annotations

import hashlib
import os
import sys

import jax
import numpy as np
from flax import nnx

from depthnet_jax.common import atomic, cli, compile_cache
from depthnet_jax.common.conventions import MEAN, STD, normalize
from depthnet_jax.model import models

RUNTIMES = ('auto', 'jax', 'onnx')
GRAPH_DIR = 'onnx-graphs'
# The most pixels of pairs one ONNX Runtime run takes (a larger batch runs in pieces): past it the activations
# outgrow the caches and a pair costs more. 8 pairs of 512x512 in runs of 1 took 606 ms, in one run 647 ms; of
# 256x256 in runs of 4 146 ms, in one run 154 ms (medians of 4, interleaved; docs/speed.md#inference).
CHUNK_PIXELS = 4 * 256 * 256


def resolve(runtime: str) -> str:
  """'jax' or 'onnx' for a `RUNTIMES` choice: `auto` is ONNX Runtime when JAX runs on the CPU, else JAX."""
  if runtime not in RUNTIMES:
    raise ValueError(f'runtime must be one of {RUNTIMES}; got {runtime!r}')
  if runtime == 'auto':
    return 'onnx' if jax.default_backend() == 'cpu' else 'jax'
  return runtime


class JaxNetwork:
  """The Flax model in eval mode, one jitted program per input shape."""

  name = 'jax'

  def __init__(self, model: models.DepthNet):
    model.eval()
    self._graphdef, self._state = nnx.split(model)
    self._forward = jax.jit(self._forward_impl)

  def _forward_impl(self, state, first, second):
    pairs = normalize(jax.numpy.concatenate([first, second], axis=-1))
    return models.depth_of(nnx.merge(self._graphdef, state)(pairs))

  def __call__(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """uint8 RGB `[B, h, w, 3]` x 2 -> depth `[B, h/4, w/4]`."""
    return np.asarray(self._forward(self._state, first, second))


def digest(model: models.DepthNet) -> str:
  """The cache key of a model's graph: the graph version, the options and every array's bytes."""
  from depthnet_jax.model import onnx_graph
  h = hashlib.sha256(f'{onnx_graph.GRAPH_VERSION} {onnx_graph.OPSET} {model.spec.describe()}'.encode())
  for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(model).to_pure_dict())[0]:
    h.update(jax.tree_util.keystr(path).encode())
    h.update(np.ascontiguousarray(leaf).tobytes())
  return h.hexdigest()[:32]


def _cache_dir() -> str | None:
  """The compilation cache's directory in use (`compile_cache.enable` sets it from --compilation_cache), else the
  default one (`compile_cache.cache_dir`); None when JAX's compilation cache is turned off."""
  if not jax.config.jax_enable_compilation_cache:
    return None
  return jax.config.jax_compilation_cache_dir or compile_cache.cache_dir()


def graph_bytes(model: models.DepthNet, *, cache: str | None = None) -> tuple[bytes, str | None]:
  """The serialised ONNX graph of `model`, and the cached file it was read from or written to (None: in memory).

  Args:
    cache: the compilation cache's directory (default: the one in use, `_cache_dir`); the graph is `GRAPH_DIR/`
      inside it.
  """
  from depthnet_jax.model import onnx_graph
  cache = cache or _cache_dir()
  if cache is None:   # the compilation cache is off (--no_compilation_cache): so is this one
    return onnx_graph.build(model).SerializeToString(), None
  folder = os.path.join(cache, GRAPH_DIR)
  path = os.path.join(folder, f'depthnet-{digest(model)}.onnx')
  try:
    with open(path, 'rb') as f:
      return f.read(), path
  except OSError:
    pass
  data = onnx_graph.build(model).SerializeToString()
  try:
    os.makedirs(folder, exist_ok=True)
    atomic.write_bytes(path, data)
    return data, path
  except OSError as e:
    print(f'warning: ONNX graph cache {folder} is not writable ({e.strerror or e}); keeping the graph in memory',
          file=sys.stderr, flush=True)
    return data, None


def session_options(threads: int | None = None):
  """ONNX Runtime's options: every graph optimisation, `threads` intra-op threads (default: the CPUs this process
  may use)."""
  import onnxruntime as ort
  options = ort.SessionOptions()
  options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
  options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
  options.log_severity_level = 3   # errors only: its warnings about unused initializers say nothing to a user
  return options


class OnnxNetwork:
  """The model's ONNX graph in an ONNX Runtime CPU session."""

  name = 'onnx'

  def __init__(self, model: models.DepthNet, *, cache: str | None = None,
               threads: int | None = None):
    import onnxruntime as ort
    model.eval()
    data, self.graph_path = graph_bytes(model, cache=cache)
    try:
      self._session = ort.InferenceSession(data, session_options(threads), providers=['CPUExecutionProvider'])
    except Exception as e:  # noqa: BLE001 - ONNX Runtime's own error types
      raise cli.UserError(f'ONNX Runtime cannot load the graph {self.graph_path or "(in memory)"}: '
                          f'{cli.one_line(e)[:300]}') from e
    self._confidence = model.spec.with_confidence

  def depth(self, x: np.ndarray) -> np.ndarray:
    """Normalised pairs `[B, h, w, 6]` float32 -> depth `[B, h/4, w/4]`."""
    out = self._session.run(None, {'image_pair': np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2))})[0]
    return out[..., 0] if self._confidence else out

  def __call__(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """uint8 RGB `[B, h, w, 3]` x 2 -> depth `[B, h/4, w/4]`, in runs of at most CHUNK_PIXELS pixels of pairs."""
    chunk = max(1, CHUNK_PIXELS // (first.shape[1] * first.shape[2]))
    if len(first) <= chunk:
      return self._run(first, second)
    return np.concatenate([self._run(first[i:i + chunk], second[i:i + chunk]) for i in range(0, len(first), chunk)])

  def _run(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """One session run: the graph's input made in place, NCHW, normalised."""
    b, h, w, _ = first.shape
    x = np.empty((b, 6, h, w), np.float32)
    x[:, :3] = first.transpose(0, 3, 1, 2)
    x[:, 3:] = second.transpose(0, 3, 1, 2)
    x *= np.float32(1 / 255)
    x -= np.float32(MEAN)
    x *= np.float32(1 / STD)
    out = self._session.run(None, {'image_pair': x})[0]
    return out[..., 0] if self._confidence else out


def make(model: models.DepthNet, runtime: str = 'auto'):
  """The network of `model` by `runtime` (`RUNTIMES`)."""
  return OnnxNetwork(model) if resolve(runtime) == 'onnx' else JaxNetwork(model)
