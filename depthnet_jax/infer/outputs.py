"""The output folder of `infer.py`: its manifest, which files a run may replace, atomic writing, temporaries.

**The output folder's manifest.** `footage.run` keeps `depthnet_infer.json` in the output folder (written
atomically), so that a script, a later run and a run reading that folder as its input know what is in it:

- `status`: 'incomplete' while a run writes (and after it was killed), 'complete' when it finished, 'failed'
  with `error` (its one-line message) when it stopped on an error; `run` says which run (pid, host, times);
- `settings`: per settings key, what determines the results: the checkpoint resolved and a digest of its files'
  bytes, the input and a digest of its frames' names and bytes (or of the video's bytes), the frame shift, the
  network input size, the results' version, with the flight's motion also the motion given (a log by its bytes)
  and the nominal displacement, with `--frame_shift auto` its settings, and for the animation the frame rate
  (paths are shown, not compared: a copied checkpoint or a moved folder gives the same results);
- `files`: each file a run wrote (or is about to write) -> the key of the settings it was written with. A name
  is entered before its file is written, so a killed run leaves no file of ours unlisted.

Rules drawn from it: (1) listing the frames of a folder skips every file its manifest lists, the manifest itself
and hidden files (our temporaries), so outputs written into the input folder are never read as frames; (2) before
any work, every output path is checked: an existing file the manifest does not list is the user's and is never
replaced (error naming it); a file the manifest lists under the same settings key is replaced (by the same
result); one listed under other settings is refused unless `overwrite` (which replaces only listed files);
(3) a run refuses a folder whose manifest says another live process is writing there.

**No half-results that look whole.** Each file is written to `.NAME.partial-HOST-PID-RANDOM.EXT` (`atomic`) and
renamed into place (the MP4 is streamed into such a temporary and renamed at the end). On any error and on Ctrl-C
the temporaries are removed and the manifest's status says the folder is not whole (exit code 1, or 130 for
Ctrl-C). A killed run
(SIGKILL) cannot clean up: the next run into that folder removes temporaries of our naming whose writer process
is no longer alive, and only those.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import socket
import sys
from typing import Any

import numpy as np

from depthnet_jax.common import atomic, cli, processes

MANIFEST = 'depthnet_infer.json'
MANIFEST_KIND = 'depthnet-jax infer.py outputs'
KIND_SUFFIXES = {'depth': '_depth.png', 'disp': '_disp.png', 'raw': '_depth.npy'}
ANIMATIONS = ('depth.gif', 'depth.mp4')
SHIFTS_CSV = 'shifts.csv'    # per frame: the pair used, its displacement and scale (runs given the flight's motion)
_REGISTER_AHEAD = 256        # video outputs entered in the manifest per rewrite of it


class OutputError(cli.UserError):
  """An output folder or file that cannot (or must not) be written; the message names it."""


# --- Identities, the manifest, temporaries ---------------------------------------------------------------------

def digest(value: Any) -> str:
  return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def filedigest(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def tree_identity(path: str) -> str:
  """Identity of a file's bytes, or of every file's name and bytes under a directory.

  By content, not modification time: a checkpoint or a video copied, or frames written again with the same
  bytes, give the same results, so their results may be replaced by a new run without --overwrite.
  """
  if os.path.isfile(path):
    return digest(filedigest(path))
  files = []
  for directory, dirs, names in os.walk(path):
    dirs.sort()
    files += [os.path.join(directory, n) for n in sorted(names)]
  return digest([[os.path.relpath(f, path), filedigest(f)] for f in files])


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def _is_output_name(name: str) -> bool:
  return (name == MANIFEST or name in ANIMATIONS or name == SHIFTS_CSV
          or name.endswith(tuple(KIND_SUFFIXES.values())))


def sweep_temporaries(folder: str) -> list[str]:
  """Removes the temporaries a killed run left in `folder` (`atomic`'s `.NAME.partial-HOST-PID-RANDOM.EXT`) whose
  NAME is one of our output names with its extension and whose writer is no longer alive. Returns the names."""
  def ours(fields, path):
    return (_is_output_name(fields['name']) and os.path.splitext(fields['name'])[1] == fields['ext']
            and os.path.isfile(path))
  return [os.path.basename(p) for p in atomic.sweep(folder, accept=ours)]


class Manifest:
  """`depthnet_infer.json` of an output folder (see the module docstring)."""

  def __init__(self, folder: str, data: dict | None = None):
    self.folder, self.path = folder, os.path.join(folder, MANIFEST)
    data = data or {}
    self.files: dict[str, str] = dict(data.get('files', {}))
    self.settings: dict[str, dict] = dict(data.get('settings', {}))
    self.status: str | None = data.get('status')
    self.error: str | None = data.get('error')
    self.run: dict = dict(data.get('run') or {})

  @classmethod
  def read(cls, folder: str, flag: str) -> 'Manifest':
    """The manifest of `folder` (empty if it has none); `flag` names the folder in errors."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.lexists(path):
      return cls(folder)
    try:
      with open(path, encoding='utf-8') as f:
        data = json.load(f)
    except (OSError, ValueError) as e:
      raise OutputError(f'{flag} {folder}: {path} is unreadable ({type(e).__name__}: {cli.one_line(e)[:200]}); it '
                        'is how infer.py tells its outputs from your files: restore it, or move it away (the files '
                        'it listed then count as yours)') from None
    if not (isinstance(data, dict) and data.get('kind') == MANIFEST_KIND and isinstance(data.get('files'), dict)
            and isinstance(data.get('settings'), dict)):
      raise OutputError(f'{flag} {folder}: {path} is not a manifest of infer.py (expected "kind": '
                        f'"{MANIFEST_KIND}"); move it away or choose another {flag}')
    return cls(folder, data)

  def writer_alive(self) -> bool:
    """Whether another live process on this host is writing into the folder."""
    pid = self.run.get('pid')
    return (self.status == 'incomplete' and isinstance(pid, int) and pid != os.getpid()
            and self.run.get('host') == socket.gethostname() and cli.pid_alive(pid))

  def prune(self, keep: tuple[str, ...] = ()) -> None:
    """Forgets files that do not exist (entered but never written) and settings no file uses."""
    self.files = {n: k for n, k in self.files.items() if os.path.lexists(os.path.join(self.folder, n))}
    used = set(self.files.values()) | set(keep)
    self.settings = {k: v for k, v in self.settings.items() if k in used}

  def save(self) -> None:
    data = {'kind': MANIFEST_KIND, 'version': 1, 'status': self.status, 'error': self.error, 'run': self.run,
            'settings': self.settings, 'files': dict(sorted(self.files.items()))}
    atomic.write_text(self.path, json.dumps(data, indent=1) + '\n')


_DIFFERENCES = (('checkpoint_id', 'checkpoint'), ('input_id', 'input'), ('frame_shift', '--frame_shift'),
                ('network_input', 'network input'), ('fps', '--fps'), ('motion', '--displacement/--motion'),
                ('nominal_displacement', 'nominal displacement'), ('max_shift', '--max_shift'),
                ('target_depth', '--target_depth'), ('shift_statistic', '--shift_statistic'),
                ('results_version', 'infer.py results version'))


def _differences(old: dict, new: dict) -> str:
  parts = []
  for field, label in _DIFFERENCES:
    if old.get(field) == new.get(field):
      continue
    if field.endswith('_id'):
      before, after = old.get(field[:-3]), new.get(field[:-3])
      parts.append(f'{label} {before} -> {after}' if before != after else f'{label} {after} changed since')
    else:
      parts.append(f'{label} {_shown_value(old.get(field))} -> {_shown_value(new.get(field))}')
  return ', '.join(parts) or 'other settings'


def _shown_value(value) -> str:
  if isinstance(value, list) and len(value) == 2:
    return f'{value[1]}x{value[0]}'
  return str(value)


def _names(names: list[str], limit: int = 3) -> str:
  more = f' (and {len(names) - limit} more)' if len(names) > limit else ''
  return ', '.join(names[:limit]) + more


def check_targets(folder: str, manifest: Manifest, targets: dict[str, str], settings: dict[str, dict],
                  overwrite: bool) -> None:
  """Refuses, before any work, to write over a file the manifest does not list (the user's) or, without
  `overwrite`, over a result of ours from other settings. `targets`: output name -> settings key."""
  foreign, other = [], []
  for name, key in targets.items():
    if not os.path.lexists(os.path.join(folder, name)):
      continue
    owner = manifest.files.get(name)
    if owner is None:
      foreign.append(name)
    elif owner != key and not overwrite:
      other.append((name, owner, key))
  if foreign:
    raise OutputError(f'--output {folder}: {_names(foreign)} already exist(s) and infer.py did not write it (not '
                      f'listed in its {MANIFEST}); expected no such file: infer.py never replaces files it did not '
                      'write, so move them away or choose another --output')
  if other:
    _, owner, key = other[0]
    raise OutputError(f'--output {folder}: {_names([o[0] for o in other])} hold(s) the results of an earlier run '
                      f'with other settings ({_differences(manifest.settings.get(owner, {}), settings[key])}); '
                      'pass --overwrite to replace earlier results of infer.py (never other files), or choose '
                      'another --output')


# --- Writing ---------------------------------------------------------------------------------------------------

class Animation:
  """Input beside depth, as a GIF (kept in memory) or an MP4 (streamed into a temporary); written atomically."""

  def __init__(self, path: str, fps: float):
    self.path, self.fps, self.frames, self._writer, self._tmp = path, fps, [], None, None

  def add(self, frame: np.ndarray) -> None:
    if self.path.endswith('.gif'):
      self.frames.append(frame)
      return
    import imageio.v3 as iio
    frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)))  # yuv420p: even sizes
    try:
      if self._writer is None:
        self._tmp = atomic.temporary_file(self.path)
        self._writer = iio.imopen(self._tmp, 'w', plugin='pyav')
        self._writer.init_video_stream('libx264', fps=self.fps)
      self._writer.write_frame(frame)
    except Exception as e:  # noqa: BLE001 - the encoder's or the disk's failure, reported as one line
      raise OutputError(f'--output {self.path}: the mp4 encoder failed ({type(e).__name__}: '
                        f'{cli.one_line(e)[:300]})') from e

  def close(self) -> None:
    if self.path.endswith('.gif'):
      import imageio.v3 as iio
      try:
        atomic.write_file(self.path, lambda tmp: iio.imwrite(tmp, np.stack(self.frames), extension='.gif',
                                                             duration=1000 / self.fps, loop=0))
      except Exception as e:  # noqa: BLE001
        raise OutputError(f'--output {self.path}: cannot write the GIF ({type(e).__name__}: '
                          f'{cli.one_line(e)[:300]})') from e
    elif self._writer is not None:
      try:
        writer, self._writer = self._writer, None
        writer.close()
        os.replace(self._tmp, self.path)
      except Exception as e:  # noqa: BLE001
        raise OutputError(f'--output {self.path}: the mp4 encoder failed ({type(e).__name__}: '
                          f'{cli.one_line(e)[:300]})') from e
      finally:
        self.abort()

  def abort(self) -> None:
    """Drops what was written so far: the temporary is removed."""
    writer, self._writer = self._writer, None
    if writer is not None:
      try:
        writer.close()
      except Exception:  # noqa: BLE001 - it is thrown away anyway
        pass
    if self._tmp and os.path.lexists(self._tmp):
      os.remove(self._tmp)


