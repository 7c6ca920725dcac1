"""A PyTorch DepthNet with the published checkpoints' parameter names: the ground truth of the parity tests.

Written as the original's `models/DepthNet.py` builds the network (Pinard's DepthNet repository): `nn.Sequential`
blocks, so that the state_dict keys are `conv1.0.weight`, `conv1.1.running_mean`, `deconv5.0.weight`, ...
Its checkpoints are written as the original writes them: `checkpoint_dict` is what its train.py saves every
epoch (DataParallel names, `arch` built as util.set_params builds it, `best_error`), `checkpoint_dict_2017`
what the 2017 revision behind the published weights saved (`best_EPE`, no DataParallel); `save` writes either
torch format. Test and benchmark code only: the product never imports torch.
"""

from __future__ import annotations

import collections

import torch
from torch import nn

ENCODER = (('conv1', 6, 32, 2), ('conv2', 32, 64, 2), ('conv3', 64, 128, 2), ('conv3_1', 128, 128, 1),
           ('conv4', 128, 256, 2), ('conv4_1', 256, 256, 1), ('conv5', 256, 256, 2), ('conv5_1', 256, 256, 1),
           ('conv6', 256, 512, 2), ('conv6_1', 512, 512, 1))


def conv(cin, cout, stride=1, batch_norm=False):
  if batch_norm:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout, eps=1e-3),
                         nn.ReLU(inplace=True))
  return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=True), nn.ReLU(inplace=True))


def deconv(cin, cout, batch_norm=False):
  layers = [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=not batch_norm)]
  if batch_norm:
    layers.append(nn.BatchNorm2d(cout, eps=1e-3))
  return nn.Sequential(*layers, nn.ReLU(inplace=True))


def crop_cat(out_conv, out_deconv, depth_up):
  h, w = out_conv.shape[2:]
  return torch.cat((out_conv, out_deconv[:, :, :h, :w], depth_up[:, :, :h, :w]), 1)


class TorchDepthNet(nn.Module):

  def __init__(self, batch_norm=False, with_confidence=False, clamp=False, depth_activation=None):
    super().__init__()
    self.batch_norm = batch_norm
    self.clamp = clamp
    self.depth_activation = depth_activation
    self.with_confidence = with_confidence
    for name, cin, cout, stride in ENCODER:
      setattr(self, name, conv(cin, cout, stride, batch_norm))
    self.deconv5 = deconv(512, 256, batch_norm)
    self.deconv4 = deconv(513, 128, batch_norm)
    self.deconv3 = deconv(385, 64, batch_norm)
    self.deconv2 = deconv(193, 32, batch_norm)
    out = 2 if with_confidence else 1
    for k, cin in ((6, 512), (5, 513), (4, 385), (3, 193), (2, 97)):
      setattr(self, f'predict_depth{k}', nn.Conv2d(cin, out, 3, 1, 1, bias=True))
    for k in (6, 5, 4, 3):
      setattr(self, f'upsampled_depth{k}_to_{k - 1}', nn.ConvTranspose2d(1, 1, 4, 2, 1, bias=False))
    for m in self.modules():
      if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.xavier_normal_(m.weight)
        if m.bias is not None:
          m.bias.data.zero_()

  def post_process(self, raw):
    depth = raw[:, 0]
    if self.depth_activation == 'elu':
      depth = nn.functional.elu(depth) + 1
    if self.clamp:
      depth = depth.clamp(10, 60)
    if self.with_confidence:
      return torch.stack([depth, raw[:, 1]], -1)
    return depth

  def forward(self, x):
    c2 = self.conv2(self.conv1(x))
    c3 = self.conv3_1(self.conv3(c2))
    c4 = self.conv4_1(self.conv4(c3))
    c5 = self.conv5_1(self.conv5(c4))
    c6 = self.conv6_1(self.conv6(c5))
    raw = self.predict_depth6(c6)
    raws, features = [raw], c6
    for k, skip in ((5, c5), (4, c4), (3, c3), (2, c2)):
      up = getattr(self, f'upsampled_depth{k + 1}_to_{k}')(raw[:, :1])
      features = crop_cat(skip, getattr(self, f'deconv{k}')(features), up)
      raw = getattr(self, f'predict_depth{k}')(features)
      raws.append(raw)
    if self.training:
      return [self.post_process(r) for r in reversed(raws)]
    return self.post_process(raws[-1])


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
  """Non-trivial values everywhere: random biases, BN affine parameters and running statistics.

  The zero-bias, unit-BN initialisation would hide a bias or BN statistic mapped to the wrong place.
  """
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith('bias'):
        p.copy_(0.1 * torch.randn(p.shape, generator=g))
      elif p.ndim == 1:  # BN weight
        p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
    for m in model.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
        m.num_batches_tracked.fill_(123)
  return model


