#!/usr/bin/env bash
# The Python SDK's toolchain, pinned, in a virtual environment of its own
# (a fresh machine needs only python3 >= 3.11 and network access to PyPI once).
#
#   scripts/python-sdk.sh setup          create/refresh the venv: componentize-py, pytest
#   scripts/python-sdk.sh test           pytest: the SDK and the examples, natively
#   scripts/python-sdk.sh build DIR OUT  build the plugin in DIR (its app.py) into component OUT
#   scripts/python-sdk.sh env            print `export ...` lines for the venv's tools
#
# The venv is $ATOLL_PYTHON_VENV, else $XDG_CACHE_HOME/atoll/python-sdk/venv,
# else ~/.cache/atoll/python-sdk/venv: where `atoll plugin test` looks for
# componentize-py too. The bindings are generated from wit/ by componentize-py
# at every build, never written by hand or committed.
set -euo pipefail
cd "$(dirname "$0")/.."

COMPONENTIZE_PY=0.25.1
PYTEST=9.2.0
VENV="${ATOLL_PYTHON_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/atoll/python-sdk/venv}"
SDK="$PWD/guest-sdk/python"

setup() {
    local python="${PYTHON:-python3}"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "the Python SDK needs python3 >= 3.11 (set PYTHON=...)" >&2; exit 1; }
    [ -x "$VENV/bin/python" ] || "$python" -m venv "$VENV"
    if ! "$VENV/bin/componentize-py" --version 2>/dev/null | grep -qx "componentize-py $COMPONENTIZE_PY" \
        || ! "$VENV/bin/python" -m pytest --version 2>/dev/null | grep -q "pytest $PYTEST"; then
        "$VENV/bin/pip" install --quiet --disable-pip-version-check \
            "componentize-py==$COMPONENTIZE_PY" "pytest==$PYTEST"
    fi
    # The SDK from this checkout, importable by the venv's python (pytest).
    local site
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$SDK" > "$site/atoll_sdk.pth"
}

case "${1:-}" in
setup) setup ;;
test)
    setup
    "$VENV/bin/python" -m pytest -q guest-sdk/python/tests
    (cd guest-sdk/python/examples/cache && "$VENV/bin/python" -m pytest -q tests)
    ;;
build)
    [ $# -eq 3 ] || { echo "usage: $0 build DIR OUT.wasm" >&2; exit 2; }
    setup
    mkdir -p "$(dirname "$3")"
    "$VENV/bin/componentize-py" -d wit -w plugin componentize app -p "$2" -p "$SDK" -o "$3"
    ;;
env)
    setup >&2
    echo "export ATOLL_COMPONENTIZE_PY=$VENV/bin/componentize-py"
    echo "export ATOLL_PYTHON_SDK=$SDK"
    ;;
*)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
