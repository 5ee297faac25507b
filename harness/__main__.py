import gc

gc.disable()   # start-up makes only long-lived objects; harness.cli.main turns the collector back on when they are made
from harness.cli import main  # noqa: E402 - after the collector is off

raise SystemExit(main())
