#!/usr/bin/env bash
# Offline checks of the SAM application (`make sam-check`):
#   1. sam validate --lint          (SAM transform + cfn-lint; no AWS credentials needed), then
#      scripts/check-template.sh    (cfn-lint, least privilege against the code, checkov on the template and transform)
#   2. sam build                    (python3.13 / arm64, uncached, into a throw-away build dir; no Docker), then
#                                   checks of the artefacts: boto3 only in the layer, the layer's bytecode
#   3. asl-validator on the ASL     (if npx exists; catches bad Next/Default targets that sam validate misses)
# `scripts/sam-check.sh build` (`make build`) runs step 2 only, into .aws-sam/ where `sam deploy` looks for it.
# Run from anywhere; it works on the repository root. Exits non-zero on the first failure.
# Env: SAM (default .venv-sam/bin/sam), KEEP_BUILD_DIR=1 keeps the temporary build dir, SKIP_ASL=1 skips step 3,
#      SAM_BUILD_CACHED=0 makes the `build` mode rebuild the layer even when its lock did not change,
#      SAM_BUILD_DIR/SAM_CACHE_DIR make the `build` mode build elsewhere than .aws-sam/ (bench_cold_start.py does).
set -euo pipefail

MODE=${1:-check}
case "$MODE" in check | build) ;; *) echo "usage: $0 [check|build]" >&2; exit 2 ;; esac
ASL_VALIDATOR=asl-validator@4.0.0  # pinned: `npm view asl-validator version`; bump deliberately

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TEMPLATE=template.yaml
ASL=statemachines/rotation.asl.json
SAM=${SAM:-.venv-sam/bin/sam}

die() { echo "sam-check: ERROR: $*" >&2; exit 1; }
step() { echo; echo "==> $*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[ -x "$SAM" ] || die "$SAM not found. Create the SAM venv first (make sets up .venv-sam with 'pip install aws-sam-cli==1.170.0')."
[ -f "$TEMPLATE" ] || die "$ROOT/$TEMPLATE not found"
[ -f "$ASL" ] || die "$ROOT/$ASL not found"

# Offline: no telemetry, no instance-metadata probing; validate --lint only needs a region.
export SAM_CLI_TELEMETRY=0
export AWS_EC2_METADATA_DISABLED=true
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-${AWS_REGION:-us-east-1}}

if [ "$MODE" = build ]; then
    BUILD_DIR=${SAM_BUILD_DIR:-$ROOT/.aws-sam/build}
    CACHE_DIR=${SAM_CACHE_DIR:-$ROOT/.aws-sam/cache}
    CACHED=$([ "${SAM_BUILD_CACHED:-1}" = 1 ] && echo --cached || echo --no-cached)
else
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/rotator-sam-check.XXXXXX")
    cleanup() {
        if [ "${KEEP_BUILD_DIR:-0}" = 1 ]; then echo "sam-check: kept $TMP"; else rm -rf "$TMP"; fi
    }
    trap cleanup EXIT
    BUILD_DIR=$TMP/build
    CACHE_DIR=$TMP/cache
    CACHED=--no-cached
fi

# --- 1. validate -------------------------------------------------------------------------------------------------
if [ "$MODE" = check ]; then
    step "sam validate --lint"
    t0=$(now)
    "$SAM" validate --lint --template-file "$TEMPLATE" || die "sam validate --lint failed"
    echo "validate: $(elapsed "$t0") s"
    t0=$(now)
    bash scripts/check-template.sh || die "template checks failed"
    echo "template checks: $(elapsed "$t0") s"
fi

# --- 2. build ----------------------------------------------------------------------------------------------------
step "sam build (python3.13, arm64) into $BUILD_DIR"
# sam build (no container) needs a python3.13 interpreter on PATH. On machines with pyenv, its shims only resolve
# python3.13 when that version is selected: select 3.11/3.12/3.13 together unless the caller chose already.
if command -v pyenv >/dev/null 2>&1; then
    export PYENV_VERSION=${PYENV_VERSION:-3.11.7:3.12.1:3.13.0}
    PYENV_SHIMS="$(pyenv root)/shims"
    case ":$PATH:" in *":$PYENV_SHIMS:"*) ;; *) export PATH="$PYENV_SHIMS:$PATH" ;; esac
fi
if ! py313_version=$(python3.13 -c 'import sys; assert sys.version_info[:2] == (3, 13); print(sys.version.split()[0])' 2>/dev/null); then
    die "python3.13 is not available on PATH (PYENV_VERSION=${PYENV_VERSION:-unset}). sam build needs it for the python3.13 runtime: install Python 3.13 (e.g. 'pyenv install 3.13.0' and keep it in PYENV_VERSION) or build in a container with 'sam build --use-container'."
fi
echo "using python3.13 $py313_version ($(command -v python3.13))"

