import sys

try:  # Ctrl-C while the modules load (before any output exists): a plain exit, no traceback
    from holoburn.app.cli import main

    sys.exit(main())
except KeyboardInterrupt:
    print("holoburn: interrupted", file=sys.stderr)
    sys.exit(130)
