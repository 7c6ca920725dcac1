"""The disk as a test sees it: what a failed or interrupted command must leave as it was."""

from __future__ import annotations

import os


def snapshot(root) -> dict[str, bytes | None]:
  """Every path under `root`, hidden ones included -> its bytes (None for a folder)."""
  state: dict[str, bytes | None] = {}
  for folder, dirs, files in os.walk(root):
    for name in dirs:
      state[os.path.relpath(os.path.join(folder, name), root)] = None
    for name in files:
      with open(os.path.join(folder, name), 'rb') as f:
        state[os.path.relpath(os.path.join(folder, name), root)] = f.read()
  return state
