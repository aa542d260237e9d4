"""``python -m govgym``: the same as the ``govgym`` command."""

from govgym.cli import main

raise SystemExit(main())
