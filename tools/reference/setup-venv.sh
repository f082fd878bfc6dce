#!/usr/bin/env bash
# Creates .venv-ref/ at the repository root with the pinned reference packages (from PyPI; CPU only).
#
#   PYTHON=python3.11 tools/reference/setup-venv.sh   # interpreter that creates the venv (default: python3)
#   REF_VENV=/work/refvenv tools/reference/setup-venv.sh
#                                                     # reuse an existing environment: checks its pins and
#                                                     # links .venv-ref to it instead of installing anything
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/.venv-ref"

check_pins() {
    "$1/bin/python" - "$here/requirements.txt" <<'PY'
import sys
from importlib import metadata
wrong = []
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, version = line.split("==")
    try:
        installed = metadata.version(name).split("+", 1)[0]
    except metadata.PackageNotFoundError:
        installed = "missing"
    if installed != version:
        wrong.append(f"{name} {installed} (pinned {version})")
if wrong:
    sys.exit("reference environment differs from requirements.txt: " + ", ".join(wrong))
PY
}

if [[ -n "${REF_VENV:-}" ]]; then
    check_pins "$REF_VENV"
    if [[ -e "$venv" && ! -L "$venv" ]]; then
        echo "$venv exists and is not a link; remove it to use REF_VENV=$REF_VENV" >&2
        exit 1
    fi
    ln -sfn "$REF_VENV" "$venv"
    echo "linked $venv -> $REF_VENV"
    exit 0
fi

"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install --disable-pip-version-check -r "$here/requirements.txt"
check_pins "$venv"
echo "reference environment ready: $venv/bin/python"
