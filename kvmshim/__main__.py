"""`python -m kvmshim ...`: the same as the `kvmshim` console script."""
import sys

from .cli import main

sys.exit(main())
