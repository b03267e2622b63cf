#!/usr/bin/env bash
# Fetch the API reference assets the gateway serves at /docs (Scalar) and /docs/swagger
# (Swagger UI) from the npm registry, check them against the pinned integrity, and copy the
# files into the gateway package. The gateway never loads them from a CDN: /docs works
# offline and under a strict Content-Security-Policy. Each tarball is checked against the
# integrity the registry publishes for it, recorded in VERSIONS. To upgrade, change a
# version here, run the script and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=services/gateway/src/agentmesh/gateway/static/docs
REGISTRY=${NPM_REGISTRY:-https://registry.npmjs.org}
# name version source:target...
PACKAGES=(
  "@scalar/api-reference 1.76.0 dist/browser/standalone.js:scalar.js"
  "swagger-ui-dist 5.35.0 swagger-ui-bundle.js:swagger-ui-bundle.js swagger-ui.css:swagger-ui.css favicon-32x32.png:favicon.png"
)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
: > "$work/VERSIONS"
for entry in "${PACKAGES[@]}"; do
  read -r name version files <<<"$entry"
  meta=$(curl -fsSL "$REGISTRY/${name/\//%2f}/$version")
  tarball=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["dist"]["tarball"])' <<<"$meta")
  integrity=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["dist"]["integrity"])' <<<"$meta")
  curl -fsSL "$tarball" -o "$work/pkg.tgz"
  actual="sha512-$(openssl dgst -sha512 -binary "$work/pkg.tgz" | base64 -w0)"
  [ "$actual" = "$integrity" ] || { echo "integrity mismatch for $name@$version" >&2; exit 1; }
  rm -rf "$work/package"; tar xzf "$work/pkg.tgz" -C "$work"
  for pair in $files; do cp "$work/package/${pair%%:*}" "$DEST/${pair##*:}"; done
  echo "$name@$version $integrity" >> "$work/VERSIONS"
done
cp "$work/VERSIONS" "$DEST/VERSIONS"
echo "assets in $DEST:"; ls -l "$DEST"
