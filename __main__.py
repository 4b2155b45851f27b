import sys

from safeguards.cli import main

sys.exit(main())
