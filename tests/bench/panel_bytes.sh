#!/usr/bin/env bash
# What the panel sends per page, raw and gzip -9: each page's HTML as a reseller of the
# demo installation sees it, and the stylesheet and script every page links (fetched
# once, then cached for a year under their hashed URLs).
#   bash tests/bench/panel_bytes.sh [path/to/outpost-controller]
set -euo pipefail
bin=${1:-target/debug/outpost-controller}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
"$bin" serve --demo --listen 127.0.0.1:0 --data-dir "$dir/data" >"$dir/out" 2>/dev/null &
pid=$!
for _ in $(seq 100); do grep -q '^listening on' "$dir/out" && break; sleep 0.1; done
base=$(grep -o 'http://[0-9.:]*' "$dir/out")
password=$(awk '/owner@northwind.example/ { print $NF }' "$dir/out")
cd "$dir"
curl -sf -c jar0 "$base/panel/login" -o login.html
csrf=$(grep -o 'name="csrf" value="[^"]*"' login.html | head -1 | sed 's/.*value="//; s/"$//')
curl -sf -b jar0 -c jar -o /dev/null --data-urlencode "csrf=$csrf" \
    --data-urlencode "email=owner@northwind.example" --data-urlencode "password=$password" "$base/panel/login"
get() { curl -sf -b jar "$@"; }
get "$base/panel" -o dashboard.html
get "$base/panel/subscribers" -o subscribers.html
get "$base$(grep -o '/panel/subscribers/[0-9]*' subscribers.html | head -1)" -o subscriber.html
get "$base/panel/users" -o users.html
get "$base/panel/resellers" -o resellers.html
get "$base/panel/audit" -o audit.html
get -H 'X-Panel-Fragment: 1' "$base/panel/subscribers?q=a" -o fragment.html
get "$base$(grep -o '/panel/assets/[^"]*panel.css' dashboard.html)" -o panel.css
get "$base$(grep -o '/panel/assets/[^"]*panel.js' dashboard.html)" -o panel.js
for f in login.html dashboard.html subscribers.html subscriber.html users.html resellers.html \
    audit.html fragment.html panel.css panel.js; do
    printf '%-17s raw %6d  gzip -9 %6d\n' "$f" "$(wc -c <"$f")" "$(gzip -9c <"$f" | wc -c)"
done
