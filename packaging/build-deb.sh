#!/usr/bin/env bash
# Builds govmilter_<version>_<arch>.deb for Debian 12 (bookworm) with dpkg-deb on a staged tree
# (no debhelper): a self-contained virtualenv in /opt/govmilter, built with Debian's own
# /usr/bin/python3 from packaging/requirements.lock (pinned, sha256-hashed), so the gateway needs
# neither a compiler nor the package index; the configuration and the rule files as conffiles in
# /etc/govmilter; the unit in /lib/systemd/system. `make deb` runs it.
#
# Environment (all optional):
#   DEB_REVISION=1          Debian revision: <upstream version>-<revision>
#   DEB_VERSION_SUFFIX=     appended to the version, e.g. "+site2" for a local rebuild (sorts later)
#   DEB_OUT_DIR=build       where the .deb is written
#   DEB_RULES_DIR=rules     the rule files shipped as /etc/govmilter/rules/*.toml
#   GOVMILTER_WHEEL_CACHE=.venv/deb-wheels   downloaded distributions (a second build is offline)
#   DEB_PYTHON=/usr/bin/python3
# Prints the path of the package on its last line.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PYTHON=${DEB_PYTHON:-/usr/bin/python3}
REVISION=${DEB_REVISION:-1}
SUFFIX=${DEB_VERSION_SUFFIX:-}
OUT_DIR=$(mkdir -p "${DEB_OUT_DIR:-build}" && cd "${DEB_OUT_DIR:-build}" && pwd)
RULES_DIR=${DEB_RULES_DIR:-rules}
CACHE=${GOVMILTER_WHEEL_CACHE:-$ROOT/.venv/deb-wheels}
LOCK=packaging/requirements.lock
BUILD_LOCK=packaging/build-requirements.lock
PREFIX=/opt/govmilter

die() { echo "build-deb: $*" >&2; exit 1; }

# --- preconditions: Debian's Python 3.11 with venv, the headers, libmilter, a compiler ---------
[[ -x $PYTHON ]] || die "$PYTHON is missing (apt-get install python3)"
PYVER=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
[[ $PYVER == 3.11 ]] || die "$PYTHON is Python $PYVER; the package targets bookworm's 3.11"
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || die "python3-venv is missing (bash lab/install-deps.sh)"
[[ -f /usr/include/python$PYVER/Python.h ]] || die "python3-dev is missing (bash lab/install-deps.sh)"
[[ -f /usr/include/libmilter/mfapi.h ]] || die "libmilter-dev is missing (bash lab/install-deps.sh)"
command -v gcc >/dev/null || die "gcc is missing (apt-get install gcc)"

ARCH=$(dpkg --print-architecture)
WORK="$ROOT/build/deb/stage-$$"
STAGE="$WORK/root"
VENV="$STAGE$PREFIX"
trap 'rm -rf "$WORK"' EXIT
rm -rf "$WORK"
mkdir -p "$STAGE/DEBIAN" "$WORK/src" "$WORK/dist" "$CACHE"

# --- the wheel cache: offline when it already holds every locked file -----------------------
fetch() {  # fetch LOCK: the locked distributions into $CACHE, from the cache itself when complete
  local lock=$1
  if ! PIP_CONFIG_FILE=/dev/null "$VENV/bin/pip" download -q --disable-pip-version-check --require-hashes \
       --no-deps --no-index --find-links "$CACHE" -d "$CACHE" -r "$lock" >/dev/null 2>&1; then
    "$VENV/bin/pip" download -q --disable-pip-version-check --require-hashes --no-deps \
      -d "$CACHE" -r "$lock" 2> >(grep -v "is ignored: it is neither" >&2)
  fi
}
offline_install() {  # offline_install ARGS...: pip install from the cache only
  PIP_CONFIG_FILE=/dev/null "$VENV/bin/pip" install -q --disable-pip-version-check --no-compile \
    --no-index --find-links "$CACHE" "$@"
}

# --- the virtualenv, built in the stage, then moved to its real path by rewriting it ----------
"$PYTHON" -m venv "$VENV"
fetch "$BUILD_LOCK"
fetch "$LOCK"
offline_install --require-hashes -r "$BUILD_LOCK"
offline_install --require-hashes --no-build-isolation -r "$LOCK"

