#!/usr/bin/env bash
# The external tools the test suite drives for real: Prometheus (server and promtool),
# headless Chromium, systemd-analyze, nginx and its brotli_static module (the companion's tests), etcd and openssl (the fleet tests). Installs the missing ones from Debian's packages
# when run as root; otherwise says what is missing (those tests then fail, naming it).
set -euo pipefail
need=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need+=(nginx)
# brotli_static over the agent's variants (the nginx precompressed test loads it)
[ -e /usr/lib/nginx/modules/ngx_http_brotli_static_module.so ] || need+=(libnginx-mod-http-brotli-static)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing test tools: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "warning: missing test tools (apt-get install ${need[*]}); the tests that drive them will fail" >&2
fi
