"""``python -m linstab``: the ``linstab`` command."""

import sys

from linstab.cli import main

sys.exit(main())
