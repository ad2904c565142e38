"""`python -m spy`: the same as the `spy` command."""

import sys

from spy.cli import main

sys.exit(main())
