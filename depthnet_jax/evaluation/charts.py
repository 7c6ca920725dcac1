"""Charts drawn with OpenCV (no matplotlib): the evaluation's error by depth (`depthnet_jax.evaluate --plot`) and a
run's learning curve (`scripts/learning_curve.py`). Pictures are RGB uint8 arrays; axes, ticks and labels here.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

BLACK, GREY, LIGHT = (0, 0, 0), (200, 200, 200), (235, 235, 235)
FONT_SCALE = 0.45


def nice_ceiling(value: float) -> float:
  """The smallest of 1, 2, 2.5, 5 x 10^k that is >= value (> 0)."""
  if not value > 0 or not math.isfinite(value):
    return 1.0
  base = 10 ** math.floor(math.log10(value))
  for m in (1, 2, 2.5, 5, 10):
    if m * base >= value * (1 - 1e-9):
      return m * base
  return 10 * base


def count_label(n: float) -> str:
  for div, suffix in ((1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
    if n >= div:
      return f'{n / div:.3g}{suffix}'
  return f'{n:.3g}'


def fit(text: str, width: int, scale: float) -> str:
  """`text` in ASCII (cv2's fonts), shortened from the left with '...' to fit `width` pixels."""
  import cv2
  text = text.encode('ascii', 'replace').decode('ascii')
  while len(text) > 4 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width:
    text = '...' + text[4:]
  return text


def put_text(image: np.ndarray, s: str, x: float, y: float, scale: float = FONT_SCALE, color=BLACK,
             align: str = 'left') -> None:
  """`s` drawn with its vertical centre at y, its left end, centre or right end at x."""
  import cv2
  font = cv2.FONT_HERSHEY_SIMPLEX
  w, h = cv2.getTextSize(s, font, scale, 1)[0]
  x = {'left': x, 'center': x - w // 2, 'right': x - w}[align]
  cv2.putText(image, s, (int(x), int(y + h // 2)), font, scale, color, 1, cv2.LINE_AA)


def _dashed(image, a, b, color, dash: int = 8) -> None:
  import cv2
  (x0, y0), (x1, y1) = a, b
  length = max(abs(x1 - x0), abs(y1 - y0), 1)
  for s in range(0, length, 2 * dash):
    e = min(s + dash, length)
    cv2.line(image, (x0 + (x1 - x0) * s // length, y0 + (y1 - y0) * s // length),
             (x0 + (x1 - x0) * e // length, y0 + (y1 - y0) * e // length), color, 1, cv2.LINE_AA)


def step_label(step: float) -> str:
  return f'{step / 1000:g}k' if step >= 1000 else f'{step:g}'


def panel(image: np.ndarray, box: tuple[int, int, int, int], series: Sequence[dict], x_max: float, *,
          y_label: str, hlines: Sequence[dict] = (), vlines: Sequence[float] = (), y_max: float | None = None,
          x_label: str = '') -> None:
  """A line chart in `box` (left, top, right, bottom) of `image`, x from 0 to x_max, y from 0.

  series: dicts of `points` [(x, y), ...], `color`, `label`, optional `width` and `markers`; hlines: dicts of `y`,
  `color`, `label` (dashed lines across); vlines: x positions of thin grey lines (e.g. learning-rate drops).
  """
  import cv2
  left, top, right, bottom = box
  values = [y for s in series for _, y in s['points'] if math.isfinite(y)] + [h['y'] for h in hlines]
  y_top = nice_ceiling(y_max if y_max is not None else max(values or [1.0]))
  x_top = x_max if x_max > 0 else 1.0

  def px(x):
    return int(round(left + (right - left) * x / x_top))

  def py(y):
    return int(round(bottom - (bottom - top) * min(max(y, 0.0), y_top) / y_top))

  for k in range(6):
    y = py(y_top * k / 5)
    cv2.line(image, (left, y), (right, y), LIGHT, 1)
    put_text(image, f'{y_top * k / 5:g}', left - 8, y, align='right')
  x_tick = nice_ceiling(x_top / 8)
  for k in range(int(x_top // x_tick) + 1):
    x = px(k * x_tick)
    cv2.line(image, (x, bottom), (x, bottom + 5), BLACK, 1)
    put_text(image, step_label(k * x_tick), x, bottom + 16, align='center')
  for v in vlines:
    cv2.line(image, (px(v), top), (px(v), bottom), GREY, 1)
  for h in hlines:
    _dashed(image, (left, py(h['y'])), (right, py(h['y'])), h['color'])
  for s in series:
    points = [(px(x), py(y)) for x, y in s['points'] if math.isfinite(y)]
    if len(points) > 1:
      cv2.polylines(image, [np.array(points, np.int32)], False, s['color'], s.get('width', 1), cv2.LINE_AA)
    if s.get('markers'):
      for p in points:
        cv2.circle(image, p, 3, s['color'], -1, cv2.LINE_AA)
  cv2.rectangle(image, (left, top), (right, bottom), BLACK, 1)
  put_text(image, y_label, left, top - 12)
  legend = [(s['label'], s['color']) for s in series] + [(h['label'], h['color']) for h in hlines]
  x = right
  for label, color in reversed(legend):
    w = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, 1)[0][0]
    put_text(image, label, x, top - 12, color=color, align='right')
    cv2.line(image, (x - w - 26, top - 12), (x - w - 8, top - 12), color, 2)
    x -= w + 40
  if x_label:
    put_text(image, x_label, (left + right) // 2, bottom + 36, align='center')


def learning_curve(scalars: dict[str, list[tuple[int, float]]], *, title: str, baseline: float | None = None,
                   other: dict[str, list[tuple[int, float]]] | None = None,
                   size: tuple[int, int] = (960, 720)) -> np.ndarray:
  """RGB uint8: train loss against steps (top), and depth error against steps (bottom: the evaluations, the
  training batches' error, the constant-depth baseline dashed); learning-rate drops as grey vertical lines.
  `other`: another run's scalars, drawn in grey underneath (x up to this run's last step)."""
  width, height = size
  image = np.full((height, width, 3), 255, np.uint8)
  last = max((s for tag in ('train_loss', 'eval_depth_error') for s, _ in scalars.get(tag, [])), default=1)
  x_max = nice_ceiling(last) if last > 0.8 * nice_ceiling(last) else float(last)   # a round end when it is near
  rates = scalars.get('train_learning_rate', [])
  drops = [s for (s, a), (_, b) in zip(rates, rates[1:]) if b < a * 0.999]
  left, right = 80, width - 30
  mid = height // 2
  put_text(image, fit(title, width - 20, 0.55), width // 2, 20, scale=0.55, align='center')
  def theirs(tag, label, **kw):
    if other is None:
      return []
    return [{'points': [(s, v) for s, v in other.get(tag, []) if s <= x_max], 'color': (170, 170, 170),
             'label': label, **kw}]
  panel(image, (left, 60, right, mid - 40), theirs('train_loss', 'compared run') + [
      {'points': scalars.get('train_loss', []), 'color': (40, 90, 200), 'label': 'train loss (multi-scale L1)'}],
      x_max, y_label='loss', vlines=drops)
  train_error = scalars.get('train_depth_error', [])
  evals = scalars.get('eval_depth_error', [])
  panel(image, (left, mid + 40, right, height - 60), theirs('eval_depth_error', 'compared eval', width=2,
                                                            markers=True) + [
      {'points': train_error, 'color': (150, 170, 220), 'label': 'train depth error'},
      {'points': evals, 'color': (200, 40, 30), 'label': 'eval depth error', 'width': 2, 'markers': True}],
      x_max, y_label='depth error (m)', vlines=drops, x_label='training step',
      hlines=[{'y': baseline, 'color': (90, 90, 90), 'label': f'constant depth {baseline:.2f} m'}]
      if baseline is not None else [])
  return image


def error_by_depth(bins: Sequence[dict], title: str, size: tuple[int, int] = (900, 540)) -> np.ndarray:
  """RGB uint8 [H, W, 3]: mean absolute error per true-depth bin (line, left axis, metres) over the pixel count
  per bin (bars, right axis), x in metres; OpenCV drawing only."""
  import cv2
  width, height = size
  image = np.full((height, width, 3), 255, np.uint8)
  left, right, top, bottom = 80, width - 90, 70, height - 70
  black, grey, bar, line = BLACK, GREY, (170, 200, 235), (200, 40, 30)

  def text(s, x, y, scale=FONT_SCALE, color=black, align='left'):
    put_text(image, s, x, y, scale, color, align)

  x_max = bins[-1]['depth_max']
  errors = [b['mean_abs_error'] for b in bins]
  top_error = nice_ceiling(max([e for e in errors if e is not None] or [1.0]))
  top_count = nice_ceiling(max(b['pixels'] for b in bins) or 1)

  def px(depth):
    return left + (right - left) * depth / x_max

  def py(fraction):
    return bottom - (bottom - top) * fraction

  for b in bins:   # bars: pixels per bin
    if b['pixels']:
      cv2.rectangle(image, (int(px(b['depth_min'])) + 2, int(py(b['pixels'] / top_count))),
                    (int(px(b['depth_max'])) - 2, bottom), bar, -1)
  for k in range(6):      # grid, left ticks (error), right ticks (pixels)
    y = int(round(py(k / 5)))
    cv2.line(image, (left, y), (right, y), grey, 1)
    text(f'{top_error * k / 5:g}', left - 8, y, align='right')
    text(count_label(top_count * k / 5), right + 8, y)
  for depth in range(0, int(x_max) + 1, 10):   # x ticks in metres
    x = int(round(px(depth)))
    cv2.line(image, (x, bottom), (x, bottom + 5), black, 1)
    text(f'{depth}', x, bottom + 16, align='center')
  cv2.rectangle(image, (left, top), (right, bottom), black, 1)
  points = [(int(round(px((b['depth_min'] + b['depth_max']) / 2))), int(round(py(b['mean_abs_error'] / top_error))))
            if b['mean_abs_error'] is not None else None for b in bins]
  for a, b in zip(points, points[1:]):
    if a and b:
      cv2.line(image, a, b, line, 2, cv2.LINE_AA)
  for p in points:
    if p:
      cv2.circle(image, p, 4, line, -1, cv2.LINE_AA)
  text('true depth (m)', (left + right) // 2, bottom + 40, align='center')
  text('mean abs error (m)', left, top - 14, color=line)
  text('pixels (bars)', right, top - 14, color=(90, 120, 170), align='right')
  text(fit(title, width - 20, 0.55), width // 2, 24, scale=0.55, align='center')
  return image
