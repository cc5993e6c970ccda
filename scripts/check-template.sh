#!/usr/bin/env bash
# Static checks of template.yaml (`make sam-check` runs them first; `bash scripts/check-template.sh` alone):
#   1. cfn-lint                      errors and warnings fail
#   2. scripts/check_iam.py          the SAM transform; every role grants exactly what its code calls; only the
#                                    state machine invokes a function (see the script's docstring)
#   3. checkov on template.yaml      and on its SAM transform, which holds the roles SAM generates. Every waiver is
#                                    a `checkov: skip:` entry in its resource's Metadata, with the reason.
# Env: SAM_VENV (default .venv-sam: cfn-lint and aws-sam-translator), CHECKOV (default .venv-checkov/bin/checkov).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TEMPLATE=template.yaml
SAM_VENV=${SAM_VENV:-.venv-sam}
CHECKOV=${CHECKOV:-.venv-checkov/bin/checkov}

die() { echo "check-template: ERROR: $*" >&2; exit 1; }
step() { echo; echo "==> $*"; }

[ -x "$SAM_VENV/bin/cfn-lint" ] || die "$SAM_VENV/bin/cfn-lint not found (make creates $SAM_VENV with aws-sam-cli)"
[ -x "$CHECKOV" ] || die "$CHECKOV not found (make creates .venv-checkov with the pinned checkov)"
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-${AWS_REGION:-us-east-1}}
# Offline: no update check against the package index, no policy download from a platform.
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true
TMP=$(mktemp -d "${TMPDIR:-/tmp}/rotator-check-template.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

step "cfn-lint $TEMPLATE ($("$SAM_VENV/bin/cfn-lint" --version))"
"$SAM_VENV/bin/cfn-lint" -- "$TEMPLATE" || die "cfn-lint found problems"
echo "cfn-lint: clean"

step "least privilege against the code (scripts/check_iam.py)"
"$SAM_VENV/bin/python" scripts/check_iam.py "$TEMPLATE" "$TMP/transformed.json" || die "IAM grants differ from the code"

for input in "$TEMPLATE" "$TMP/transformed.json"; do
    step "checkov $("$CHECKOV" --version) on $([ "$input" = "$TEMPLATE" ] && echo "$TEMPLATE" || echo "its SAM transform")"
    "$CHECKOV" --framework cloudformation --file "$input" --compact --quiet --skip-download \
        || die "checkov found problems (fix them, or add a reasoned skip to the resource's Metadata)"
done
echo
echo "check-template: OK"
