import sys

from holoburn.app.cli import main

sys.exit(main())
