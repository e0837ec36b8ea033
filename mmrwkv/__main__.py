"""`python -m mmrwkv ...`: the same command line as the `mmrwkv` script."""

import sys

from mmrwkv.cli import main

sys.exit(main())
