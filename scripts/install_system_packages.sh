#!/usr/bin/env bash
# Install, from apt, the programs the tests run beside Python, but only those whose command is missing:
# coturn (the TURN relay), Janus (the SFU of group calls), iproute2 (the network namespace Janus runs in),
# npm (the page's packages and tests), chromium, and firefox-esr with xvfb and pulseaudio (the browser
# peer's tests: Chromium headless, Firefox on a virtual display and a null sound server).
#
# Asking only for what is missing matters: a machine whose Node.js comes from NodeSource (npm built in)
# cannot also take Debian's npm, and one such conflict makes apt refuse the whole list.
# Without apt-get as root, or when apt fails, it says which tests will skip and succeeds anyway.
set -uo pipefail

# command:package pairs
NEEDED="turnserver:coturn janus:janus ip:iproute2 npm:npm chromium:chromium firefox-esr:firefox-esr
Xvfb:xvfb pulseaudio:pulseaudio"

missing=()
for pair in $NEEDED; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if ! command -v apt-get >/dev/null || [[ "$(id -u)" != 0 ]]; then
    echo "${missing[*]} not installed (needs apt-get as root): the tests that need them will skip"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "${missing[@]}" \
    || { apt-get update -q && apt-get install -y -q "${missing[@]}"; } \
    || echo "could not install ${missing[*]}: the tests that need them will skip"
