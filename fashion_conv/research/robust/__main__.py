"""``python -m fashion_conv.research.robust``: the robustness report (see ``cli``)."""

import sys

from fashion_conv.research.robust.cli import main

sys.exit(main())
