"""`python -m flowrelay`: the same as the `flowrelay` command."""

import sys

from flowrelay.cli.main import main

sys.exit(main())
