#!/bin/sh
# The ctest steps of the dashboard's browser test (tests/dashboard/CMakeLists.txt):
#   run.sh install <dir>                  npm ci in <dir> (a build-tree copy of this folder),
#                                         unless that exact package-lock.json is installed
#   run.sh test <dir> <server> <out dir>  node <dir>/dashboard_test.mjs
# Exits 77 (ctest: skipped) when node, npm or chromium is missing.
set -eu

skip() {
  echo "SKIP: $1 not found (bash .ci/install-deps installs it)"
  exit 77
}
command -v node >/dev/null 2>&1 || skip "node"
step=$1
dir=$2
cd "$dir"

case "$step" in
  install)
    command -v npm >/dev/null 2>&1 || skip "npm"
    if cmp -s package-lock.json node_modules/.installed-package-lock.json; then
      echo "node_modules is up to date with package-lock.json"
      exit 0
    fi
    npm ci --no-audit --no-fund --loglevel=error
    cp package-lock.json node_modules/.installed-package-lock.json
    ;;
  test)
    [ -x /usr/bin/chromium ] || skip "/usr/bin/chromium"
    [ -d node_modules/playwright-core ] || {
      echo "FAIL: $dir/node_modules/playwright-core is missing (the dashboard_npm_ci test installs it)"
      exit 1
    }
    exec node dashboard_test.mjs --server "$3" --out "$4"
    ;;
  *)
    echo "usage: run.sh install <dir> | run.sh test <dir> <server> <out dir>" >&2
    exit 2
    ;;
esac