_UNSET = object()


def arch_string(*, batch_norm, activation_function, clamp, with_confidence=False):
  """The `arch` the original's util.set_params builds from its command line (e.g. 'DepthNet_elu_bn')."""
  arch = 'DepthNet'
  if with_confidence:
    arch += '_confidence'
  if activation_function is not None:
    arch += '_' + activation_function
  if batch_norm:
    arch += '_bn'
  if clamp:
    arch += '_clamp'
  return arch


def checkpoint_dict(model: TorchDepthNet, *, activation_function=_UNSET, epoch=55, best_error=4.65):
  """What the original's train.py saves every epoch (`checkpoint.pth.tar`, copied to `model_best.pth.tar`).

  Its model is `torch.nn.DataParallel(DepthNet(...))`, so the state_dict is DataParallel's: every key starts
  with `module.`, BatchNorm layers carry `num_batches_tracked`, and the OrderedDict has its `_metadata`
  attribute (it reaches the pickle as a BUILD of the OrderedDict). `best_error` is a Python float; `bn`,
  `clamp` and `activation_function` are its command-line values (`--activation-function` is None or any string
  the user typed, here the model's own unless `activation_function` is given); `arch` is built from them as
  util.set_params builds it. train.py trains no confidence and writes `with_confidence: False`; for a
  confidence model (another script of the original) the key is True and the arch has `_confidence`.
  """
  if activation_function is _UNSET:
    activation_function = model.depth_activation
  state_dict = torch.nn.DataParallel(model).state_dict()
  assert all(k.startswith('module.') for k in state_dict) and hasattr(state_dict, '_metadata')
  return {
      'epoch': int(epoch),
      'arch': arch_string(batch_norm=model.batch_norm, activation_function=activation_function, clamp=model.clamp,
                          with_confidence=model.with_confidence),
      'state_dict': state_dict,
      'best_error': float(best_error),
      'bn': bool(model.batch_norm),
      'with_confidence': bool(model.with_confidence),
      'activation_function': activation_function,
      'clamp': bool(model.clamp),
      'mean': [0.5, 0.5, 0.5],
      'std': [0.2, 0.2, 0.2],
  }


def checkpoint_dict_2017(model: TorchDepthNet, *, epoch=55, best_error=4.65):
  """What the original's 2017 train.py saved (the revision behind the published `DepthNet_elu_bn_*` weights).

  The same keys as `checkpoint_dict` but `best_EPE` for `best_error`, and the model was not wrapped in
  DataParallel: no `module.` prefix. Its PyTorch (0.2/0.3) wrote state_dicts without `_metadata` and without
  BatchNorm's `num_batches_tracked` (both came with PyTorch 0.4), so neither is here. Save it with
  `legacy=True`: the zip format came with PyTorch 1.6.
  """
  own = model.state_dict()
  state_dict = collections.OrderedDict((k, v) for k, v in own.items() if not k.endswith('num_batches_tracked'))
  return {
      'epoch': int(epoch),
      'arch': arch_string(batch_norm=model.batch_norm, activation_function=model.depth_activation,
                          clamp=model.clamp, with_confidence=model.with_confidence),
      'state_dict': state_dict,
      'best_EPE': float(best_error),
      'bn': bool(model.batch_norm),
      'with_confidence': bool(model.with_confidence),
      'activation_function': model.depth_activation,
      'clamp': bool(model.clamp),
      'mean': [0.5, 0.5, 0.5],
      'std': [0.2, 0.2, 0.2],
  }


def save(obj, path, legacy: bool):
  """torch.save in the legacy format (PyTorch < 1.6) or the zip format (PyTorch >= 1.6, its default)."""
  torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
