"""``python -m langkit`` is the same as the ``langkit`` command."""

import sys

from langkit.cli import main

sys.exit(main())
