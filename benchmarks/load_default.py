"""Cold (first conversion of the GGUF) vs warm (cached safetensors) load of the embedded default model.

Each load runs in a fresh Python process, so imports are counted as a user sees them. The cold run uses an empty
temporary cache home; the warm runs reuse it.

Usage: python benchmarks/load_default.py [--warm-runs 3]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = """
import json, time
start = time.perf_counter()
import blockgen
lm = blockgen.load("default", device="cpu")
print(json.dumps({"total": time.perf_counter() - start, "load": lm.load_seconds}))
"""


def run_once(home: str) -> dict:
    env = dict(os.environ, BLOCKGEN_HOME=home)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["process"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        cold = run_once(home)
        warm = [run_once(home) for _ in range(args.warm_runs)]
    best = min(warm, key=lambda r: r["process"])
    print(f"{'run':<6}{'blockgen.load (s)':>20}{'import+load (s)':>18}{'process (s)':>14}")
    print(f"{'cold':<6}{cold['load']:>20.2f}{cold['total']:>18.2f}{cold['process']:>14.2f}")
    print(f"{'warm':<6}{best['load']:>20.2f}{best['total']:>18.2f}{best['process']:>14.2f}   (best of {len(warm)})")
    print(f"cold / warm (blockgen.load): {cold['load'] / best['load']:.1f}x")


if __name__ == "__main__":
    main()
