#!/bin/sh
# Installs the Debian packages named as arguments when they are missing
# (make test: mosquitto and postgresql, the real broker and database server the
# tests start on loopback).
set -eu
missing=""
for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-packages: apt-get not found; install these packages with your system's tools:$missing" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "system-packages: need root or sudo to install:$missing" >&2; exit 1; }
    sudo="sudo"
fi
echo "installing Debian packages:$missing"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
