"""The follow-up's per-frame choice among candidate pairs (`python -m depthnet_jax.evaluate --choose_shift`).

unsupervised-depthnet's `test_depth.py` predicts every candidate pair of a target frame and keeps the output whose
mean is closest to 50 m (`select_best_map`), then scales it by the pair's real displacement over the nominal one
and evaluates it with its protocol (`followup`). Here the target of a scene is its last frame j = T - 1 (the
follow-up's reference frame), the candidates are the pairs (j - k, j), k = 1..T - 1, each stabilized first with
`--stabilize` (`input_pipeline.stabilized`), the raw output's mean compared with `target` (50 m) and the chosen
pair evaluated by `evaluate`'s followup step, so the figures are the follow-up protocol's over one image per scene.
One process (the scenes are read here, not by grain).
"""

from __future__ import annotations

import jax
import numpy as np

from depthnet_jax.common import progress
from depthnet_jax.common.conventions import MAX_DEPTH, NOMINAL_DISPLACEMENT, normalize
from depthnet_jax.data import input_pipeline, sharding
from depthnet_jax.evaluation import evaluate
from depthnet_jax.evaluation.report import Evaluation
from tfds_stillbox import codec

TARGET_DEPTH = 50.0   # test_depth.py's select_best_map aims at a mean output of 50 m

_FORWARD: dict = {}


def _forward(graphdef, params, batch_stats, pairs, network=None):
  if network is not None:
    return np.asarray(network.depth(pairs))
  if 'fn' not in _FORWARD:
    _FORWARD['fn'] = jax.jit(evaluate.forward, static_argnums=0)
  return np.asarray(_FORWARD['fn'](graphdef, params, batch_stats, {'image_pair': pairs}))


def candidates(record, stabilize: bool) -> list[dict]:
  """The samples (as `input_pipeline.EvalSample` makes them) of the pairs (j - k, j) of a scene's last frame j,
  k = 1..T - 1, in the order of k."""
  frames = [codec.decode_jpeg(f) for f in record['frames']]
  j = len(frames) - 1
  depth = codec.decode_depth(record['depth'][j])
  out = []
  for k in range(1, len(frames)):
    first, target = frames[j - k], depth
    if stabilize:
      first, target = input_pipeline.stabilized(record, j - k, j, first, depth)
    displacement = k * float(record['time_step']) * np.asarray(record['speed'], np.float32)
    out.append({'image_pair': normalize(np.concatenate([first, frames[j]], axis=-1)),
                'depth': np.clip(target, 0, MAX_DEPTH).astype(np.float32), 'mask': np.float32(1),
                'displacement': displacement.astype(np.float32), 'pair': np.array([j - k, j], np.int32)})
  return out


def choose(graphdef, params, batch_stats, samples: list[dict], target: float = TARGET_DEPTH, network=None) -> dict:
  """The candidate whose raw output's mean is closest to `target` (ties: the smallest shift)."""
  raw = _forward(graphdef, params, batch_stats, np.stack([s['image_pair'] for s in samples]), network)
  means = raw.reshape(len(raw), -1).mean(axis=1)
  return samples[int(np.argmin(np.abs(means - target)))]


def evaluate_choose(graphdef, params, batch_stats, source, *, nominal: float = NOMINAL_DISPLACEMENT,
                    stabilize: bool = False, batch_size: int = 8, mesh=None, target: float = TARGET_DEPTH,
                    show_progress: bool = False, network=None) -> Evaluation:
  """The follow-up protocol on each scene's last frame, from the candidate pair it chooses (module docstring); the
  network JAX's, or `network`'s (`evaluate.batch_runner`)."""
  mesh = mesh if mesh is not None else sharding.make_mesh()
  run = evaluate.batch_runner('followup', mesh, graphdef, params, batch_stats, network)
  totals = evaluate.Totals('followup')
  batch_size = -(-batch_size // mesh.size) * mesh.size
  chosen: list[dict] = []
  with progress.Progress(len(source), 'scenes', desc='evaluated', enabled=show_progress) as bar:
    for index in range(len(source)):
      chosen.append(choose(graphdef, params, batch_stats, candidates(source[index], stabilize), target, network))
      bar.update(1)
      if len(chosen) == batch_size or index == len(source) - 1:
        local = _padded(chosen, batch_size)
        local = evaluate.with_scale(local, nominal)
        out, _ = run(local)
        totals.add(out)
        chosen = []
  return totals.result(len(source), nominal, None)


def _padded(samples: list[dict], size: int) -> dict:
  """A host batch of `size` rows: the samples, then copies of the last with mask 0."""
  rows = samples + [dict(samples[-1], mask=np.float32(0))] * (size - len(samples))
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}
