"""``python -m authql`` is the CLI."""

from authql.cli import main

raise SystemExit(main())
