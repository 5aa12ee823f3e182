"""``python -m linstab.cli``: the ``linstab`` command."""

import sys

from .main import main

sys.exit(main())
