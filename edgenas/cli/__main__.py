"""``python -m edgenas.cli``."""

import sys

from edgenas.cli import main

sys.exit(main())
