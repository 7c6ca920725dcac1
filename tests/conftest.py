"""Shared test set-up: JAX on the CPU, the PyTorch reference on fixed threads."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
