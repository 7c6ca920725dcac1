"""A config file's `get_config()`, loaded by its path, for benchmarks run as `python benchmarks/x.py`.

train.py loads `--config configs/<name>.py` by path (ml_collections' config_flags), and the configs that build on
configs/default.py import it as `from configs import default`: that resolves because train.py's folder, the
repository root, is the first entry of its sys.path. A script in another folder has no `configs` package to
import (configs/ is not installed), so it loads the file it needs by path instead; the file's own imports must
resolve without the repository root, as configs/default.py's (ml_collections only) do.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections


def get_config(path: str | os.PathLike) -> ml_collections.ConfigDict:
  """The `get_config()` of the Python config file at `path` (a new module each call, not in sys.modules)."""
  path = os.fspath(path)
  name = '_config_file_' + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise ImportError(f'{path}: not a Python config file')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
