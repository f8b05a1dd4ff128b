import sys

from ctrobust.cli import main

sys.exit(main())
