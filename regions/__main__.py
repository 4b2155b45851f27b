"""``python -m safeguards.regions``: the ``safeguards`` console command without its script."""

import sys

from safeguards.regions.command_line import main

sys.exit(main())
