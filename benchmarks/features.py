"""Projected-gradient throughput (transitions/s): floor, factored, gaussian. Same as `policygradex bench features`."""

import json
import sys

from policygradex.experiments.bench import bench_features

if __name__ == "__main__":
    sizes = sys.argv[1].split(",") if len(sys.argv) > 1 else None
    for row in bench_features(sizes):
        print(json.dumps(row), flush=True)
