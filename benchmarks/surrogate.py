"""Subset solves on cartpole features: newton-stats vs exact. Same as `policygradex bench surrogate`."""

import json

from policygradex.experiments.bench import bench_surrogate

if __name__ == "__main__":
    for row in bench_surrogate():
        print(json.dumps(row), flush=True)
