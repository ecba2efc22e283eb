"""``python -m fashion_conv.ingredients``: the ingredients study; the code is in ``fashion_conv.studies.ingredients``."""

import sys

from fashion_conv.studies.ingredients import main

if __name__ == "__main__":
    sys.exit(main())
