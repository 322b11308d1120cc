"""The GPU-lab lanes benchmark; same as `holoburn bench --lanes ...` (see holoburn.app.bench_lanes)."""
import sys

from holoburn.app.bench_lanes import main

if __name__ == "__main__":
    sys.exit(main())
