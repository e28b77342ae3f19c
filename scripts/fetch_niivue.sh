#!/usr/bin/env bash
# Fetches niivue (BSD-2-Clause, npm package @niivue/niivue) into third_party/niivue/
# (git-ignored) for the review pages `glandseg predict` writes (CASE/review.html).
# glandseg finds it there when built from this tree (or set GLANDSEG_NIIVUE to the file,
# or put niivue.umd.js beside the glandseg binary). Without it the pages are skipped and
# review.png stays the review. Idempotent: does nothing when the pinned file is there.
#
# Not committed: the bundle is 2.3 MB of minified JavaScript (0.8 MB gzipped), pinned
# here by version and SHA-256 instead; npm checks the package's registry integrity.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.69.0
sha256=47b896b77ec4a5be3ef1949c33ad393b6f45629921f326c279000bcf51bdb4af
dest=third_party/niivue
if [ -f "$dest/niivue.umd.js" ] && echo "$sha256  $dest/niivue.umd.js" | sha256sum -c --quiet 2>/dev/null; then
    exit 0
fi
command -v npm >/dev/null || { echo "fetch_niivue.sh: npm is needed (apt-get install npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "@niivue/niivue@$version" >/dev/null)
tar xzf "$tmp/niivue-niivue-$version.tgz" -C "$tmp" package/dist/niivue.umd.js
echo "$sha256  $tmp/package/dist/niivue.umd.js" | sha256sum -c --quiet
mkdir -p "$dest"
cp "$tmp/package/dist/niivue.umd.js" "$dest/niivue.umd.js.tmp"
mv "$dest/niivue.umd.js.tmp" "$dest/niivue.umd.js"
echo "niivue $version in $dest/niivue.umd.js"
