"""``python -m fashion_conv.research.experiments``: the experiments report."""

import sys

from fashion_conv.research.experiments.cli import main

sys.exit(main())
