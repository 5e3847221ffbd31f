#!/usr/bin/env python3
"""peerstack -- a private, loopback-only "school mail server + receiving provider"
stack built from Debian 12's own packages, used as a reference peer for the mail lab.

    school.peer  : Postfix "school" (submission 587, STARTTLS required, SASL via
                   Dovecot, DKIM signing by OpenDKIM milter) -> relays to
    provider.peer: Postfix "provider" (port-25 smtpd, rspamd milter doing
                   SPF/DKIM/DMARC + Authentication-Results) -> Dovecot LMTP ->
                   Maildir -> Dovecot IMAPS (993).
    DNS          : private named serving school.peer and provider.peer.

Every daemon runs from files in the work folder, on free 127.0.0.1 ports chosen at
run time; nothing in /etc is touched and no system service is used.

Usage (as root):  /work/main/.venv/bin/python peer.py [WORKDIR] [--restart] [--keep]
Only the standard library plus `cryptography` and `dnspython` are used.
"""
from __future__ import annotations

import datetime as _dt
import email
import email.policy
import imaplib
import ipaddress
import json
import os
import pwd
import grp
import re
import secrets
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from email.utils import make_msgid, formatdate
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
import dns.message
import dns.query
import dns.rdatatype

SCHOOL = "school.peer"
PROVIDER = "provider.peer"
SENDER = f"tintin@{SCHOOL}"
RCPT = f"milou@{PROVIDER}"
MAIL_UID = MAIL_GID = 5000          # numeric virtual-mail owner (no passwd entry needed)
DKIM_SELECTOR = "dkim"

# Popen handles of foreground daemons started by *this* process (to reap them),
# keyed by (work folder, daemon name).
_PROCS: dict[tuple[str, str], subprocess.Popen] = {}


# --------------------------------------------------------------------------- utils
def _run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run([str(c) for c in cmd], **kw)


