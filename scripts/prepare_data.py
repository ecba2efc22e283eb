"""Prepare data/processed/fashion-mnist-{train,test}.csv from the official IDX files (see fashion_conv.prepare)."""

import sys

from fashion_conv.prepare import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
