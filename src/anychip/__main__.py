"""`python -m anychip ...`: the same commands as the `anychip` console script."""

import sys

from anychip.cli import main

sys.exit(main())
