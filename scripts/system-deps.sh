#!/usr/bin/env bash
# Debian packages the test suite uses: dig, nsupdate (bind9-dnsutils), named and named-checkzone (bind9), mail
# clients (isync, msmtp, thunderbird; see below),
# dnsperf for the DNS benchmark, Chromium and its driver (chromium, chromium-driver; fonts-liberation, a mere
# recommendation of chromium, so that pages and failure screenshots have a font) for the browser tests.
# With the argument "bench" (make bench), also rspamd, the filter of the school's mail stack the benchmark table
# compares the lab with (bench/peer_stack.py runs it with Postfix, Dovecot and OpenDKIM as private loopback instances).
# Installed only when missing, only as root; no service is ever started (the tests and benchmarks start their own).
# Also, as root, the system user "jovyan" (see below).
set -euo pipefail
need=()
command -v dig >/dev/null 2>&1 || need+=(bind9-dnsutils)
command -v nsupdate >/dev/null 2>&1 || need+=(bind9-dnsutils)
[ -x /usr/sbin/named ] || need+=(bind9)
command -v named-checkzone >/dev/null 2>&1 || need+=(bind9-utils)
command -v dnsperf >/dev/null 2>&1 || need+=(dnsperf)
command -v swaks >/dev/null 2>&1 || need+=(swaks)
perl -MNet::SSLeay -e 1 >/dev/null 2>&1 || need+=(libnet-ssleay-perl)
command -v chromium >/dev/null 2>&1 || need+=(chromium fonts-liberation)
# The real-client matrix (tests/test_real_clients.py): isync (mbsync), msmtp, and Thunderbird with its French
# interface, on a virtual screen (xvfb, xauth for xvfb-run), its NSS profile made with certutil (libnss3-tools).
command -v mbsync >/dev/null 2>&1 || need+=(isync)
command -v msmtp >/dev/null 2>&1 || need+=(msmtp)
command -v thunderbird >/dev/null 2>&1 || need+=(thunderbird)
dpkg -s thunderbird-l10n-fr >/dev/null 2>&1 || need+=(thunderbird-l10n-fr)
command -v xvfb-run >/dev/null 2>&1 || need+=(xvfb xauth)
command -v certutil >/dev/null 2>&1 || need+=(libnss3-tools)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# The differential DMARC test runs the Node library mailauth (tests/js, installed by make test with npm ci).
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# The live tier of the tests (tests/test_live_tier.py, issue 18): a school's real servers — Postfix, Dovecot (IMAP,
# POP3, LMTP), OpenDKIM, nginx (the autoconfig document) — beside BIND, run by tests/school_stack.py as private
# loopback instances.
[ -x /usr/sbin/postfix ] || need+=(postfix)
[ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
[ -x /usr/lib/dovecot/lmtp ] || need+=(dovecot-lmtpd)
[ -x /usr/lib/dovecot/pop3 ] || need+=(dovecot-pop3d)
[ -x /usr/sbin/opendkim ] || need+=(opendkim)
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ "${1:-}" = bench ]; then
    [ -x /usr/bin/rspamd ] || need+=(rspamd)
fi
# The system user of JupyterHub's container images, "jovyan" (students are told apart by JUPYTERHUB_USER, as nbgrader's
# exchange does): tests/test_grading_circuit.py runs the students' side of the nbgrader circuit as that user.
if [ "$(id -u)" = 0 ] && ! id jovyan >/dev/null 2>&1; then
    useradd --create-home --shell /usr/sbin/nologin jovyan 2>/dev/null || adduser --disabled-password --gecos "" jovyan >/dev/null
fi
# The real JupyterHub test (tests/test_jupyterhub.py): three students and a teacher, each a system account whose
# server the hub runs as that user (LocalProcessSpawner), as on a school's machine.
if [ "$(id -u)" = 0 ]; then
    for account in lm-eleve1 lm-eleve2 lm-eleve3 lm-prof; do
        id "$account" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$account" 2>/dev/null || true
    done
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: missing Debian packages: ${need[*]} (install them as root; the tests that need them are skipped)" >&2
    exit 0
fi
# Keep apt from starting BIND as a service (no systemd here; the tests start their own named).
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && created_policy=1
fi
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
apt-get update -qq
apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
[ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
exit 0
