"""DepthNet as an ONNX graph, built node by node from the model's options and weights (the `onnx` package only).

The graph has the original's interface, for ONNX Runtime, TensorRT or any ONNX consumer:

- input `image_pair`, `[N, 6, H, W]` float32: the two frames concatenated on the channel axis (first frame's RGB,
  then the second's), each normalised as in training, `(x / 255 - 0.5) / 0.2` (`conventions.normalize`);
- output `depth`, the eval-mode depth of the finest scale, `[N, ceil(H / 4), ceil(W / 4)]` metres at the model's
  nominal displacement. A with_confidence model returns `[N, ceil(H / 4), ceil(W / 4), 2]` instead, as
  `models.DepthNet` does: `[..., 0]` the depth, `[..., 1]` the raw confidence.

N, H and W are dynamic (named `batch`, `height`, `width`): the decoder crops its upsampled maps to the encoder
map's size with `Shape` + `Slice`, as the original's `adaptative_cat`, so odd and rectangular sizes work as they
do in JAX. The layers compute the original's (weights in its layouts: `Conv` OIHW, `ConvTranspose` IOHW,
`torch_import`'s mapping back), BatchNorm kept as `BatchNormalization` nodes in inference mode (runtimes fold
them into the convolutions), laid out for ONNX Runtime's CPU kernels (`_network`, `upsample_phases`). Opset 17 and
IR version 8 (ONNX 1.12's), so that older consumers read it too; tested here with ONNX Runtime 1.32 only.

    graph = onnx_graph.build(model, metadata={'train_height': '64', ...})   # an onnx.ModelProto, checked
"""

from __future__ import annotations

import numpy as np
import onnx
from flax import nnx
from onnx import TensorProto, helper, numpy_helper

from depthnet_jax.model import models

OPSET = 17
IR_VERSION = 8
INPUT, OUTPUT = 'image_pair', 'depth'
GRAPH_VERSION = '2'   # bump when the graph built from the same weights changes (the runtime's cache key has it)
BLOCK = 16   # ONNX Runtime's NCHWc block on AVX-512 (8 on AVX2): channel counts padded to multiples of it


