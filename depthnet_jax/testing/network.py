"""For tests that start `jax.distributed` processes: a free TCP port on 127.0.0.1 for their coordinator."""

import socket


def free_port() -> int:
  """A port on 127.0.0.1 that was free a moment ago (the OS picks it; the caller's processes bind it next)."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]
