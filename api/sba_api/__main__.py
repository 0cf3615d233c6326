import sys

from sba_api.main import run

sys.exit(run())
