"""``python -m fashion_conv.experiments``: see ``fashion_conv.experiments.cli``."""

import sys

from fashion_conv.experiments.cli import main

sys.exit(main())