class OutputFolder:
  """The output folder of one run: created at the first write, the manifest kept current, the files written."""

  def __init__(self, folder: str, manifest: Manifest, key: str, video_key: str | None, settings: dict[str, dict],
               planned: list[str] | None, suffixes: list[str], animation: Animation | None, *,
               singles: dict[str, str] | None = None):
    """`planned`: a folder's per-frame output names (None for a video: entered as they come); `singles`: the
    run's other files (the animation, shifts.csv) -> their settings key."""
    self.folder, self.manifest, self.key, self.video_key = folder, manifest, key, video_key
    self.settings, self.planned, self.suffixes, self.animation = settings, planned, suffixes, animation
    self.singles = dict(singles or {})
    self.started = False

  def _start(self) -> None:
    try:
      os.makedirs(self.folder, exist_ok=True)
    except OSError as e:
      raise OutputError(f'--output {self.folder}: cannot create it ({e.strerror or e})') from None
    removed = sweep_temporaries(self.folder)
    if removed:
      print(f'removed {len(removed)} temporary file(s) a killed run left in {self.folder}: {_names(removed)}',
            file=sys.stderr, flush=True)
    m = self.manifest
    m.prune(keep=(self.key, self.video_key))
    m.settings.update(self.settings)
    m.status, m.error = 'incomplete', None
    m.run = {'pid': os.getpid(), 'host': socket.gethostname(), 'started': _now(), 'finished': None,
             'settings': self.key, 'video_settings': self.video_key, 'pairs': 0}
    for name in self.planned or []:
      m.files[name] = self.key
    if self.animation:
      m.files[os.path.basename(self.animation.path)] = self.video_key
    m.files.update(self.singles)
    self.started = True
    self._save()

  def _save(self) -> None:
    try:
      self.manifest.save()
    except OSError as e:
      raise OutputError(f'--output {self.manifest.path}: cannot write it ({e.strerror or e})') from None

  def enter(self, stems: list[str]) -> None:
    """Makes sure the outputs of these pairs are in the manifest before they are written."""
    if not self.started:
      self._start()
    names = [s + x for s in stems for x in self.suffixes]
    if all(self.manifest.files.get(n) == self.key for n in names):
      return
    first = int(stems[0])   # only video outputs are entered as they come: their stems are frame numbers
    for i in range(first, first + max(_REGISTER_AHEAD, len(stems))):
      for x in self.suffixes:
        self.manifest.files[f'{i:06d}{x}'] = self.key
    self._save()

  def write(self, name: str, writer, data) -> None:
    path = os.path.join(self.folder, name)
    try:
      writer(path, data)
    except OSError as e:
      raise OutputError(f'--output {path}: cannot write it ({e.strerror or e})') from e

  def finish(self, pairs: int) -> None:
    if self.animation:
      if not self.started:
        self._start()
      self.animation.close()
    self._end('complete', None, pairs)

  def abort(self, error: BaseException, pairs: int) -> None:
    """After `error`: temporaries removed, the manifest's status 'failed' (or 'incomplete' for Ctrl-C, SIGTERM)."""
    if self.animation:
      self.animation.abort()
    if not self.started:
      return
    try:
      if isinstance(error, KeyboardInterrupt):
        what = 'terminated (SIGTERM)' if isinstance(error, processes.Terminated) else 'interrupted (Ctrl-C)'
        self._end('incomplete', f'{what} after {pairs} pairs', pairs)
      else:
        self._end('failed', cli.one_line(error), pairs)
    except Exception:  # noqa: BLE001 - e.g. the disk is full: the error being raised is the one to report
      pass

  def _end(self, status: str, error: str | None, pairs: int) -> None:
    m = self.manifest
    m.prune(keep=(self.key, self.video_key))
    m.status, m.error = status, error
    m.run.update(finished=_now(), pairs=pairs)
    self._save()
