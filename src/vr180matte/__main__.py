"""``python -m vr180matte ...``: the same command line as the ``vr180matte`` script."""
import sys

from vr180matte.cli import main

sys.exit(main())
