#!/usr/bin/env bash
# Installs what caravan's test suite needs on a fresh Debian machine, as root,
# idempotently: a static busybox (test images FROM scratch), file(1),
# procps and iproute2. Docker Engine
# and Go are expected to be there already.
set -euo pipefail

need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in busybox-static file procps iproute2 ca-certificates; do
	have "$pkg" || need+=("$pkg")
done

if [ "${#need[@]}" -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "install-test-deps: need root to install: ${need[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
	echo "install-test-deps: warning: no Docker Engine answers; docker tests will skip (or fail under CARAVAN_TEST_STRICT=1)" >&2
fi
echo "install-test-deps: ok"
