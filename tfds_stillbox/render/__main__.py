"""`python -m tfds_stillbox.render`: the renderer's command line (tfds_stillbox/render/cli.py)."""

import sys

from tfds_stillbox.render.cli import main

if __name__ == '__main__':
  sys.exit(main())
