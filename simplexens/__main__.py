"""``python -m simplexens``: the ``simplexens`` command."""

from .cli import main

raise SystemExit(main())
