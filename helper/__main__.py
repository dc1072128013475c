"""`python -m helper` is the `detour` command."""

from .cli import main

raise SystemExit(main())
