"""``python -m dance.cli``: the `dance` command."""

import sys

from dance.cli.main import main

sys.exit(main())