class _Graph:
  """Nodes and initializers appended in order; each op returns its output's name."""

  def __init__(self, state: dict):
    self.state, self.nodes, self.inits = state, [], []

  def const(self, name: str, array) -> str:
    self.inits.append(numpy_helper.from_array(np.array(array, order='C'), name))   # 0-d stays 0-d
    return name

  def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
    self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
    return name

  def conv(self, x: str, params: dict, name: str, stride: int = 1, *, extra_in: int = 0, outputs: int = 0) -> str:
    """Conv 3x3, padding 1: our HWIO kernel as ONNX's OIHW; `extra_in` zero input channels appended (the input
    carries that many zero channels), zero filters appended up to `outputs` channels (a multiple of BLOCK)."""
    weight = _pad_axis(_pad_axis(np.asarray(params['kernel']).transpose(3, 2, 0, 1), 1, extra_in), 0,
                       max(0, outputs - params['kernel'].shape[-1]))
    inputs = [x, self.const(f'{name}.weight', weight)]
    if params.get('bias') is not None:
      inputs.append(self.const(f'{name}.bias', _pad_axis(np.asarray(params['bias']), 0, len(weight) -
                                                        len(params['bias']))))
    return self.op('Conv', inputs, name, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride])

  def conv_transpose(self, x: str, params: dict, name: str) -> str:
    """torch's ConvTranspose2d(k=4, s=2, p=1): our spatially flipped HWIO kernel back to IOHW (torch_import)."""
    weight = np.asarray(params['kernel']).transpose(2, 3, 0, 1)[:, :, ::-1, ::-1]
    inputs = [x, self.const(f'{name}.weight', weight)]
    if params.get('bias') is not None:
      inputs.append(self.const(f'{name}.bias', np.asarray(params['bias'])))
    return self.op('ConvTranspose', inputs, name, kernel_shape=[4, 4], pads=[1, 1, 1, 1], strides=[2, 2])

  def upsample_phases(self, x: str, params: dict, name: str, *, extra_in: int = 0) -> str:
    """The same transposed convolution in its sub-pixel form: output phase (a, b) (row 2m + a, column 2n + b) is
    a 2x2 convolution of the input, padded so that its output is the input's size (phase a = 0 reads input rows
    m - 1 and m with taps 3 and 1, a = 1 rows m and m + 1 with taps 2 and 0; columns alike); the four phases
    concatenated and interleaved by DepthToSpace. The same multiplications as ConvTranspose, but as ordinary
    convolutions, which ONNX Runtime computes in its blocked layout once their inputs have multiples of BLOCK
    channels (docs/speed.md#inference: the transposed convolutions were a third of the graph's time)."""
    weight = np.asarray(params['kernel']).transpose(2, 3, 0, 1)[:, :, ::-1, ::-1]   # torch's [C, O, 4, 4]
    weight = _pad_axis(weight, 0, extra_in)
    taps = ((3, 1), (2, 0))
    phases = []
    for a in (0, 1):
      for b in (0, 1):
        w = weight[:, :, list(taps[a])][:, :, :, list(taps[b])].transpose(1, 0, 2, 3)   # [O, C, 2, 2]
        inputs = [x, self.const(f'{name}.{a}{b}.weight', w)]
        if params.get('bias') is not None:
          inputs.append(self.const(f'{name}.{a}{b}.bias', np.asarray(params['bias'])))
        phases.append(self.op('Conv', inputs, f'{name}.{a}{b}', kernel_shape=[2, 2],
                              pads=[1 - a, 1 - b, a, b]))
    stacked = self.op('Concat', phases, f'{name}.phases', axis=1)
    return self.op('DepthToSpace', [stacked], name, blocksize=2, mode='DCR')

  def block(self, x: str, params: dict, name: str, stride: int = 1) -> str:
    """Conv -> [BatchNormalization] -> Relu (`models.ConvBlock`)."""
    y = self.conv(x, params['conv'], f'{name}.conv', stride)
    if params.get('bn') is not None:
      bn = params['bn']
      y = self.op('BatchNormalization', [y] + [self.const(f'{name}.bn.{k}', np.asarray(bn[k]))
                                               for k in ('scale', 'bias', 'mean', 'var')],
                  f'{name}.bn', epsilon=models.BN_EPSILON)
    return self.op('Relu', [y], f'{name}.relu')

  def crop_concat(self, skip: str, deconv_out: str, depth_up: str, k: int) -> str:
    """`models._crop_concat`: the upsampled maps cropped to the encoder map's H and W, then concatenated."""
    size = self.op('Shape', [skip], f'crop{k}.size', start=2, end=4)
    starts, axes = self.const(f'crop{k}.starts', np.zeros(2, np.int64)), self.const(f'crop{k}.axes',
                                                                                     np.array([2, 3], np.int64))
    cropped = [self.op('Slice', [t, starts, size, axes], f'crop{k}.{i}') for i, t in enumerate((deconv_out,
                                                                                                depth_up))]
    return self.op('Concat', [skip, *cropped], f'concat{k}', axis=1)

  def channel(self, x: str, index: int, name: str) -> str:
    """`x[:, index]`: `[N, h, w]`."""
    return self.op('Gather', [x, self.const(f'{name}.index', np.array(index, np.int64))], name, axis=1)


def _pad_axis(array: np.ndarray, axis: int, count: int) -> np.ndarray:
  """`array` with `count` zero slices appended along `axis`."""
  widths = [(0, 0)] * array.ndim
  widths[axis] = (0, count)
  return np.pad(array, widths) if count else array


