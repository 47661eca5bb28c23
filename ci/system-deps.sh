#!/usr/bin/env bash
# Debian packages the test suite needs that pip cannot provide; called by `make test` and `.ci/run`.
#   chromium               headless browser for the report's rendering test (tests/test_report_browser.py)
#   dataset-fashion-mnist  the real Fashion-MNIST IDX files, read offline by the `fashion_mnist` source tests
#   postgresql             the team tracking server's database (scripts/tracking-server.sh, tests/test_team.py)
#   gcc                    builds the recurrent scan's C kernels (src/pixelzoo/nn/native.py, tests/test_scan.py)
# Installs what is missing with apt-get (as root, or through sudo); when that is impossible it says what to
# install by hand and exits 1, before any test runs.
#   bash ci/system-deps.sh [PACKAGE...]   only these of the packages above (`make quick`: dataset-fashion-mnist)
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
dpkg-query -W -f='${Status}' dataset-fashion-mnist 2>/dev/null | grep -q "install ok installed" \
    || need+=(dataset-fashion-mnist)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v "${CC:-cc}" >/dev/null 2>&1 || need+=(gcc)
if [ $# -gt 0 ]; then  # only the packages asked for
    wanted=" $* "; keep=()
    for p in "${need[@]}"; do [[ "$wanted" == *" $p "* ]] && keep+=("$p"); done
    need=("${keep[@]}")
fi
[ ${#need[@]} -eq 0 ] && exit 0

echo "[system-deps] installing Debian packages: ${need[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
fi
if [ "$SUDO" = "none" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "[system-deps] cannot install ${need[*]}: this needs apt-get (Debian/Ubuntu) as root or passwordless sudo." >&2
    echo "[system-deps] install them by hand, e.g.  sudo apt-get install ${need[*]}  then rerun make test." >&2
    exit 1
fi
if ! { $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"; }; then
    echo "[system-deps] apt-get could not install ${need[*]} (offline, or no such package in this release?)." >&2
    echo "[system-deps] install them by hand, then rerun make test." >&2
    exit 1
fi
