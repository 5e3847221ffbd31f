#!/usr/bin/env bash
# Debian packages the benchmark table compares labmail with (make bench only): Postfix and Dovecot for the mail
# side (BIND and dnsperf come with scripts/system-deps.sh). Installed only when missing, only as root; their
# services are never started (the benchmark starts private instances on loopback ports).
set -euo pipefail
need=()
[ -x /usr/sbin/postfix ] || need+=(postfix)
[ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: missing Debian packages: ${need[*]} (install them as root; the table then names them 'not installed')" >&2
    exit 0
fi
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && created_policy=1
fi
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
[ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
exit 0
