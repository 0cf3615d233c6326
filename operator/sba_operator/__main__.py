"""`python -m sba_operator`."""

import sys

from sba_operator.main import run

sys.exit(run())
