"""``python -m fastencodec``: the command line (see :mod:`fastencodec.cli`)."""

from fastencodec.cli import main

raise SystemExit(main())
