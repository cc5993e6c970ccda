"""Size of what `sam build` produces: each function's package and the dependencies layer.

Runs the project's build (scripts/sam-check.sh build: python3.13/arm64, into .aws-sam/build) uncached and times it,
then measures every artefact: files, bytes unzipped (what counts against Lambda's 250 MB limit, layers included) and
zipped (what `sam deploy` uploads). The goal: each function's own package <= 1 MB; the layer is the one large artefact.
Prints a table and writes benchmarks/results/build_size.json. Figures, not assertions.

    make bench-build      # or: .venv/bin/python benchmarks/bench_build_size.py [--no-build]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = ROOT / ".aws-sam" / "build"
RESULTS = ROOT / "benchmarks" / "results" / "build_size.json"
MB = 1024 * 1024
FUNCTION_GOAL_MB = 1.0


def build() -> float:
    env = {**os.environ, "SAM_BUILD_CACHED": "0"}
    start = time.perf_counter()
    subprocess.run(["bash", str(ROOT / "scripts" / "sam-check.sh"), "build"], cwd=ROOT, env=env, check=True)
    return time.perf_counter() - start


def measure(artefact: Path) -> dict[str, Any]:
    files = sorted(p for p in artefact.rglob("*") if p.is_file())
    unzipped = sum(p.stat().st_size for p in files)
    with tempfile.TemporaryFile() as raw:
        with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                archive.write(path, path.relative_to(artefact))
        zipped = raw.tell()
    return {"files": len(files), "unzipped_mb": round(unzipped / MB, 3), "zipped_mb": round(zipped / MB, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--no-build", action="store_true", help="measure the existing .aws-sam/build")
    args = parser.parse_args()

    build_seconds = None if args.no_build else round(build(), 1)
    if not (BUILD_DIR / "template.yaml").is_file():
        raise SystemExit(f"{BUILD_DIR} holds no build: run `make build` or drop --no-build")
    artefacts = {p.name: measure(p) for p in sorted(BUILD_DIR.iterdir()) if p.is_dir()}
    functions = {name: a for name, a in artefacts.items() if not name.startswith("DependenciesLayer")}
    layers = {name: a for name, a in artefacts.items() if name.startswith("DependenciesLayer")}
    largest = max(a["unzipped_mb"] for a in functions.values())

    print(f"{'artefact':<28} {'files':>6} {'unzipped MB':>12} {'zipped MB':>10}")
    for name, a in artefacts.items():
        print(f"{name:<28} {a['files']:>6} {a['unzipped_mb']:>12.3f} {a['zipped_mb']:>10.3f}")
    verdict = "meets" if largest <= FUNCTION_GOAL_MB else "misses"
    print(f"\nlargest function package: {largest:.3f} MB ({verdict} the <= {FUNCTION_GOAL_MB} MB goal)")
    if build_seconds is not None:
        print(f"uncached sam build: {build_seconds} s")

    document = {
        "benchmark": "sam build artefacts (python3.13, arm64): each function's package and the dependencies layer",
        "goal": f"each function package <= {FUNCTION_GOAL_MB} MB unzipped; the layer is the only large artefact",
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "uncached_build_seconds": build_seconds,
        "functions": functions,
        "layers": layers,
        "largest_function_unzipped_mb": largest,
        "total_unzipped_mb": round(sum(a["unzipped_mb"] for a in artefacts.values()), 3),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = RESULTS.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(document, indent=2) + "\n")
    tmp_path.replace(RESULTS)
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
