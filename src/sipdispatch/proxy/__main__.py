"""``python -m sipdispatch.proxy``."""

import sys

from sipdispatch.proxy.cli import main

sys.exit(main())
