"""Cold-start import cost of the handlers as Lambda imports them, relative to `import boto3`, in fresh interpreters.

What Lambda runs is the `sam build` output: a function package (/var/task) and the dependencies layer (/opt/python),
under python3.13, on read-only files (nothing can write bytecode). So the benchmark takes a `sam build` (an existing
one with --build-dir or ROTATOR_BUILD_DIR, else a fresh one in a temporary directory) and runs python3.13 with
sys.path = [function package, layer's python/] + the standard library, PYTHONDONTWRITEBYTECODE=1 and no `site` (the
machine's site-packages stay out, as on Lambda, where the runtime's own come after /opt/python).

The layer is built for arm64, and this machine cannot load the aarch64 wheels' extension modules (pydantic_core,
psycopg_binary) unless it is one. On any other machine the benchmark builds the same layer for x86_64: the identical
lock, through layers/dependencies/Makefile with PLATFORM=x86_64, the same compileall step; it checks that every .py
and .pyc is byte-identical to the arm64 layer's, so only the extension modules differ.

Each figure is the wall time of a new `python -c "<import>"` process, repeated and interleaved over every mode, median
taken; ratios divide by `import boto3` in the same mode and run, so the machine's speed and load cancel out. The goal:
a handler module costs at most 1.5 x `import boto3`. Modes:
- `lambda`: the build as it ships (the layer's precompiled bytecode, the functions' code as source);
- `lambda_no_layer_pyc`: the same with the layer's bytecode hidden (a copy without __pycache__): SAM's python
  builder's layer, which made every cold start compile every module it imports;
- `lambda_functions_pyc`: `lambda` plus the functions' own code precompiled too (a copy, compileall unchecked-hash),
  to measure whether shipping that bytecode would be worth it;
- `dev_venv`: the dev venv's Python with functions/ on sys.path, bytecode cached (what a developer sees).

Then one `-X importtime` run per handler (mode `lambda`) lists what the handler modules import at module level.
Prints a table and writes benchmarks/results/cold_start.json. Figures, not assertions.

    make bench-cold       # or: .venv/bin/python benchmarks/bench_cold_start.py [--build-dir .aws-sam/build]
"""

from __future__ import annotations

import argparse
import filecmp
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cold_start.json"
LAYER_MAKEFILE = ROOT / "layers" / "dependencies" / "Makefile"
GOAL = 1.5
PYENV_VERSION = "3.11.7:3.12.1:3.13.0"  # scripts/sam-check.sh's: selects python3.13 on machines with pyenv
# The eight function packages are the same code (CodeUri functions/); the benchmark imports from this one.
FUNCTION = "RotationFunction"

CASES = {
    "interpreter": "pass",
    "boto3": "import boto3",
    "handlers.rotation": "import handlers.rotation",
    "handlers.tasks": "import handlers.tasks",
}
HANDLERS = ("handlers.rotation", "handlers.tasks")
LAMBDA_FLAGS = ("-S", "-P")  # no site, no script/cwd directory prepended to sys.path
IMPORTTIME_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")
CODE_OBJECT_LINE = re.compile(r"^# code object from '?(?P<path>[^']+)'?$")


@dataclass(frozen=True)
class Setup:
    """How a mode starts its interpreters."""

    python: str
    flags: tuple[str, ...]
    env: dict[str, str]

    def argv(self, *args: str) -> list[str]:
        return [self.python, *self.flags, *args]


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without Python's and make's variables, plus `extra`."""
    dropped = ("PYTHON", "MAKE", "MFLAGS")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(dropped)}, **extra}


def lambda_setup(python: str, function_dir: Path, layer_dir: Path) -> Setup:
    env = clean_env(PYTHONPATH=f"{function_dir}{os.pathsep}{layer_dir}", PYTHONDONTWRITEBYTECODE="1")
    return Setup(python, LAMBDA_FLAGS, env)


def run_once(setup: Setup, statement: str) -> float:
    start = time.perf_counter()
    subprocess.run(setup.argv("-c", statement), env=setup.env, cwd=ROOT, check=True)
    return time.perf_counter() - start


def measure(setups: dict[str, Setup], repetitions: int) -> dict[str, dict[str, list[float]]]:
    """Interleaved: one run of every mode's every case per repetition, so a burst of load hits them all alike."""
    for setup in setups.values():  # warm the page cache (and, in dev_venv, the bytecode cache)
        for statement in CASES.values():
            run_once(setup, statement)
    samples: dict[str, dict[str, list[float]]] = {mode: {case: [] for case in CASES} for mode in setups}
    for _ in range(repetitions):
        for mode, setup in setups.items():
            for case, statement in CASES.items():
                samples[mode][case].append(run_once(setup, statement))
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


