"""``python -m ctrobust``: the command line (:func:`ctrobust.cli.main`)."""

import sys

from ctrobust.cli import main

sys.exit(main())
