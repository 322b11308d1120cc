"""The GPU-lab lanes benchmark; same as `holoburn bench --lanes ...` (see holoburn.app.benchmarks.lanes)."""
import sys

from holoburn.app.benchmarks.lanes import main

if __name__ == "__main__":
    sys.exit(main())