def gain(modes: dict[str, dict[str, Any]], without: str, with_: str) -> dict[str, dict[str, float]]:
    """Per import: how much longer it takes in mode `without` than in mode `with_` (medians)."""
    out = {}
    for case in CASES:
        if case == "interpreter":
            continue
        slow, fast = modes[without]["seconds"][case]["median"], modes[with_]["seconds"][case]["median"]
        out[case] = {"saved_ms": round((slow - fast) * 1000, 1), "times_slower_without": round(slow / fast, 2)}
    return out


def find_python313(explicit: str | None) -> str:
    """The real python3.13 executable (not a pyenv shim, whose own start-up would be timed with every import)."""
    env = clean_env()
    if explicit is None and shutil.which("pyenv"):
        env.setdefault("PYENV_VERSION", PYENV_VERSION)
    probe = "import sys; assert sys.version_info[:2] == (3, 13); print(sys.executable)"
    try:
        found = subprocess.run([explicit or "python3.13", "-c", probe], env=env, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit(f"python3.13 is needed (the Lambda runtime's Python); pass --python313: {error}") from None
    return found.stdout.decode().strip()


def run_logged(argv: list[str], env: dict[str, str], what: str) -> float:
    """Runs a build step quietly; its output is shown only when it fails."""
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if result.returncode:
        sys.stdout.write(result.stdout.decode(errors="replace")[-6000:])
        raise SystemExit(f"{what} failed (exit {result.returncode})")
    return time.perf_counter() - start


def sam_build(dest: Path) -> float:
    """The project's build (scripts/sam-check.sh build: python3.13, arm64, uncached), into dest."""
    env = clean_env(SAM_BUILD_DIR=str(dest / "build"), SAM_CACHE_DIR=str(dest / "cache"), SAM_BUILD_CACHED="0")
    print(f"sam build into {dest / 'build'} ...", flush=True)
    return run_logged(["bash", str(ROOT / "scripts" / "sam-check.sh"), "build"], env, "sam build")


def build_layer(dest: Path, machine: str, python313: str) -> float:
    """The dependencies layer for `machine`: the same Makefile target `sam build` runs, with PLATFORM set."""
    print(f"layers/dependencies/Makefile build-DependenciesLayer PLATFORM={machine} into {dest} ...", flush=True)
    argv = ["make", "-s", "--makefile", str(LAYER_MAKEFILE), "build-DependenciesLayer"]
    argv += [f"PLATFORM={machine}", f"ARTIFACTS_DIR={dest}", f"PYTHON313={python313}"]
    return run_logged(argv, clean_env(), "the layer build")


def python_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.suffix in (".py", ".pyc") and p.is_file())


def compare_python_files(built: Path, variant: Path) -> dict[str, Any]:
    """Whether the variant's .py and .pyc files are exactly the built layer's (only extension modules may differ)."""
    ours, theirs = python_files(built), python_files(variant)
    common = sorted(set(ours) & set(theirs))
    _, mismatch, errors = filecmp.cmpfiles(built, variant, [str(p) for p in common], shallow=False)
    return {
        "py_files": sum(p.suffix == ".py" for p in ours),
        "pyc_files": sum(p.suffix == ".pyc" for p in ours),
        "only_in_lambda_build": [str(p) for p in sorted(set(ours) - set(theirs))][:10],
        "only_in_variant": [str(p) for p in sorted(set(theirs) - set(ours))][:10],
        "differing": (mismatch + errors)[:10],
        "identical": set(ours) == set(theirs) and not mismatch and not errors,
    }


