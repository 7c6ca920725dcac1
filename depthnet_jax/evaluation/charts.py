"""Charts drawn with matplotlib: the evaluation's error by depth (`python -m depthnet_jax.evaluate --plot`) and a
run's learning curve (`scripts/learning_curve.py`, `scripts/reference.py`).

Each chart is an RGB uint8 array [H, W, 3] of `size` pixels, which `atomic.write_png` writes. It is drawn on a
`matplotlib.figure.Figure` with its own Agg canvas, not through pyplot: no backend is selected, and a caller's own
pyplot session is left as it was. While a chart is drawn, matplotlib's default style holds (text in its bundled
DejaVu Sans), so a user's matplotlibrc does not change the pictures. matplotlib is imported only when a chart is
drawn (about a second on 2 CPU cores): commands that import this module but draw nothing do not pay for it.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

DPI = 100   # figure inches x DPI = the picture's pixels
STYLE = ['default', {'font.family': 'DejaVu Sans'}]
BLUE, LIGHT_BLUE, RED = '#285ac8', '#96aadc', '#c8281e'
COMPARED, BASELINE, DROP, GRID = '#aaaaaa', '#5a5a5a', '#c8c8c8', '#ebebeb'
BAR, BAR_LABEL = '#aac8eb', '#5a78aa'


def _render(size: tuple[int, int], draw: Callable) -> np.ndarray:
  """RGB uint8 [height, width, 3]: `draw(figure)` on a fresh Figure of `size` (width, height) pixels."""
  from matplotlib import style
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  width, height = size
  with style.context(STYLE):   # the caller's rcParams come back on leaving
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout='constrained')
    canvas = FigureCanvasAgg(figure)
    draw(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _line(axes, points: Sequence[tuple[float, float]], color: str, label: str, *, width: float = 1.0,
          markers: bool = False) -> None:
  """`points` [(x, y), ...] as a line joining its finite values (a diverged run logs NaN), legend entry `label`."""
  xy = np.array([(x, y) for x, y in points if math.isfinite(y)], np.float64).reshape(-1, 2)
  axes.plot(xy[:, 0], xy[:, 1], color=color, label=label, linewidth=width, marker='o' if markers else None,
            markersize=5)


def _legend_above(axes) -> None:
  """The legend in one row above the panel's right end, clear of the curves."""
  handles, labels = axes.get_legend_handles_labels()
  axes.legend(handles, labels, loc='lower right', bbox_to_anchor=(1, 1), ncols=len(labels), frameon=False,
              borderaxespad=0.2)


def learning_curve(scalars: dict[str, list[tuple[int, float]]], *, title: str, baseline: float | None = None,
                   other: dict[str, list[tuple[int, float]]] | None = None,
                   size: tuple[int, int] = (960, 720)) -> np.ndarray:
  """RGB uint8: train loss against steps (top), and depth error against steps (bottom: the evaluations, the
  training batches' error, the constant-depth baseline dashed); learning-rate drops as grey vertical lines.
  `other`: another run's scalars, drawn in grey underneath (x up to this run's last step). Both panels linear, from
  0; steps from 0 to the first round tick at or after the last step logged."""
  last = max((s for tag in ('train_loss', 'eval_depth_error') for s, _ in scalars.get(tag, [])), default=1)
  rates = scalars.get('train_learning_rate', [])
  drops = [s for (s, a), (_, b) in zip(rates, rates[1:]) if b < a * 0.999]

  def theirs(tag):
    return [(s, v) for s, v in other.get(tag, []) if s <= last]

  def draw(figure):
    from matplotlib.ticker import EngFormatter
    loss, error = figure.subplots(2, 1, sharex=True)
    if other is not None:
      _line(loss, theirs('train_loss'), COMPARED, 'compared run')
      _line(error, theirs('eval_depth_error'), COMPARED, 'compared eval', width=2, markers=True)
    _line(loss, scalars.get('train_loss', []), BLUE, 'train loss (multi-scale L1)')
    _line(error, scalars.get('train_depth_error', []), LIGHT_BLUE, 'train depth error')
    _line(error, scalars.get('eval_depth_error', []), RED, 'eval depth error', width=2, markers=True)
    if baseline is not None:
      error.axhline(baseline, color=BASELINE, linestyle='--', linewidth=1, label=f'constant depth {baseline:.2f} m')
    for axes, label in ((loss, 'loss'), (error, 'depth error (m)')):
      for step in drops:
        axes.axvline(step, color=DROP, linewidth=1, zorder=0)
      axes.set_ylim(bottom=0)
      axes.set_ylabel(label)
      axes.grid(axis='y', color=GRID)
      axes.tick_params(labelbottom=True)   # steps under both panels
      _legend_above(axes)
    end = max(last, 1)
    ticks = error.xaxis.get_major_locator().tick_values(0, end)
    error.set_xlim(0, min(t for t in ticks if t >= end))
    error.xaxis.set_major_formatter(EngFormatter(sep=''))   # 5000 -> 5k
    error.set_xlabel('training step')
    figure.suptitle(title, wrap=True)
  return _render(size, draw)


def error_by_depth(bins: Sequence[dict], title: str, size: tuple[int, int] = (900, 540)) -> np.ndarray:
  """RGB uint8 [H, W, 3]: mean absolute error per true-depth bin (line with a point per bin, left axis, metres) over
  the pixel count per bin (bars, right axis), x in metres from 0 to the last bin's end, ticks every 10 m. A bin
  without pixels (error None) leaves a gap in the line."""
  def draw(figure):
    from matplotlib.ticker import EngFormatter, MultipleLocator
    errors = figure.subplots()
    pixels = errors.twinx()
    errors.set_zorder(pixels.get_zorder() + 1)   # the line over the bars
    errors.patch.set_visible(False)
    pixels.bar([b['depth_min'] for b in bins], [b['pixels'] for b in bins], align='edge', color=BAR,
               width=[b['depth_max'] - b['depth_min'] for b in bins], edgecolor='white', linewidth=3)
    errors.plot([(b['depth_min'] + b['depth_max']) / 2 for b in bins],
                [np.nan if b['mean_abs_error'] is None else b['mean_abs_error'] for b in bins],
                color=RED, linewidth=2, marker='o', markersize=6)
    errors.set_xlim(0, bins[-1]['depth_max'])
    errors.xaxis.set_major_locator(MultipleLocator(10))
    errors.set_xlabel('true depth (m)')
    errors.set_ylim(bottom=0)
    errors.set_ylabel('mean abs error (m)', color=RED)
    errors.grid(axis='y', color=DROP)
    pixels.set_ylim(bottom=0)
    pixels.set_ylabel('pixels (bars)', color=BAR_LABEL)
    pixels.yaxis.set_major_formatter(EngFormatter(sep=''))   # 800000 -> 800k
    figure.suptitle(title, wrap=True)
  return _render(size, draw)