t0=$(now)
"$SAM" build \
    --template-file "$TEMPLATE" \
    --build-dir "$BUILD_DIR" \
    --cache-dir "$CACHE_DIR" \
    --parallel \
    "$CACHED" \
    || die "sam build failed"
build_s=$(elapsed "$t0")
[ -f "$BUILD_DIR/template.yaml" ] || die "sam build produced no $BUILD_DIR/template.yaml"
echo "build: ${build_s} s ($(du -sh "$BUILD_DIR" | cut -f1) in $BUILD_DIR)"
# Each function's package is the project's code only; the dependencies layer is the one large artefact.
du -sh "$BUILD_DIR"/*/ | sed -e "s|$BUILD_DIR/||" -e 's|/$||' -e 's/^/  /'
ls -d "$BUILD_DIR"/DependenciesLayer*/python/boto3 >/dev/null 2>&1 || die "the dependencies layer has no python/boto3"
for fn in "$BUILD_DIR"/*Function; do
    [ ! -e "$fn/boto3" ] || die "$(basename "$fn") bundles boto3: functions/ must not hold a requirements.txt"
done
# The layer ships bytecode (layers/dependencies/Makefile): every module has its 3.13 .pyc, unchecked-hash so Lambda's
# read-only /opt never has it recompiled, and there is no bytecode for another Python.
python3.13 - "$BUILD_DIR"/DependenciesLayer*/python <<'EOF' || die "the dependencies layer's bytecode is incomplete"
import importlib.util
import sys
from pathlib import Path

root = Path(sys.argv[1])
sources = sorted(root.rglob("*.py"))
problems = []
for source in sources:
    pyc = Path(importlib.util.cache_from_source(str(source)))
    header = pyc.read_bytes()[:8] if pyc.is_file() else b""
    if header[:4] != importlib.util.MAGIC_NUMBER:
        problems.append(f"no {sys.implementation.cache_tag} .pyc: {source.relative_to(root)}")
    elif int.from_bytes(header[4:8], "little") != 0b01:  # hash-based, check_source off
        problems.append(f"not unchecked-hash: {pyc.relative_to(root)}")
tag = f".{sys.implementation.cache_tag}.pyc"
problems += [f"foreign bytecode: {p.relative_to(root)}" for p in root.rglob("*.pyc") if not p.name.endswith(tag)]
if not sources or problems:
    more = f"\n... {len(problems)} in all" if len(problems) > 20 else ""
    sys.exit("\n".join(problems[:20] or ["no .py files"]) + more)
print(f"layer bytecode: {len(sources)} modules, each with an unchecked-hash {tag[1:]}")
EOF

if [ "$MODE" = build ]; then
    echo
    echo "sam-check: built into $BUILD_DIR; deploy with '$SAM deploy' (--guided the first time)"
    exit 0
fi

# --- 3. ASL structure ----------------------------------------------------------------------------------------------
step "asl-validator $ASL"
if [ "${SKIP_ASL:-0}" = 1 ]; then
    echo "skipped (SKIP_ASL=1)"
elif ! command -v npx >/dev/null 2>&1; then
    echo "npx not found: skipping asl-validator (install Node.js to check Next/Default targets)"
else
    t0=$(now)
    if npx --yes "$ASL_VALIDATOR" --json-path "$ASL"; then
        :
    elif grep -q '\${' "$ASL"; then
        # The definition carries ${...} DefinitionSubstitutions; check a copy with dummy values in their place, so
        # only genuine structural errors fail.
        echo "retrying on a copy with DefinitionSubstitutions replaced by dummy ARNs"
        sed -E \
            -e 's/\$\{SnsPublish\}/arn:aws:states:::sns:publish/g' \
            -e 's/\$\{([A-Za-z0-9_]*FunctionArn)\}/arn:aws:lambda:us-east-1:123456789012:function:\1/g' \
            -e 's/\$\{([A-Za-z0-9_]*TopicArn)\}/arn:aws:sns:us-east-1:123456789012:\1/g' \
            -e 's/\$\{([A-Za-z0-9_]*StateMachineArn)\}/arn:aws:states:us-east-1:123456789012:stateMachine:\1/g' \
            -e 's/\$\{([A-Za-z0-9_]*Arn)\}/arn:aws:iam::123456789012:role\/\1/g' \
            -e 's/\$\{([A-Za-z0-9_]+)\}/\1/g' \
            "$ASL" >"$TMP/rotation.asl.json"
        npx --yes "$ASL_VALIDATOR" --json-path "$TMP/rotation.asl.json" || die "asl-validator: $ASL is invalid"
    else
        die "asl-validator: $ASL is invalid"
    fi
    echo "asl-validator: $(elapsed "$t0") s"
fi

echo
echo "sam-check: OK"