def copy_without_bytecode(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def copy_compiled(python313: str, source: Path, dest: Path, prefix: str) -> Path:
    """A copy of source with unchecked-hash bytecode (the layer Makefile's compileall step; `prefix` as at run time)."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    compileall = ["-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash"]
    subprocess.run([python313, *compileall, "-s", str(dest), "-p", prefix, str(dest)], check=True, env=clean_env())
    return dest


COMPILE_PROBE = """
import sys, time
from pathlib import Path
sources = [(str(p), p.read_bytes()) for p in sorted(Path(sys.argv[1]).rglob("*.py"))]
best = float("inf")
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    for name, source in sources:
        compile(source, name, "exec", dont_inherit=True)
    best = min(best, time.perf_counter() - start)
print(len(sources), sum(len(s) for _, s in sources), best)
"""


def compile_time(python313: str, package: Path, repetitions: int = 20) -> dict[str, Any]:
    """What bytecode in a package could save at most: compiling all its sources, in one process, best of N."""
    probe = subprocess.run([python313, "-c", COMPILE_PROBE, str(package), str(repetitions)], capture_output=True)
    files, size, seconds = probe.stdout.decode().split()
    return {"py_files": int(files), "kb": round(int(size) / 1024, 1), "compile_all_ms": round(float(seconds) * 1000, 1)}


def code_origins(setup: Setup, places: dict[str, Path]) -> dict[str, dict[str, int]]:
    """For `import` of both handlers: how many modules of each place were loaded from bytecode or compiled from
    source (python -v), and that nothing came from anywhere else than those places and the standard library."""
    result = subprocess.run(
        setup.argv("-v", "-c", "import handlers.rotation, handlers.tasks"),
        env=setup.env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    counts = {place: {"bytecode": 0, "source": 0} for place in [*places, "stdlib"]}
    probe = setup.argv("-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])")
    stdlib = Path(subprocess.run(probe, env=setup.env, capture_output=True, check=True).stdout.decode().strip())
    for line in result.stderr.decode().splitlines():
        match = CODE_OBJECT_LINE.match(line)
        if not match:
            continue
        path = Path(match["path"])
        place = next((name for name, root in places.items() if path.is_relative_to(root)), None)
        if place is None and path.is_relative_to(stdlib):
            place = "stdlib"
        if place is None:
            raise SystemExit(f"{path} was imported from outside the function package, the layer and the stdlib")
        counts[place]["bytecode" if path.suffix == ".pyc" else "source"] += 1
    return counts


def module_level_imports(setup: Setup, handler: str) -> list[dict[str, Any]]:
    """What the handlers package's modules import directly (not handlers.*, not the stdlib), by cumulative time.

    A module is listed under the handler module whose import first loaded it (lazy attributes such as pydantic's
    show up as the submodules they load)."""
    argv = setup.argv("-X", "importtime", "-c", f"import {handler}")
    result = subprocess.run(argv, env=setup.env, cwd=ROOT, check=True, capture_output=True)
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
    print(f"{'mode':<21} {'import':<18} {'median s':>9} {'min s':>7}" + "".join(f" {c:>12}" for c in columns))
    for mode, summary in modes.items():
        for case, figures in summary["seconds"].items():
            ratios = [summary[key].get(case) for key in columns.values()]
            print(
                f"{mode:<21} {case:<18} {figures['median']:>9.3f} {figures['min']:>7.3f}"
                + "".join(f" {'' if r is None else f'{r:.2f}':>12}" for r in ratios)
            )


def python_version(python: str) -> str:
    found = subprocess.run([python, "-c", "import platform; print(platform.python_version())"], capture_output=True)
    return found.stdout.decode().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repetitions", type=int, default=11)
    parser.add_argument(
        "--build-dir",
        type=Path,
        default=os.environ.get("ROTATOR_BUILD_DIR") or None,
        help="an existing `sam build` output (e.g. .aws-sam/build; env ROTATOR_BUILD_DIR); default: build afresh",
    )
    parser.add_argument("--python313", help="the python3.13 to import with (default: python3.13 on PATH, via pyenv)")
    parser.add_argument("--dev-python", default=sys.executable, help="the dev venv's interpreter (mode dev_venv)")
    args = parser.parse_args()

    python313 = find_python313(args.python313)
    machine = platform.machine()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="rotator-cold-start-") as tmp_name:
        tmp = Path(tmp_name)
        build_seconds = None
        if args.build_dir is None:
            build_seconds = round(sam_build(tmp), 1)
            build_dir = tmp / "build"
        else:
            build_dir = args.build_dir.resolve()
        if not (build_dir / "template.yaml").is_file():
            raise SystemExit(f"{build_dir} holds no `sam build` output (template.yaml)")
        built_layers = sorted(build_dir.glob("DependenciesLayer*/python"))
        if len(built_layers) != 1:
            raise SystemExit(f"{build_dir}: expected one DependenciesLayer*/python, found {built_layers}")
        lambda_layer, function_dir = built_layers[0], build_dir / FUNCTION

        if machine in ("aarch64", "arm64"):
            layer_dir, variant = lambda_layer, None
            layer_note = "the arm64 layer of the sam build itself (this machine runs aarch64)"
        elif machine in ("x86_64", "AMD64"):
            layer_seconds = build_layer(tmp / "layer-x86_64", "x86_64", python313)
            layer_dir = tmp / "layer-x86_64" / "python"
            variant = {
                "platform": "x86_64",
                "build_seconds": round(layer_seconds, 1),
                "compared_with_the_arm64_layer": compare_python_files(lambda_layer, layer_dir),
            }
            if not variant["compared_with_the_arm64_layer"]["identical"]:
                raise SystemExit(f"the x86_64 layer's Python files differ from the arm64 layer's: {variant}")
            layer_note = (
                "an x86_64 build of the identical lock (layers/dependencies/Makefile PLATFORM=x86_64, the same "
                "compileall step): this machine cannot load the aarch64 wheels' extension modules (pydantic_core, "
                "psycopg_binary); every .py and .pyc is byte-identical to the arm64 layer's"
            )
        else:
            raise SystemExit(f"no layer variant for machine {machine!r}")
        print(f"benchmarked layer: {layer_note}", flush=True)

        layer_no_pyc = copy_without_bytecode(layer_dir, tmp / "layer-no-pyc" / "python")
        functions_pyc = copy_compiled(python313, function_dir, tmp / "function-pyc", "/var/task")
        setups = {
            "lambda": lambda_setup(python313, function_dir, layer_dir),
            "lambda_no_layer_pyc": lambda_setup(python313, function_dir, layer_no_pyc),
            "lambda_functions_pyc": lambda_setup(python313, functions_pyc, layer_dir),
            "dev_venv": Setup(args.dev_python, (), clean_env(PYTHONPATH=str(ROOT / "functions"))),
        }
        origins = {
            mode: code_origins(setups[mode], {"function": function, "layer": layer})
            for mode, function, layer in (
                ("lambda", function_dir, layer_dir),
                ("lambda_no_layer_pyc", function_dir, layer_no_pyc),
                ("lambda_functions_pyc", functions_pyc, layer_dir),
            )
        }
        functions_compile = compile_time(python313, function_dir)
        samples = measure(setups, args.repetitions)
        imports = {handler: module_level_imports(setups["lambda"], handler)[:12] for handler in HANDLERS}
    modes = {mode: summarize(mode_samples) for mode, mode_samples in samples.items()}
    gains = {
        "layer_bytecode": gain(modes, "lambda_no_layer_pyc", "lambda"),
        "functions_bytecode": gain(modes, "lambda", "lambda_functions_pyc"),
    }

    print()
    print_table(modes)
    print(f"\nmodes lambda*: python3.13 {python_version(python313)}, the sam build's {FUNCTION} package + {layer_note}")
    print(f"goal: each handler <= {GOAL} x import boto3 (mode lambda)")
    for name, per_case in gains.items():
        listed = ", ".join(
            f"{case} {g['saved_ms']:.0f} ms ({g['times_slower_without']}x)" for case, g in per_case.items()
        )
        print(f"{name.replace('_', ' ')} saves: {listed}")
    print(
        f"compiling the function package's {functions_compile['py_files']} .py files ({functions_compile['kb']} KB) "
        f"takes {functions_compile['compile_all_ms']} ms (best of 20): the most its bytecode could save"
    )
    for mode, counts in origins.items():
        print(f"{mode}: modules loaded from bytecode/source: {counts}")
    for handler, top in imports.items():
        listed = ", ".join(f"{i['module']} {i['cumulative_ms']} ms" for i in top[:8])
        print(f"{handler} imports at module level: {listed}")

    document = {
        "benchmark": "cold-start imports: fresh interpreter per run, median, ratio to `import boto3` in the same mode",
        "goal": f"each handler module <= {GOAL} x import boto3 (mode lambda)",
        "what": (
            f"modes lambda*: the sam build's {FUNCTION} package (/var/task) then the dependencies layer's python/ "
            "(/opt/python) on sys.path, python3.13 -S -P, PYTHONDONTWRITEBYTECODE=1; dev_venv: the dev venv's Python "
            "with functions/ on sys.path, bytecode cached"
        ),
        "layer": layer_note,
        "layer_variant": variant,
        "modes_explained": {
            "lambda": "as deployed: the layer's precompiled bytecode, the functions' code compiled at import",
            "lambda_no_layer_pyc": "the layer's bytecode hidden (SAM's python builder's layer, before the Makefile)",
            "lambda_functions_pyc": "as deployed plus the functions' code precompiled (compileall unchecked-hash)",
            "dev_venv": "the dev venv, bytecode cached",
        },
        "machine": {
            "python313": python_version(python313),
            "dev_python": python_version(args.dev_python),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sam_build": "reused: --build-dir" if build_seconds is None else f"fresh, uncached: {build_seconds} s",
        "repetitions": args.repetitions,
        "modes": modes,
        "bytecode_gains": gains,
        "bytecode_gains_note": (
            "saved_ms = median without - median with; functions_bytecode's boto3 row cannot differ but by chance "
            "(boto3 imports none of the functions' code): it shows the run's noise"
        ),
        "function_package_compile": functions_compile,
        "modules_loaded_from_bytecode_or_source": origins,
        "module_level_imports_of_handlers_ms": imports,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = RESULTS.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(document, indent=2) + "\n")
    tmp_path.replace(RESULTS)
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
