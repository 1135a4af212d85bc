#!/bin/sh
# Chromium for the dashboard's browser tests (`make test` runs this): installed with apt-get where this
# runs as root, only when missing, never interactive, and never failing the build; without it the
# browser tests skip and say how to install it.
for browser in chromium chromium-browser google-chrome; do
  command -v "$browser" >/dev/null 2>&1 && exit 0
done
if [ -n "$LINEWATCH_CHROMIUM" ] && [ -x "$LINEWATCH_CHROMIUM" ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: no Chromium, and installing one needs root and apt-get; the browser tests will skip" \
       "(install it with: apt-get install -y chromium)"
  exit 0
fi
echo "installing Chromium for the browser tests: apt-get install -y chromium"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q chromium >/dev/null 2>&1; then
  # A fresh machine may have no package lists yet.
  apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1 \
    || echo "note: apt-get could not install chromium; the browser tests will skip"
fi
exit 0