# govmilter's own wheel, from a clean copy of the source (never writes build/ or *.egg-info into
# the work tree, and a module removed from milter/ cannot linger in a stale build directory)
cp pyproject.toml README.md "$WORK/src/"
"$PYTHON" -c 'import shutil, sys; shutil.copytree("milter", sys.argv[1], ignore=shutil.ignore_patterns(
    "__pycache__", "*.pyc", "*.egg-info"))' "$WORK/src/milter"
PIP_CONFIG_FILE=/dev/null "$VENV/bin/pip" wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
  --no-index -w "$WORK/dist" "$WORK/src"
offline_install --no-deps "$WORK"/dist/govmilter-*.whl
# the lock must satisfy what govmilter's metadata requires (pyproject.toml's dependencies)
PIP_CONFIG_FILE=/dev/null "$VENV/bin/pip" check --disable-pip-version-check >/dev/null \
  || die "packaging/requirements.lock does not satisfy pyproject.toml: $("$VENV/bin/pip" check)"
"$VENV/bin/python" -c 'import govmilter, Milter, magic, dns.resolver, prometheus_client, redis' \
  || die "the virtualenv does not import govmilter and its dependencies"
VERSION=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("govmilter"))')
DEB_VERSION="$VERSION-$REVISION$SUFFIX"
NAME="govmilter_${DEB_VERSION}_${ARCH}"
echo "build-deb: $NAME" >&2

# the wheel's build directory is not where govmilter came from on the gateway
rm -f "$VENV"/lib/python*/site-packages/govmilter-*.dist-info/direct_url.json
sed -i '/direct_url.json/d' "$VENV"/lib/python*/site-packages/govmilter-*.dist-info/RECORD
# the build tools are not needed at run time
"$VENV/bin/pip" uninstall -q -y --disable-pip-version-check wheel >/dev/null
find "$VENV" -name '__pycache__' -prune -exec rm -rf {} +
# every absolute path of the stage becomes /opt/govmilter (scripts' #! lines, activate, pyvenv.cfg)
grep -rlIF -- "$VENV" "$VENV" | while read -r file; do sed -i "s#$VENV#$PREFIX#g" "$file"; done
grep -rlIF -- "$STAGE" "$VENV" && die "a staging path is left in the virtualenv"
# byte-code compiled now, with the installed paths, so dpkg owns it and removes it
"$PYTHON" -m compileall -q -j0 -s "$STAGE" -p / "$VENV/lib" >/dev/null

# --- configuration, rules, unit, documentation ------------------------------------------------
install -d -m 0755 "$STAGE/etc/govmilter/rules" "$STAGE/lib/systemd/system" \
  "$STAGE/usr/share/doc/govmilter/examples" "$STAGE/usr/sbin"
"$PYTHON" packaging/installed_config.py config.example.toml >"$STAGE/etc/govmilter/govmilter.toml"
"$VENV/bin/python" -m govmilter config check --config "$STAGE/etc/govmilter/govmilter.toml" \
  --set "rules.dir=\"$ROOT/$RULES_DIR\"" >/dev/null || die "the installed configuration does not validate"
install -m 0644 "$RULES_DIR"/*.toml "$STAGE/etc/govmilter/rules/"
install -m 0644 systemd/govmilter.service "$STAGE/lib/systemd/system/govmilter.service"
install -m 0644 README.md config.example.toml "$STAGE/usr/share/doc/govmilter/"
install -m 0644 docs/install-package.md "$STAGE/usr/share/doc/govmilter/"
install -m 0644 packaging/examples/*.conf "$STAGE/usr/share/doc/govmilter/examples/"
install -m 0644 packaging/debian/copyright "$STAGE/usr/share/doc/govmilter/copyright"
ln -s "$PREFIX/bin/govmilter" "$STAGE/usr/sbin/govmilter"

# --- control files ---------------------------------------------------------------------------
(cd "$STAGE" && find etc -type f | sed 's#^#/#' | sort) >"$STAGE/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  install -m 0755 "packaging/debian/$script" "$STAGE/DEBIAN/$script"
done
SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
sed -e "s/@VERSION@/$DEB_VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$SIZE/" \
  packaging/debian/control.in >"$STAGE/DEBIAN/control"

DEB="$OUT_DIR/$NAME.deb"
dpkg-deb --root-owner-group -Zgzip --build "$STAGE" "$DEB" >/dev/null
echo "$DEB"
