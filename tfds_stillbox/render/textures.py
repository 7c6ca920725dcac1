"""Solid (3-D) procedural textures and shading for the Still Box renderer: numpy, vectorised over points.

A texture is a function of a point in its object's local frame (metres), so it sticks to the object as the
camera moves: the same surface point has the same albedo in every frame, and the Lambert shading is view
independent, so brightness is constant along a point's track, as the depth-from-motion task assumes.

Every pattern is pre-filtered for the pixel footprint (the size in metres of one pixel at the hit point): box-
filtered stripes and checkers, and noise octaves faded out above the Nyquist frequency. Textures then look the
same at every resolution, without supersampling, and do not alias or flicker between frames.
"""

from __future__ import annotations

import dataclasses

import numpy as np

PATTERNS = ('plain', 'noise', 'stripes', 'checker', 'marble')

# Lattice values of the value noise. A constant, never written: every process and run sees the same table.
_TABLE_BITS = 12
_TABLE = np.random.default_rng(20170613).uniform(-1.0, 1.0, 1 << _TABLE_BITS).astype(np.float32)
_TABLE.flags.writeable = False
# Multiplicative (Fibonacci-style) hashing: the high bits of k * odd constant mix all the bits of k.
_HASH_MULTIPLIERS = (np.uint32(0x9E3779B1), np.uint32(0x85EBCA77), np.uint32(0xC2B2AE3D))


@dataclasses.dataclass(frozen=True, eq=False)
class Material:
  """How a surface looks. Frequencies are in cycles per metre of the object's local frame.

  Attributes:
    pattern: one of PATTERNS; the pattern value in [0, 1] blends `color_a` (0) into `color_b` (1).
    color_a: RGB albedo in [0, 1].
    color_b: RGB albedo in [0, 1].
    frequency: cycles per metre of the pattern.
    axis: unit 3-vector, the direction across stripes (and marble veins).
    warp: how far (in cycles) noise bends stripes and marble.
    detail: amplitude of a multiplicative multi-octave noise on top of the pattern, in [0, 1).
    detail_frequency: cycles per metre of the lowest detail octave (the higher ones double it).
    offset: shifts the noise lattice, so that objects with the same frequencies do not share a noise field.
    face_tints: optional [6, 3] RGB multipliers, one per face of a box (by the dominant axis of the local
      normal: -x, +x, -y, +y, -z, +z); the room uses it to make its walls differ.
  """
  pattern: str = 'noise'
  color_a: tuple[float, float, float] = (0.25, 0.25, 0.25)
  color_b: tuple[float, float, float] = (0.85, 0.85, 0.85)
  frequency: float = 1.0
  axis: tuple[float, float, float] = (1.0, 0.0, 0.0)
  warp: float = 0.0
  detail: float = 0.3
  detail_frequency: float = 4.0
  offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
  face_tints: np.ndarray | None = None

  def __post_init__(self):
    if self.pattern not in PATTERNS:
      raise ValueError(f'pattern must be one of {PATTERNS}, got {self.pattern!r}')
    # Python floats, not numpy scalars: a numpy float64 scalar would promote the float32 point arrays.
    for name in ('color_a', 'color_b', 'axis', 'offset'):
      object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
    for name in ('frequency', 'warp', 'detail', 'detail_frequency'):
      object.__setattr__(self, name, float(getattr(self, name)))


