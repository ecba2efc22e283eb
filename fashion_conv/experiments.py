"""``python -m fashion_conv.experiments``: the experiments report; the code is in ``fashion_conv.studies.experiments``."""

import sys

from fashion_conv.studies.experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
