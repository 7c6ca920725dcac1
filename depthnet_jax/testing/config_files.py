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


def load_module(path: str | os.PathLike, name: str):
  """The Python file at `path` as a module named `name` (a new module each call, not in sys.modules): a config
  file, or a top-level command such as infer.py that is not a package module."""
  path = os.fspath(path)
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise ImportError(f'{path}: not a Python file')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(path: str | os.PathLike) -> ml_collections.ConfigDict:
  """The `get_config()` of the Python config file at `path` (a new module each call, not in sys.modules)."""
  name = '_config_file_' + os.path.splitext(os.path.basename(os.fspath(path)))[0]
  return load_module(path, name).get_config()