def value_noise(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
  """Smooth value noise in [-1, 1] with one random value per unit lattice point (trilinear, smoothstep)."""
  floors = [np.floor(c) for c in (x, y, z)]
  # uint32 wraps on overflow, which is what the hash wants; one product per axis and lattice side.
  hashes = [[(f.astype(np.int32).view(np.uint32) + np.uint32(k)) * m for k in (0, 1)]
            for f, m in zip(floors, _HASH_MULTIPLIERS)]
  sx, sy, sz = (f * f * (3.0 - 2.0 * f) for f in (c - fl for c, fl in zip((x, y, z), floors)))
  shift = np.uint32(32 - _TABLE_BITS)
  out = None
  for j in (0, 1):
    for k in (0, 1):
      yz = hashes[1][j] ^ hashes[2][k]
      c0 = _TABLE[(hashes[0][0] ^ yz) >> shift]
      c1 = _TABLE[(hashes[0][1] ^ yz) >> shift]
      weight = (sy if j else 1.0 - sy) * (sz if k else 1.0 - sz)
      term = (c0 + sx * (c1 - c0)) * weight
      out = term if out is None else out + term
  return out.astype(np.float32, copy=False)


def _nyquist_fade(cycles_per_pixel: np.ndarray) -> np.ndarray:
  # Full contrast up to 1/4 cycle per pixel, none from 1/2 (the Nyquist limit) on.
  return np.clip(2.0 - 4.0 * cycles_per_pixel, 0.0, 1.0)


def fbm(p: tuple, footprint: np.ndarray, frequency: float, octaves: int, offset=(0.0, 0.0, 0.0),
        gain: float = 0.5) -> np.ndarray:
  """Fractal value noise, about [-1, 1] (std ~0.35): octaves from `frequency` up, amplitudes falling by `gain`.

  Args:
    p: (x, y, z) point coordinates in metres, arrays of one shape.
    footprint: pixel size in metres at each point; octaves finer than the pixel fade to their mean (0).
    frequency: cycles per metre of the first octave.
    octaves: number of octaves.
    offset: noise-lattice shift in cycles.
    gain: amplitude ratio of successive octaves; nearer 1 gives more fine detail.
  """
  total = np.zeros(np.shape(footprint), np.float32)
  # Normalised by the root of the summed squared amplitudes: the sum of independent octaves keeps the spread
  # of one octave. Faded octaves still count, so texture loses contrast with distance, as an average does.
  norm = np.sqrt(sum(gain ** (2 * o) for o in range(octaves)))
  for o in range(octaves):
    f = frequency * 2.0 ** o
    fade = _nyquist_fade(footprint * f)
    if not fade.any():  # this octave and every finer one are below the pixel size everywhere
      break
    # The irrational per-octave shift keeps the octaves' lattices from lining up.
    shift = [c + 7.31 * o for c in offset]
    amplitude = np.float32(gain ** o / norm)
    total += amplitude * fade * value_noise(p[0] * f + shift[0], p[1] * f + shift[1], p[2] * f + shift[2])
  return total


def filtered_square(u: np.ndarray, width: np.ndarray) -> np.ndarray:
  """Square wave (1 on the first half of each unit cycle, else 0) box-filtered over `width` cycles."""
  width = np.maximum(width, 1e-4)

  def integral(x):  # the antiderivative of the square wave
    fl = np.floor(x)
    return 0.5 * fl + np.minimum(x - fl, 0.5)

  return (integral(u + 0.5 * width) - integral(u - 0.5 * width)) / width


def _pattern(material: Material, p: tuple, footprint: np.ndarray) -> np.ndarray:
  """The material's pattern value in [0, 1] at local points p."""
  f = material.frequency
  width = footprint * f  # pixel size in pattern cycles
  if material.pattern == 'plain':
    return np.zeros(np.shape(footprint), np.float32)
  if material.pattern == 'noise':
    return np.clip(0.5 + 1.2 * fbm(p, footprint, f, 4, material.offset), 0.0, 1.0)
  if material.pattern == 'checker':
    signs = [1.0 - 2.0 * filtered_square(c * f, width) for c in p]
    # The product of filtered +-1 waves is the XOR of the three axes' parities (iq's filtered checkers).
    return 0.5 - 0.5 * signs[0] * signs[1] * signs[2]
  u = p[0] * material.axis[0] + p[1] * material.axis[1] + p[2] * material.axis[2]
  u = u * f
  if material.warp:
    u = u + material.warp * fbm(p, footprint, 0.5 * f, 3, material.offset)
  if material.pattern == 'stripes':
    return filtered_square(u, width)
  return 0.5 + 0.5 * np.sin(2.0 * np.pi * u) * _nyquist_fade(width)  # marble


def albedo(material: Material, p: tuple, normal: tuple, footprint: np.ndarray) -> np.ndarray:
  """RGB albedo `[N, 3]` at local points p (x, y, z arrays [N]) with local normals (for face tints)."""
  s = _pattern(material, p, footprint)[:, None]  # [N, 1]
  a = np.asarray(material.color_a, np.float32)
  b = np.asarray(material.color_b, np.float32)
  rgb = a + s * (b - a)  # [N, 3]
  if material.detail:
    d = fbm(p, footprint, material.detail_frequency, 8, [c + 101.7 for c in material.offset], gain=0.7)
    rgb = rgb * (1.0 + material.detail * np.clip(1.4 * d, -1.0, 1.0))[:, None]
  if material.face_tints is not None:
    n = np.stack(normal, axis=-1)  # [N, 3]
    axis = np.argmax(np.abs(n), axis=-1)
    positive = np.take_along_axis(n, axis[:, None], -1)[:, 0] > 0
    rgb = rgb * np.asarray(material.face_tints, np.float32)[2 * axis + positive]
  return rgb


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
  """A float drawn log-uniformly from [lo, hi] (one draw of `rng`)."""
  return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def random_color(rng: np.random.Generator) -> np.ndarray:
  """An RGB colour from random hue, saturation and value (greys and dark colours included).

  Saturation stays moderate: JPEG halves the chroma resolution, and fully saturated pixel-sized details would
  be smeared by far more than the luma, at 64 px and below.
  """
  h, s, v = rng.random(), 0.6 * rng.uniform(0.0, 1.0) ** 1.5, rng.uniform(0.15, 1.0)
  k = (np.array([5.0, 3.0, 1.0]) + 6.0 * h) % 6.0
  return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def random_material(rng: np.random.Generator, size: float, room: bool = False) -> Material:
  """A random material for an object of about `size` metres (or the room, `size` its mean width)."""
  pattern = PATTERNS[1 + rng.choice(4, p=[0.3, 0.25, 0.25, 0.2])]
  a = random_color(rng)
  b = random_color(rng)
  if np.abs(a - b).sum() < 0.6:  # too close to see the pattern: darken or lighten the second colour
    b = np.clip(b * 0.3 if b.mean() > 0.5 else b + 0.5, 0.0, 1.0)
  axis = rng.normal(size=3)
  # Frequencies relative to the size, so that the texture scale says nothing about distance either.
  cycles = log_uniform(rng, 0.6, 8.0) if room else log_uniform(rng, 1.0, 10.0)
  frequency = cycles / size
  # The room's detail is absolute (features of ~0.2 to 7 m), to be seen at any wall distance and resolution.
  detail_frequency = log_uniform(rng, 0.15, 0.6) if room else frequency * rng.uniform(2.0, 6.0)
  tints = None
  if room:
    tints = np.clip(1.0 + rng.uniform(-0.35, 0.35, (6, 1)) + rng.uniform(-0.12, 0.12, (6, 3)), 0.3, 1.6)
    tints = tints.astype(np.float32)
  return Material(
      pattern=pattern, color_a=a, color_b=b, frequency=frequency, axis=axis / np.linalg.norm(axis),
      warp=rng.uniform(0.0, 1.5) * (rng.random() < 0.6), detail=rng.uniform(0.2, 0.6),
      detail_frequency=detail_frequency, offset=rng.uniform(0.0, 256.0, 3), face_tints=tints)


def shade(rgb: np.ndarray, normal: np.ndarray, light: np.ndarray, ambient: float) -> np.ndarray:
  """Lambert with one directional light plus ambient. rgb, normal `[N, 3]` (normal unit, world); light unit."""
  lambert = np.maximum(normal @ np.asarray(light, np.float32), 0.0)  # [N]
  return rgb * (ambient + (1.0 - ambient) * lambert)[:, None]
