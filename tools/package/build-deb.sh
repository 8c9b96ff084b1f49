#!/bin/sh
# Builds govchain-edge_<version>_all.deb for a gateway Pi or a hub host (Debian 12, Raspberry Pi OS):
#   sh tools/package/build-deb.sh [OUT_DIR]          (default OUT_DIR: dist)
# The package carries the wheel (python -m pip wheel, from this checkout) and nothing else of Python:
# its postinst makes /opt/govedge/.venv and installs the wheel with the gateway's extra into it
# (pip fetches the dependencies from the package index), and /usr/bin/govedge points into it.
# Installing it: sudo apt install ./govchain-edge_<version>_all.deb (apt brings mosquitto and
# python3-venv); removing it removes /opt/govedge/.venv; /etc/govedge and /var/lib/govedge stay.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
out=$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)
python=${PYTHON:-python3}
command -v dpkg-deb >/dev/null 2>&1 || { echo "build-deb: dpkg-deb not found (Debian package dpkg)" >&2; exit 1; }
version=$("$python" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$here/pyproject.toml")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# the wheel from a copy: setuptools writes build/ and *.egg-info into the folder it builds
mkdir "$work/src"
(cd "$here" && tar --exclude=.git --exclude=.venv --exclude=node_modules --exclude=__pycache__ --exclude='*.egg-info' \
    --exclude=build --exclude=dist --exclude=tests --exclude=demo-run --exclude='*.mpy' -cf - .) | tar -C "$work/src" -xf -
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/wheel" "$work/src"
wheel=$(cd "$work/wheel" && ls govchain_edge-*.whl)
pkg="$work/pkg"
mkdir -p "$pkg/DEBIAN" "$pkg/usr/share/govchain-edge" "$pkg/usr/bin"
cp "$work/wheel/$wheel" "$pkg/usr/share/govchain-edge/"
ln -s /opt/govedge/.venv/bin/govedge "$pkg/usr/bin/govedge"
cat > "$pkg/DEBIAN/control" <<CONTROL
Package: govchain-edge
Version: $version
Architecture: all
Maintainer: govchain-edge <govchain-edge@localhost>
Depends: python3 (>= 3.11), python3-venv, mosquitto
Section: net
Priority: optional
Description: signed sensor readings from street boards to the IoT-Hub
 The gateway (govedge gateway install) and the hub (govedge hub install) of
 govchain-edge: verify, store, batch and forward signed readings, anchored on
 a government blockchain. Installs into /opt/govedge/.venv.
CONTROL
cat > "$pkg/DEBIAN/postinst" <<POSTINST
#!/bin/sh
# the virtual environment of the gateway service (gateway/govedge-gateway.service runs
# /opt/govedge/.venv/bin/govedge): the wheel with the [gateway] extra, its dependencies from the index
set -e
if [ "\$1" = configure ]; then
    [ -x /opt/govedge/.venv/bin/python ] || python3 -m venv /opt/govedge/.venv
    /opt/govedge/.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade \\
        "/usr/share/govchain-edge/$wheel[gateway]"
fi
POSTINST
cat > "$pkg/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
# the virtual environment goes with the package; configuration (/etc/govedge) and data (/var/lib/govedge) stay
set -e
if [ "$1" = remove ] || [ "$1" = purge ]; then
    rm -rf /opt/govedge/.venv
    rmdir /opt/govedge 2>/dev/null || true
fi
POSTRM
chmod 0755 "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/postrm"
dpkg-deb --build --root-owner-group "$pkg" "$out/govchain-edge_${version}_all.deb" >/dev/null
echo "$out/govchain-edge_${version}_all.deb"