def _write(path: Path, text: str, mode: int = 0o644, owner: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    if owner:
        _chown(path, owner)
    return path


def _chown(path: Path, owner: str | int, group: str | int | None = None) -> None:
    uid = owner if isinstance(owner, int) else pwd.getpwnam(owner).pw_uid
    if group is None:
        gid = uid if isinstance(owner, int) else pwd.getpwnam(owner).pw_gid
    else:
        gid = group if isinstance(group, int) else grp.getgrnam(group).gr_gid
    os.chown(path, uid, gid)


def _mkdir(path: Path, mode: int = 0o755, owner=None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    if owner is not None:
        _chown(path, owner)
    return path


def _free_ports(n: int, udp_also_first: bool = True) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (the first one also free in UDP, for DNS)."""
    ports: list[int] = []
    holders = []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
            if not ports and udp_also_first:
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    u.bind(("127.0.0.1", p))
                except OSError:
                    s.close()
                    continue
                holders.append(u)
            holders.append(s)
            ports.append(p)
    finally:
        for h in holders:
            h.close()
    return ports


def _tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"  (cannot read {path}: {e})"
    return "\n".join("  " + l for l in lines[-n:])


def print_logs(work: Path, n: int = 25) -> None:
    logdir = Path(work) / "log"
    for p in sorted(logdir.rglob("*")):
        if p.is_file() and p.stat().st_size:
            print(f"----- {p} (last {n} lines) -----")
            print(_tail(p, n))


# --------------------------------------------------------------------------- keys
def _make_tls_cert(key_path: Path, cert_path: Path,
                   names: tuple[str, ...] = ("mail.school.peer", "mx.provider.peer", "localhost")) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peerstack loopback")])
    now = _dt.datetime.now(_dt.timezone.utc)
    san = x509.SubjectAlternativeName([*(x509.DNSName(n) for n in names),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                         key_cert_sign=True, content_commitment=False,
                                         data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(san, critical=False)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(key, hashes.SHA256()))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(cert_path, 0o644)


def _make_dkim_key(key_path: Path) -> str:
    """Writes the private key (PEM, PKCS#1) and returns the base64 public key (SPKI DER)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    import base64
    return base64.b64encode(der).decode()


def _hash_password(pw: str) -> str:
    for scheme in ("BLF-CRYPT", "SHA512-CRYPT"):
        r = _run(["doveadm", "-O", "pw", "-s", scheme, "-p", pw])
        if r.returncode == 0 and r.stdout.startswith("{"):
            return r.stdout.strip()
    raise RuntimeError(f"doveadm pw failed: {r.stderr}")


def dovecot_head(instance: str, hostname: str, protocols: str, dv: Path, work: Path, cert: Path, key: Path) -> str:
    """The first lines of a private Dovecot's configuration: its folders under ``dv``, its log, TLS required."""
    dh = "ssl_dh = </usr/share/dovecot/dh.pem\n" if Path("/usr/share/dovecot/dh.pem").exists() else ""
    return f"""instance_name = {instance}
hostname = {hostname}
base_dir = {dv}/run
state_dir = {dv}/state
protocols = {protocols}
listen = 127.0.0.1
log_path = {work}/log/dovecot.log
info_log_path = {work}/log/dovecot.log
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
{dh}ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
"""


# --------------------------------------------------------------------------- configure
def configure(work: Path) -> dict:
    """Creates every key, certificate and configuration file in `work`; returns conf."""
    work = Path(work).resolve()
    _mkdir(work, 0o755)               # daemons running as other users must traverse it
    for d in ("log", "run", "tls", "named", "opendkim", "dovecot", "rspamd"):
        _mkdir(work / d)

    (p_dns, p_sub, p_mx, p_imaps, p_dkim, p_rspamd) = _free_ports(6)
    conf = {
        "work": str(work),
        "ports": {"dns": p_dns, "submission": p_sub, "smtp": p_mx, "imaps": p_imaps,
                  "opendkim": p_dkim, "rspamd_milter": p_rspamd},
        "users": {SENDER: secrets.token_urlsafe(12), RCPT: secrets.token_urlsafe(12)},
    }
    P = conf["ports"]

    # ---- TLS + DKIM keys
    tls_key, tls_cert = work / "tls/key.pem", work / "tls/cert.pem"
    _make_tls_cert(tls_key, tls_cert)
    dkim_key = work / "opendkim/dkim.private"
    dkim_pub = _make_dkim_key(dkim_key)
    _chown(dkim_key, "opendkim")     # OpenDKIM RequireSafeKeys: owner = running user, 0600
    conf["paths"] = {"cert": str(tls_cert), "key": str(tls_key), "dkim_key": str(dkim_key)}

    # ---- named
    dkim_txt = f"v=DKIM1; k=rsa; p={dkim_pub}"
    chunks = " ".join(f'"{dkim_txt[i:i + 255]}"' for i in range(0, len(dkim_txt), 255))
    soa = "@ IN SOA ns.{d}. hostmaster.{d}. ( 1 3600 600 86400 300 )\n@ IN NS ns.{d}.\nns IN A 127.0.0.1\n"
    _write(work / "named/school.peer.zone", "$TTL 300\n" + soa.format(d=SCHOOL) + f"""\
@ IN MX 10 mail.{SCHOOL}.
mail IN A 127.0.0.1
mail IN TXT "v=spf1 a -all"
@ IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
{DKIM_SELECTOR}._domainkey IN TXT ( {chunks} )
_dmarc IN TXT "v=DMARC1; p=reject"
""")
    _write(work / "named/provider.peer.zone", "$TTL 300\n" + soa.format(d=PROVIDER) + f"""\
@ IN MX 10 mx.{PROVIDER}.
mx IN A 127.0.0.1
""")
    nd = work / "named"
    _write(nd / "named.conf", f"""\
options {{
    directory "{nd}";
    pid-file "{nd}/named.pid";
    session-keyfile "{nd}/session.key";
    managed-keys-directory "{nd}";
    listen-on port {P['dns']} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    allow-recursion {{ none; }};
    allow-query {{ 127.0.0.1; }};
    allow-transfer {{ none; }};
    dnssec-validation no;
    notify no;
}};
controls {{ }};
logging {{
    channel peer_log {{ file "{work}/log/named.log"; print-time yes; severity info; }};
    category default {{ peer_log; }};
    category lame-servers {{ null; }};
}};
zone "{SCHOOL}" {{ type primary; file "{nd}/school.peer.zone"; }};
zone "{PROVIDER}" {{ type primary; file "{nd}/provider.peer.zone"; }};
""")
    for z in (SCHOOL, PROVIDER):
        r = _run(["named-checkzone", z, nd / f"{z}.zone"])
        if r.returncode:
            raise RuntimeError(f"named-checkzone {z}: {r.stdout}{r.stderr}")
    r = _run(["named-checkconf", nd / "named.conf"])
    if r.returncode:
        raise RuntimeError(f"named-checkconf: {r.stdout}{r.stderr}")

    # ---- OpenDKIM (sign mode only; only SMTP-AUTH'd mail: InternalHosts excludes 127.0.0.1)
    od = work / "opendkim"
    _write(od / "internal-hosts", "# nobody is trusted by address: only SMTP AUTH => sign\n192.0.2.1\n")
    _write(od / "opendkim.conf", f"""\
Syslog                  no
Mode                    s
Canonicalization        relaxed/relaxed
Domain                  {SCHOOL}
Selector                {DKIM_SELECTOR}
KeyFile                 {dkim_key}
Socket                  inet:{P['opendkim']}@127.0.0.1
UserID                  opendkim:opendkim
InternalHosts           {od}/internal-hosts
OversignHeaders         From
SignatureAlgorithm      rsa-sha256
AutoRestart             no
# the key lives under /tmp (world-writable ancestor): OpenDKIM's realpath() walk would
# refuse it ("/tmp can be read or written by other users", exit 78) -- key itself is 0600
RequireSafeKeys         false
""")

    # ---- Dovecot (SASL for school, LMTP + IMAPS for provider)
    dv = work / "dovecot"
    _mkdir(dv / "run")
    _mkdir(dv / "state")
    mail = _mkdir(work / "mail", 0o755, MAIL_UID)
    users = []
    for addr, pw in conf["users"].items():
        local, dom = addr.split("@")
        home = mail / dom / local
        _mkdir(mail / dom, 0o755, MAIL_UID)
        _mkdir(home, 0o700, MAIL_UID)
        users.append(f"{addr}:{_hash_password(pw)}:{MAIL_UID}:{MAIL_GID}::{home}::")
    _write(dv / "users", "\n".join(users) + "\n", 0o640)
    _chown(dv / "users", "root", "dovecot")
    pfa, pfb = work / "postfix-school", work / "postfix-provider"
    _write(dv / "dovecot.conf", dovecot_head("peerstack", f"mx.{PROVIDER}", "imap lmtp", dv, work, tls_cert, tls_key)
           + f"""\
auth_cache_size = 10M
auth_cache_ttl = 1 hour
auth_cache_negative_ttl = 1 min
first_valid_uid = {MAIL_UID}
last_valid_uid = {MAIL_UID}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
}}
passdb {{
  driver = passwd-file
  args = scheme=BLF-CRYPT username_format=%u {dv}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {dv}/users
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {P['imaps']}
    ssl = yes
  }}
}}
service lmtp {{
  unix_listener {pfb}/queue/private/dovecot-lmtp {{
    user = postfix
    group = postfix
    mode = 0600
  }}
}}
service auth {{
  unix_listener {pfa}/queue/private/auth {{
    user = postfix
    group = postfix
    mode = 0660
  }}
  unix_listener auth-userdb {{
    mode = 0600
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@{PROVIDER}
}}
""")

    # ---- rspamd (Debian's /etc/rspamd/rspamd.conf + --var LOCAL_CONFDIR/DBDIR/RUNDIR/LOGDIR)
    rl = work / "rspamd/local"
    for d in ("db", "run"):
        _mkdir(work / "rspamd" / d, 0o755, "_rspamd")
    _mkdir(work / "log/rspamd", 0o755, "_rspamd")
    _write(rl / "local.d/options.inc", f"""\
dns {{
  nameserver = ["127.0.0.1:{P['dns']}"];
  timeout = 1s;
  retransmits = 2;
}}
check_local = true;
check_authed = true;
""")
    _write(rl / "local.d/logging.inc", 'level = "info";\n')
    # workers: only the milter proxy (self-scanning); the normal/controller workers are off
    _write(rl / "override.d/worker-proxy.inc", f"""\
bind_socket = "127.0.0.1:{P['rspamd_milter']}";
milter = yes;
timeout = 120s;
count = 1;
upstream "local" {{
  default = yes;
  self_scan = yes;
}}
""")
    _write(rl / "override.d/worker-normal.inc", "enabled = false;\n")
    _write(rl / "override.d/worker-controller.inc", "enabled = false;\n")
    for mod in ("spf", "dkim", "dmarc"):
        _write(rl / f"local.d/{mod}.conf", "check_local = true;\ncheck_authed = true;\n")
    _write(rl / "local.d/milter_headers.conf", """\
use = ["authentication-results"];
skip_local = false;
skip_authenticated = false;
""")
    _write(rl / "override.d/actions.conf", """\
reject = 10000;
add_header = 9999;
greylist = 9998;
""")
    # no Redis, no Internet: switch off what would need them
    for mod in ("dkim_signing", "arc", "greylist", "ratelimit", "neural", "reputation", "history_redis", "replies",
                "fuzzy_check", "rbl", "asn", "phishing", "url_redirector", "bimi",
                "mx_check", "dcc", "spamassassin", "clickhouse", "elastic", "metric_exporter"):
        _write(rl / f"local.d/{mod}.conf", "enabled = false;\n")

    # ---- Postfix instances
    master_cf = _derive_master_cf()
    common = f"""\
compatibility_level = 3.6
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
maillog_file_prefixes = {work}
alias_maps =
alias_database =
mydestination =
local_recipient_maps =
local_transport = error:local delivery is disabled
biff = no
append_dot_mydomain = no
readme_directory = no
smtpd_banner = $myhostname ESMTP
smtp_tls_security_level = may
smtp_tls_loglevel = 1
smtpd_tls_loglevel = 1
smtpd_tls_cert_file = {tls_cert}
smtpd_tls_key_file = {tls_key}
milter_protocol = 6
milter_default_action = tempfail
"""
    for inst in (pfa, pfb):
        _mkdir(inst / "etc")
        _mkdir(inst / "queue", 0o755)
        _mkdir(inst / "data", 0o700, "postfix")
    _write(pfa / "etc/transport", f"{PROVIDER} smtp:[127.0.0.1]:{P['smtp']}\n")
    _write(pfa / "etc/sender_login", f"{SENDER} {SENDER}\n")
    _write(pfa / "etc/main.cf", common + f"""\
queue_directory = {pfa}/queue
data_directory = {pfa}/data
maillog_file = {work}/log/postfix-school.log
syslog_name = postfix-school
myhostname = mail.{SCHOOL}
mydomain = {SCHOOL}
myorigin = {SCHOOL}
mynetworks = 127.0.0.1/32
smtp_helo_name = mail.{SCHOOL}
transport_maps = texthash:{pfa}/etc/transport
default_transport = error:this peer only relays to {PROVIDER}
smtpd_tls_security_level = encrypt
smtpd_tls_auth_only = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_sasl_auth_enable = yes
smtpd_sender_login_maps = texthash:{pfa}/etc/sender_login
smtpd_client_restrictions = permit_sasl_authenticated, reject
smtpd_sender_restrictions = reject_sender_login_mismatch
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_milters = inet:127.0.0.1:{P['opendkim']}
non_smtpd_milters =
# keep relay sessions to the provider open across messages even though they use STARTTLS, as the lab's relay
# does (labmail/lab/outbound.py); stock Postfix caches only plaintext SMTP connections
smtp_tls_connection_reuse = yes
""")
    _write(pfa / "etc/master.cf", master_cf + f"""
tlsproxy unix - - n - 0 tlsproxy
127.0.0.1:{P['submission']} inet n - n - - smtpd
  -o syslog_name=postfix-school/submission
  -o milter_macro_daemon_name=ORIGINATING
""")
    _write(pfb / "etc/vmailbox", f"{RCPT} {PROVIDER}/milou/\n")
    _write(pfb / "etc/main.cf", common + f"""\
queue_directory = {pfb}/queue
data_directory = {pfb}/data
maillog_file = {work}/log/postfix-provider.log
syslog_name = postfix-provider
myhostname = mx.{PROVIDER}
mydomain = {PROVIDER}
myorigin = {PROVIDER}
mynetworks = 127.0.0.1/32
smtpd_tls_security_level = may
smtpd_relay_restrictions = reject_unauth_destination
virtual_mailbox_domains = {PROVIDER}
virtual_mailbox_maps = texthash:{pfb}/etc/vmailbox
virtual_transport = lmtp:unix:private/dovecot-lmtp
smtpd_milters = inet:127.0.0.1:{P['rspamd_milter']}
non_smtpd_milters =
milter_mail_macros = i {{mail_addr}} {{client_addr}} {{client_name}} {{auth_authen}}
""")
    _write(pfb / "etc/master.cf", master_cf + f"""
127.0.0.1:{P['smtp']} inet n - n - - smtpd
  -o syslog_name=postfix-provider/smtpd
""")
    conf["paths"].update({"postfix_school": str(pfa / "etc"), "postfix_provider": str(pfb / "etc"),
                          "dovecot_conf": str(dv / "dovecot.conf"), "named_conf": str(nd / "named.conf"),
                          "opendkim_conf": str(od / "opendkim.conf"), "rspamd_local": str(rl)})
    for inst in (pfa, pfb):
        r = _run(["postfix", "-c", inst / "etc", "check"])
        if r.returncode:
            raise RuntimeError(f"postfix check {inst}: {r.stdout}{r.stderr}")
    r = _run(["opendkim", "-n", "-x", od / "opendkim.conf"])
    if r.returncode:
        raise RuntimeError(f"opendkim -n: {r.stdout}{r.stderr}")
    r = _run(["doveconf", "-n", "-c", dv / "dovecot.conf"])
    if r.returncode:
        raise RuntimeError(f"doveconf: {r.stdout}{r.stderr}")
    _write(work / "conf.json", json.dumps(conf, indent=2), 0o600)
    return conf


def _derive_master_cf() -> str:
    """/etc/postfix/master.cf with chroot off and without the default port-25 smtpd."""
    out, skip = [], False
    for line in Path("/etc/postfix/master.cf").read_text().splitlines():
        if skip and line[:1].isspace():
            continue
        skip = False
        if not line.strip() or line.lstrip().startswith("#") or line[:1].isspace():
            out.append(line)
            continue
        f = line.split()
        if f[0] in ("smtp", "submission", "smtps") and f[1] == "inet":
            skip = True
            continue
        if len(f) >= 8:
            f[4] = "n"
            line = " ".join(f[:7]) + " " + " ".join(f[7:])
        out.append(line)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- daemons
def _daemon_specs(work: Path, conf: dict) -> list[tuple[str, list]]:
    pth, log = conf["paths"], work / "log"
    return [
        ("named", ["/usr/sbin/named", "-f", "-4", "-c", pth["named_conf"]]),
        ("opendkim", ["/usr/sbin/opendkim", "-f", "-x", pth["opendkim_conf"]]),
        ("rspamd", ["/usr/bin/rspamd", "-f", "-u", "_rspamd", "-g", "_rspamd",
                    "-c", "/etc/rspamd/rspamd.conf",
                    f"--var=LOCAL_CONFDIR={pth['rspamd_local']}",
                    f"--var=DBDIR={work}/rspamd/db", f"--var=RUNDIR={work}/rspamd/run",
                    f"--var=LOGDIR={log}/rspamd"]),
        ("dovecot", ["/usr/sbin/dovecot", "-F", "-c", pth["dovecot_conf"]]),
    ]


def _spawn(work: Path, name: str, cmd: list) -> None:
    out = open(work / "log" / f"{name}.out", "ab")
    p = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT, cwd=str(work), start_new_session=True)
    out.close()
    _PROCS[(str(work), name)] = p
    (work / "run" / f"{name}.pid").write_text(f"{p.pid}\n")


def _postfix(inst_etc: str, action: str) -> subprocess.CompletedProcess:
    return _run(["/usr/sbin/postfix", "-c", inst_etc, action])


def _master_pid(work: Path, inst: str) -> int | None:
    try:
        return int((work / inst / "queue/pid/master.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _smtp_greets(port: int) -> bool:
    """220 banner *and* a 250 answer to EHLO (a Postfix smtpd whose milter is not up yet
    still prints 220 but answers 451 to every command)."""
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="probe.peer", timeout=5) as s:
            code, _ = s.ehlo()
            return code == 250
    except (OSError, smtplib.SMTPException):
        return False


def _imaps_greets(port: int, ctx: ssl.SSLContext) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.settimeout(5)
                return s.recv(512).startswith(b"* OK")
    except (OSError, ssl.SSLError):
        return False


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _dns_answers(port: int) -> bool:
    try:
        q = dns.message.make_query(f"{SCHOOL}.", dns.rdatatype.SOA)
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=1)
        return bool(r.answer)
    except Exception:
        return False


def tls_context(conf: dict) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=conf["paths"]["cert"])
    return ctx


def _wait(what: str, pred, deadline: float, work: Path, step: float = 0.05) -> None:
    while time.monotonic() < deadline:
        if pred():
            return
        for (w, name), p in _PROCS.items():
            if w == str(work) and p.poll() is not None:
                print_logs(work)
                raise RuntimeError(f"{name} exited with {p.returncode} while waiting for {what}")
        time.sleep(step)
    print_logs(work)
    raise RuntimeError(f"timeout waiting for {what}")


def start(work: Path, conf: dict, timeout: float = 90.0) -> float:
    """Starts every daemon; returns seconds until 587, 25 and 993 greet (all other
    ports -- DNS, OpenDKIM and rspamd milters -- are also up by then)."""
    work = Path(work)
    P, pth = conf["ports"], conf["paths"]
    t0 = time.monotonic()
    deadline = t0 + timeout
    specs = dict(_daemon_specs(work, conf))
    for name in ("named", "opendkim", "rspamd"):
        _spawn(work, name, specs[name])
    for inst in ("postfix_school", "postfix_provider"):
        r = _postfix(pth[inst], "start")
        if r.returncode:
            print_logs(work)
            raise RuntimeError(f"postfix start {inst}: {r.stdout}{r.stderr}")
    _spawn(work, "dovecot", specs["dovecot"])   # after Postfix: its sockets live in the queues
    ctx = tls_context(conf)
    tm = conf["_timings"] = {}
    for what, pred in (("dns", lambda: _dns_answers(P["dns"])),
                       ("opendkim", lambda: _tcp_open(P["opendkim"])),
                       ("submission", lambda: _smtp_greets(P["submission"])),
                       ("imaps", lambda: _imaps_greets(P["imaps"], ctx)),
                       ("rspamd", lambda: _tcp_open(P["rspamd_milter"])),
                       # probed only once rspamd listens, or smtpd would log milter errors
                       ("smtp", lambda: _smtp_greets(P["smtp"]))):
        _wait(what, pred, deadline, work, 0.01)  # polled as often as the lab is (bench/mail_bench.py)
        tm[what] = round(time.monotonic() - t0, 2)
    conf["_t_all_up"] = time.monotonic() - t0
    return max(tm["submission"], tm["smtp"], tm["imaps"])


def _proc_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, starttime, comm)."""
    tab = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2:].split()
        tab[int(d)] = (int(rest[1]), rest[19], comm)
    return tab


def _our_processes(work: Path, scan: bool = False) -> dict[int, tuple[str, str]]:
    """Live processes of this work folder: the daemons whose pid we recorded (run/*.pid,
    Postfix master.pid) and their descendants.  With scan=True (used only to *report*
    leftovers, never to kill), also any process whose cmdline/cwd/environment
    (Postfix children carry MAIL_CONFIG) mentions `work`."""
    work = Path(work)
    tab = _proc_table()
    roots = set()
    for f in (work / "run").glob("*.pid"):
        try:
            roots.add(int(f.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
    for inst in ("postfix-school", "postfix-provider"):
        mp = _master_pid(work, inst)
        if mp:
            roots.add(mp)
    me, skip = os.getpid(), set()
    p = me
    while p in tab and p not in skip:          # never count ourselves or our ancestors
        skip.add(p)
        p = tab[p][0]
    key = str(work).encode()
    found = {}
    for pid, (ppid, st, comm) in tab.items():
        if pid in skip:
            continue
        hit = pid in roots
        if not hit and scan:
            try:
                hit = (key in Path(f"/proc/{pid}/cmdline").read_bytes()
                       or key in Path(f"/proc/{pid}/environ").read_bytes()
                       or os.readlink(f"/proc/{pid}/cwd").startswith(str(work)))
            except OSError:
                pass
        if hit:
            found[pid] = (st, comm)
    # add descendants
    changed = True
    while changed:
        changed = False
        for pid, (ppid, st, comm) in tab.items():
            if pid not in found and pid not in skip and ppid in found:
                found[pid] = (st, comm)
                changed = True
    return {p: v for p, v in found.items() if _alive(p, v[0])}     # zombies are not running


def _alive(pid: int, starttime: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    rest = stat[stat.rindex(")") + 2:].split()
    return rest[19] == starttime and rest[0] != "Z"


def stop(work: Path, conf: dict, timeout: float = 20.0) -> None:
    """Stops every daemon of `work` (orderly first, then SIGKILL by pid) and reaps them."""
    work = Path(work)
    before = _our_processes(work)
    pth = conf["paths"]
    for inst in ("postfix_school", "postfix_provider"):
        etc = Path(pth[inst])
        if _master_pid(work, etc.parent.name):
            _postfix(str(etc), "stop")
    for pf in sorted((work / "run").glob("*.pid")):  # every daemon this folder started (dovecot, named, nginx…)
        try:
            pid = int(pf.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if pid in before:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in _PROCS.values():
            p.poll()                                   # reap as they exit
        if not any(_alive(pid, st) for pid, (st, _) in before.items()):
            break
        time.sleep(0.05)
    for pid, (st, comm) in before.items():
        if _alive(pid, st):
            print(f"  stop: {comm}[{pid}] ignored SIGTERM, sending SIGKILL")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for key, p in list(_PROCS.items()):
        if key[0] != str(work):
            continue
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        _PROCS.pop(key, None)
    for f in (work / "run").glob("*.pid"):
        f.unlink(missing_ok=True)


def restart(work: Path, conf: dict) -> float:
    """stop() then start() on the existing state; seconds until every port answers."""
    t0 = time.monotonic()
    stop(work, conf)
    start(work, conf)
    return time.monotonic() - t0


def leftovers(work: Path) -> dict[int, tuple[str, str]]:
    """Anything still running that belongs to / refers to the work folder (report only)."""
    return _our_processes(work, scan=True)


# --------------------------------------------------------------------------- test
def send_test_message(conf: dict) -> str:
    P = conf["ports"]
    msg = EmailMessage()
    msg["From"] = f"Tintin <{SENDER}>"
    msg["To"] = f"Milou <{RCPT}>"
    msg["Subject"] = "peerstack end-to-end test"
    msg["Date"] = formatdate(localtime=True)
    mid = make_msgid(domain=SCHOOL)
    msg["Message-ID"] = mid
    msg.set_content("Milou, on part pour la Lune.\nThis message went 587 -> 25 -> LMTP -> IMAPS.\n")
    with smtplib.SMTP("127.0.0.1", P["submission"], local_hostname="client.school.peer",
                      timeout=30) as s:
        s.ehlo()
        s.starttls(context=tls_context(conf))
        s.ehlo()
        s.login(SENDER, conf["users"][SENDER])
        s.send_message(msg)
    return mid


def fetch_message(conf: dict, mid: str, timeout: float = 60.0):
    P = conf["ports"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with imaplib.IMAP4_SSL("127.0.0.1", P["imaps"], ssl_context=tls_context(conf),
                               timeout=10) as im:
            im.login(RCPT, conf["users"][RCPT])
            im.select("INBOX", readonly=True)
            typ, data = im.search(None, "HEADER", "Message-ID", f'"{mid}"')
            ids = data[0].split() if typ == "OK" and data and data[0] else []
            if ids:
                typ, data = im.fetch(ids[-1], "(BODY.PEEK[HEADER])")
                raw = next(part[1] for part in data if isinstance(part, tuple))
                return email.message_from_bytes(raw, policy=email.policy.compat32)
        time.sleep(0.3)
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    do_restart = "--restart" in argv
    keep = "--keep" in argv
    args = [a for a in argv if not a.startswith("--")]
    if os.geteuid() != 0:
        print("peer.py must run as root (daemons drop to their own users)")
        return 2
    own_tmp = not args
    work = Path(args[0]) if args else Path(tempfile.mkdtemp(prefix="peerstack-"))
    work.mkdir(parents=True, exist_ok=True)
    work = work.resolve()
    print(f"work folder: {work}")
    t = time.monotonic()
    conf = configure(work)
    print(f"configure: {time.monotonic() - t:.2f}s")
    print("ports: " + ", ".join(f"{k}={v}" for k, v in conf["ports"].items()))
    ok = False
    try:
        t_start = start(work, conf)
        print(f"start: 587/25/993 greet (EHLO 250 / IMAP OK) after {t_start:.2f}s; "
              f"per service: {conf['_timings']}")
        t0 = time.monotonic()
        mid = send_test_message(conf)
        print(f"submitted {mid} as {SENDER} (STARTTLS + AUTH) to {RCPT}")
        msg = fetch_message(conf, mid)
        if msg is None:
            print_logs(work)
            raise AssertionError("message never became visible over IMAPS")
        print(f"visible over IMAPS after {time.monotonic() - t0:.2f}s; headers:")
        print("-" * 72)
        for k, v in msg.items():
            print(f"{k}: {v}")
        print("-" * 72)
        sigs = [re.sub(r"\s+", " ", s) for s in msg.get_all("DKIM-Signature", [])]
        assert any(re.search(r"(^|;)\s*d=school\.peer\s*(;|$)", s) for s in sigs), \
            f"no DKIM-Signature with d=school.peer: {sigs}"
        ars = [re.sub(r"\s+", " ", a) for a in msg.get_all("Authentication-Results", [])]
        good = [a for a in ars if all(re.search(rf"\b{m}=pass\b", a) for m in ("dkim", "spf", "dmarc"))]
        assert good, f"no Authentication-Results with dkim/spf/dmarc=pass: {ars}"
        print("DKIM-Signature d=school.peer: OK")
        print("Authentication-Results: " + good[0])
        if do_restart:
            t_r = restart(work, conf)
            print(f"restart: every port answers after {t_r:.2f}s "
                  f"(start part: {conf['_t_all_up']:.2f}s)")
            again = fetch_message(conf, mid, timeout=10)
            assert again is not None, "message lost after restart"
            print("after restart: message still visible over IMAPS")
        ok = True
    except BaseException:
        print("FAILED -- log tails:")
        print_logs(work)
        raise
    finally:
        if not keep:
            t = time.monotonic()
            stop(work, conf)
            print(f"stop: {time.monotonic() - t:.2f}s")
            left = leftovers(work)
            if left:
                print("LEFT RUNNING:", left)
                ok = False
            else:
                print("no daemon of the work folder left running")
    if ok and own_tmp and not keep:
        shutil.rmtree(work, ignore_errors=True)
        print(f"removed {work}")
    elif not keep:
        print(f"work folder (logs) kept: {work}")
    print("END TO END: OK" if ok else "END TO END: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