def _network(g: _Graph) -> str:
  """The layers of `models.DepthNet.__call__`; returns the finest raw prediction `[N, BLOCK, h, w]` (channels
  after the model's 1 or 2 are zero).

  Laid out for ONNX Runtime's blocked (NCHWc) convolutions, which need channel counts that are multiples of BLOCK:
  the prediction heads have BLOCK filters (the model's 1 or 2, then zero ones) and the depth upsampling BLOCK output
  channels (the upsampled depth, then zeros), so that every concatenation has a multiple of BLOCK channels (513 ->
  528, 385 -> 400, ...) and its consumers read the zero channels with zero weights. The same values; a batch of 8
  pairs at 256x256 took 166 instead of 196 ms of kernels with the phases (docs/speed.md#inference)."""
  s = g.state
  x, out = INPUT, {}
  for name, _, _, stride in models.ENCODER:
    x = out[name] = g.block(x, s[name], name, stride)
  skips = {5: out['conv5_1'], 4: out['conv4_1'], 3: out['conv3_1'], 2: out['conv2']}
  raw = g.conv(x, s['predict_depth6'], 'predict_depth6', outputs=BLOCK)
  features, extra = x, 0
  for k in (5, 4, 3, 2):
    first = g.op('Slice', [raw, g.const(f'depth{k + 1}.start', np.zeros(1, np.int64)), g.const(
        f'depth{k + 1}.end', np.ones(1, np.int64)), g.const(f'depth{k + 1}.axis', np.ones(1, np.int64))],
        f'depth{k + 1}')
    up_name = f'upsampled_depth{k + 1}_to_{k}'
    depth_up = g.op('Pad', [g.conv_transpose(first, s[up_name], up_name), g.const(
        f'{up_name}.pads', np.array([0, 0, 0, 0, 0, BLOCK - 1, 0, 0], np.int64))], f'{up_name}.padded')
    deconv = s[f'deconv{k}']
    up = g.upsample_phases(features, deconv['up'], f'deconv{k}.up', extra_in=extra)
    features, extra = g.crop_concat(skips[k], g.block(up, deconv['block'], f'deconv{k}'), depth_up, k), BLOCK - 1
    raw = g.conv(features, s[f'predict_depth{k}'], f'predict_depth{k}', extra_in=extra, outputs=BLOCK)
  return raw


def _post_process(g: _Graph, raw: str, spec) -> str:
  """`models.DepthNet._post_process`: channel 0, elu + 1, the clamp; with confidence, stacked on a last axis."""
  depth = g.channel(raw, 0, 'raw_depth')
  if spec.depth_activation == 'elu':
    depth = g.op('Add', [g.op('Elu', [depth], 'elu', alpha=1.0), g.const('one', np.array(1.0, np.float32))],
                 'elu_plus_one')
  if spec.clamp:
    low, high = (np.array(v, np.float32) for v in models.CLAMP_RANGE)
    depth = g.op('Clip', [depth, g.const('clamp.min', low), g.const('clamp.max', high)], 'clamp')
  if not spec.with_confidence:
    return g.op('Identity', [depth], OUTPUT)
  last = g.const('last_axis', np.array([-1], np.int64))
  parts = [g.op('Unsqueeze', [t, last], f'{t}.stacked') for t in (depth, g.channel(raw, 1, 'confidence'))]
  return g.op('Concat', parts, OUTPUT, axis=-1)


def build(model: models.DepthNet, *, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
  """The ONNX graph of `model` (eval mode: BatchNorm's running statistics), checked by `onnx.checker`.

  Args:
    metadata: string pairs stored as the model's `metadata_props` (training size, FOV, nominal displacement, ...).
  """
  spec = model.spec
  state = nnx.state(model).to_pure_dict()
  g = _Graph(state)
  _post_process(g, _network(g), spec)
  out_shape = ['batch', 'depth_height', 'depth_width'] + ([2] if spec.with_confidence else [])
  graph = helper.make_graph(
      g.nodes, 'DepthNet',
      [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ['batch', 6, 'height', 'width'])],
      [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, out_shape)], initializer=g.inits)
  proto = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)], producer_name='depthnet-jax',
                            producer_version=GRAPH_VERSION, doc_string='DepthNet (Pinard et al. 2017): depth from '
                            'two frames of a translating camera')
  proto.ir_version = IR_VERSION
  options = {f'model.{k}': str(v) for k, v in spec.to_dict().items()}
  helper.set_model_props(proto, {**options, **(metadata or {})})
  onnx.checker.check_model(proto, full_check=True)
  return proto
