"""Cold-start import cost of the handlers, relative to `import boto3`, in fresh interpreters.

Each figure is the wall time of a new `python -c "<import>"` process (the venv's Python, functions/ on sys.path),
repeated and interleaved, median taken; the ratio divides by `import boto3` measured in the same run, so the machine's
speed and load cancel out. The issue's goal: a handler module costs at most 1.5 x `import boto3`.

Two modes:
- `pyc`: the dev venv, bytecode cached (what a developer sees after the first run);
- `no_pyc`: the lock's packages and functions/ copied without __pycache__ and run with PYTHONDONTWRITEBYTECODE, as
  on Lambda: `sam build` ships no .pyc in the layer or the function packages, and /opt and /var/task are read-only,
  so every cold start compiles the imported modules from source.

Then one `-X importtime` run per handler lists what the handler modules import at module level, by cumulative time.
Prints a table and writes benchmarks/results/cold_start.json. Figures, not assertions.

    make bench-cold       # or: .venv/bin/python benchmarks/bench_cold_start.py [--repetitions N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cold_start.json"
LOCK = ROOT / "layers" / "dependencies" / "requirements.txt"
GOAL = 1.5

CASES = {
    "interpreter": "pass",
    "boto3": "import boto3",
    "handlers.rotation": "import handlers.rotation",
    "handlers.tasks": "import handlers.tasks",
}
HANDLERS = ("handlers.rotation", "handlers.tasks")
IMPORTTIME_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


def run_once(python: str, statement: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([python, "-c", statement], env=env, cwd=ROOT, check=True)
    return time.perf_counter() - start


def measure(python: str, env: dict[str, str], repetitions: int) -> dict[str, list[float]]:
    """Interleaved: one run of every case per repetition, so a burst of background load hits all cases alike."""
    for statement in CASES.values():  # warm the page cache (and, in pyc mode, the bytecode cache)
        run_once(python, statement, env)
    samples: dict[str, list[float]] = {case: [] for case in CASES}
    for _ in range(repetitions):
        for case, statement in CASES.items():
            samples[case].append(run_once(python, statement, env))
    return samples


def summarize(samples: dict[str, list[float]]) -> dict[str, Any]:
    median = {case: statistics.median(values) for case, values in samples.items()}
    boto3, interpreter = median["boto3"], median["interpreter"]
    return {
        "seconds": {
            case: {"median": round(median[case], 4), "min": round(min(v), 4), "max": round(max(v), 4)}
            for case, v in samples.items()
        },
        "ratio_to_boto3": {h: round(median[h] / boto3, 2) for h in HANDLERS},
        # Minimums are the least disturbed by other work on a shared machine.
        "ratio_of_minimums_to_boto3": {h: round(min(samples[h]) / min(samples["boto3"]), 2) for h in HANDLERS},
        # The same, with the bare interpreter's start-up subtracted from both sides.
        "net_ratio_to_boto3": {h: round((median[h] - interpreter) / (boto3 - interpreter), 2) for h in HANDLERS},
    }


def base_env(pythonpath: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = pythonpath
    return env


def locked_distributions() -> list[str]:
    names = []
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            names.append(line.split("==", 1)[0])
    return names


def copy_without_bytecode(dest: Path) -> tuple[Path, Path]:
    """functions/ and the lock's installed packages as `sam build` ships them: sources, no __pycache__."""
    function_dir, layer_dir = dest / "function", dest / "layer"
    shutil.copytree(ROOT / "functions", function_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in locked_distributions():
        dist = metadata.distribution(name)
        for file in dist.files or []:
            if ".." in file.parts or "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            target = layer_dir / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(str(file.locate())), target)
    return function_dir, layer_dir


def module_level_imports(python: str, handler: str, env: dict[str, str]) -> list[dict[str, Any]]:
    """What the handlers package's modules import directly (not handlers.*, not the stdlib), by cumulative time.

    A module is listed under the handler module whose import first loaded it (lazy attributes such as pydantic's
    show up as the submodules they load)."""
    result = subprocess.run(
        [python, "-X", "importtime", "-c", f"import {handler}"], env=env, cwd=ROOT, check=True, capture_output=True
    )
    entries = []
    for line in result.stderr.decode().splitlines():
        match = IMPORTTIME_LINE.match(line)
        if match:
            entries.append((len(match[3]) // 2, match[4], int(match[2])))
    # -X importtime prints a module after its imports: reversed, every module comes right after its parent's line.
    found: dict[str, int] = {}
    stack: list[tuple[int, str]] = []
    for level, name, cumulative_us in reversed(entries):
        while stack and stack[-1][0] >= level:
            stack.pop()
        parent = stack[-1][1] if stack else None
        third_party_or_domain = name.split(".")[0] not in sys.stdlib_module_names and not name.startswith("handlers")
        if parent and parent.startswith("handlers") and third_party_or_domain:
            found[name] = max(found.get(name, 0), cumulative_us)
        stack.append((level, name))
    ranked = sorted(found.items(), key=lambda item: -item[1])
    return [{"module": name, "cumulative_ms": round(us / 1000, 1)} for name, us in ranked]


def print_table(modes: dict[str, dict[str, Any]]) -> None:
    columns = {
        "x boto3": "ratio_to_boto3",
        "min x boto3": "ratio_of_minimums_to_boto3",
        "net x boto3": "net_ratio_to_boto3",
    }
    print(f"{'mode':<8} {'import':<20} {'median s':>9} {'min s':>7}" + "".join(f" {c:>12}" for c in columns))
    for mode, summary in modes.items():
        for case, figures in summary["seconds"].items():
            ratios = [summary[key].get(case) for key in columns.values()]
            print(
                f"{mode:<8} {case:<20} {figures['median']:>9.3f} {figures['min']:>7.3f}"
                + "".join(f" {'' if r is None else f'{r:.2f}':>12}" for r in ratios)
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repetitions", type=int, default=11)
    parser.add_argument("--python", default=sys.executable, help="the interpreter with the locked packages")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    pyc_env = base_env(str(ROOT / "functions"))
    modes = {"pyc": summarize(measure(args.python, pyc_env, args.repetitions))}
    with tempfile.TemporaryDirectory(prefix="rotator-cold-start-") as tmp:
        function_dir, layer_dir = copy_without_bytecode(Path(tmp))
        no_pyc_env = base_env(f"{function_dir}{os.pathsep}{layer_dir}")  # Lambda's order: /var/task, /opt/python
        no_pyc_env["PYTHONDONTWRITEBYTECODE"] = "1"
        modes["no_pyc"] = summarize(measure(args.python, no_pyc_env, args.repetitions))
    imports = {handler: module_level_imports(args.python, handler, pyc_env)[:12] for handler in HANDLERS}

    print_table(modes)
    print(f"\ngoal: each handler <= {GOAL} x import boto3 (pyc mode)")
    for handler, top in imports.items():
        listed = ", ".join(f"{i['module']} {i['cumulative_ms']} ms" for i in top[:8])
        print(f"{handler} imports at module level: {listed}")

    python_version = subprocess.run(
        [args.python, "-c", "import platform; print(platform.python_version())"], capture_output=True, check=True
    )
    document = {
        "benchmark": "cold-start imports: fresh interpreter per run, median, ratio to `import boto3` in the same run",
        "goal": f"each handler module <= {GOAL} x import boto3",
        "machine": {
            "python": python_version.stdout.decode().strip(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "repetitions": args.repetitions,
        "modes": modes,
        "module_level_imports_of_handlers_ms": imports,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = RESULTS.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(document, indent=2) + "\n")
    tmp_path.replace(RESULTS)
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
