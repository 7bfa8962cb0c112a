#!/usr/bin/env bash
# Screenshot a prorl report (self-contained HTML) in headless Chromium:
#   bash scripts/screenshot.sh results/cpu-boundary/report/report.html docs/report-screenshot.png
# Optional third argument: the window size (default 1280,1500: the top of the page).
# Needs Debian's chromium (`apt-get install chromium`); the report loads nothing from the
# network, and the flags below keep Chromium itself from trying (closed networks refuse it).
set -euo pipefail
html=${1:?usage: screenshot.sh REPORT.html OUT.png [WIDTH,HEIGHT]}
png=${2:?usage: screenshot.sh REPORT.html OUT.png [WIDTH,HEIGHT]}
size=${3:-1280,1500}
browser=$(command -v chromium || command -v chromium-browser || true)
if [[ -z "$browser" ]]; then
    echo "screenshot.sh: no chromium on PATH; install it (Debian: apt-get install chromium)" >&2
    exit 2
fi
if [[ ! -f "$html" ]]; then
    echo "screenshot.sh: $html is not a file; write the report first (prorl report DIR)" >&2
    exit 2
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
tmp="$png.tmp.png"
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$profile" --window-size="$size" \
    --screenshot="$(realpath -m "$tmp")" "file://$(realpath "$html")" 2>/dev/null
mv "$tmp" "$png"   # the old screenshot stays until the new one exists
echo "wrote $png ($size)"
