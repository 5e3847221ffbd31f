"""A school's real mail servers, private and on loopback, for the live tier of the tests (issue 18, part 2).

What a school that does not run Mailcow sets up with Debian's packages, from the files ``labmail provision-live``
writes for its roster:

* **BIND** — the parent zone (``ecole.test``: the mail host, the name server, one delegation per student), each
  student's zone with its TSIG key and ``update-policy`` (the files of ``provision-live``, unchanged), and
  ``0.0.127.in-addr.arpa`` (the mail host's PTR);
* **Postfix** — submission (STARTTLS required, SASL by Dovecot, the sender must be the login), SMTPS, port-25
  reception for the students' domains, relay of everything else to the embedded lab's providers (the "outside
  world": ``gmail.test``, ``outlook.test``), DKIM signing by **OpenDKIM** (selector ``dkim``, one key per student);
* **Dovecot** — IMAP and POP3 (STARTTLS and implicit TLS), LMTP delivery, SASL for Postfix; the mailboxes
  ``tintin@`` and ``milou@`` of each student (the spam folder is named ``Pourriel``, found by its ``\\Junk``
  attribute only), with generated passwords written in the student's credentials file
  (what the teacher hands out);
* **nginx** — the school's web server with Thunderbird's autoconfig document (Mozilla's static
  ``/mail/config-v1.1.xml``), over HTTPS for ``autoconfig.<domain>``; no Exchange Autodiscover (a school without
  Exchange or Mailcow has none: Outlook finds nothing, as it would there).

The lab resolves the school's zones by asking this BIND (``lab_forward``), so that its Gmail and Outlook judge mail
from the real Postfix (SPF, DKIM, DMARC, PTR) as they judge any sender. Every daemon runs as Debian's packages
install them, from files in the work folder, on free loopback ports (``ports = "587=…"`` in the student's live
configuration); nothing in /etc is touched, and :func:`stop` leaves no process behind. Requires root (Postfix's
master) and Debian's packages (``scripts/system-deps.sh live``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import peer_stack as ps  # noqa: E402 - the private Debian daemons' machinery (start, wait, stop, leftovers)

PARENT = "ecole.test"
MAIL_HOST = f"mail.{PARENT}"
NS_HOST = f"ns.{PARENT}"
PACKAGES = {"named": "/usr/sbin/named", "postfix": "/usr/sbin/postfix", "dovecot": "/usr/sbin/dovecot",
            "opendkim": "/usr/sbin/opendkim", "doveadm": "/usr/bin/doveadm", "nginx": "/usr/sbin/nginx"}


def missing() -> list[str]:
    """What this machine lacks to run the stack (empty: it can)."""
    out = [name for name, path in PACKAGES.items() if not Path(path).exists()]
    if os.geteuid() != 0:
        out.append("root (Postfix's master process)")
    return out


@dataclass
class School:
    """A running school stack: where everything listens, the students' files, the CA to trust."""

    work: Path
    conf: dict
    students: dict[str, dict] = field(default_factory=dict)  # label → {"domain", "secret", "passwords", "dkim_txt"}

    @property
    def ports(self) -> dict[str, int]:
        return self.conf["ports"]

    @property
    def ca_file(self) -> str:
        return self.conf["paths"]["cert"]

    def port_map(self) -> str:
        """The live configuration's ``ports``: standard port → where this stack listens."""
        p = self.ports
        return (f"53={p['dns']},25={p['smtp']},587={p['submission']},465={p['smtps']},143={p['imap']},"
                f"993={p['imaps']},110={p['pop3']},995={p['pop3s']},443={p['https']}")

    def stop(self) -> None:
        ps.stop(self.work, self.conf)


def configure(work: Path, provisioned: Path, labels: list[str], outside: dict[str, tuple[str, int]],
              dns_port: int | None = None) -> School:
    """Write every key and configuration file under ``work`` from ``provisioned`` (the folder ``labmail
    provision-live`` wrote) for ``labels``; ``outside`` maps the lab's provider domains to their MX endpoint;
    BIND listens on ``dns_port`` (e.g. the one the lab was told to forward the school's zones to), else a free one."""
    work = Path(work).resolve()
    ps._mkdir(work, 0o755)
    for d in ("log", "run", "tls", "named", "opendkim", "dovecot", "nginx", "www/mail", "www/.well-known/autoconfig/mail"):
        ps._mkdir(work / d)
    names = ("dns", "smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s", "opendkim", "lmtp", "auth", "https")
    ports = dict(zip(names, ps._free_ports(len(names))))
    if dns_port is not None:
        ports["dns"] = dns_port
    conf: dict = {"work": str(work), "ports": ports, "paths": {}}
    tls_key, tls_cert = work / "tls/key.pem", work / "tls/cert.pem"
    web_names = tuple(f"{kind}.{label}.{PARENT}" for label in labels for kind in ("autoconfig", "autodiscover"))
    ps._make_tls_cert(tls_key, tls_cert, names=(MAIL_HOST, NS_HOST, "localhost", *web_names))
    conf["paths"].update(cert=str(tls_cert), key=str(tls_key))
    school = School(work, conf)

    # ---- BIND: the parent zone, the students' zones and keys as provision-live wrote them, the PTR
    nd = work / "named"
    shutil.copytree(provisioned / "bind", nd / "class", dirs_exist_ok=True)
    delegations = (nd / "class" / "delegations.txt").read_text()
    ps._write(nd / f"{PARENT}.zone", f"""$TTL 300
@ IN SOA {NS_HOST}. hostmaster.{PARENT}. ( 1 3600 600 86400 60 )
@ IN NS {NS_HOST}.
ns IN A 127.0.0.1
mail IN A 127.0.0.1
""" + "".join(line for line in delegations.splitlines(keepends=True) if not line.startswith(";")))
    ps._write(nd / "ptr.zone", f"""$TTL 300
@ IN SOA {NS_HOST}. hostmaster.{PARENT}. ( 1 3600 600 86400 60 )
@ IN NS {NS_HOST}.
1 IN PTR {MAIL_HOST}.
""")
    include = (nd / "class" / "named.conf.labmail").read_text().replace(str((provisioned / "bind").resolve()),
                                                                        str(nd / "class"))
    ps._write(nd / "named.conf", f"""options {{
    directory "{nd}"; pid-file "{nd}/named.pid"; session-keyfile "{nd}/session.key";
    managed-keys-directory "{nd}"; listen-on port {ports['dns']} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
    recursion no; dnssec-validation no; allow-query {{ any; }}; notify no;
}};
controls {{ }};
logging {{ channel school {{ file "{work}/log/named.log"; print-time yes; severity info; }}; category default {{ school; }}; }};
zone "{PARENT}" {{ type primary; file "{nd}/{PARENT}.zone"; }};
zone "0.0.127.in-addr.arpa" {{ type primary; file "{nd}/ptr.zone"; }};
""" + include)
    r = ps._run(["named-checkconf", nd / "named.conf"])  # (and nginx -t below, once its files are written)
    if r.returncode:
        raise RuntimeError(f"named-checkconf: {r.stdout}{r.stderr}")

    # ---- mailboxes (Dovecot passwd-file) and DKIM keys (OpenDKIM), one set per student: the teacher's files
    od, dv = work / "opendkim", work / "dovecot"
    mail = ps._mkdir(work / "mail", 0o755, ps.MAIL_UID)
    users, key_table, signing_table = [], [], []
    for label in labels:
        domain = f"{label}.{PARENT}"
        passwords = {f"{who}@{domain}": "p" + base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("=")
                     for who in ("tintin", "milou")}
        for address, password in passwords.items():
            local = address.split("@")[0]
            home = ps._mkdir(ps._mkdir(mail / domain, 0o755, ps.MAIL_UID) / local, 0o700, ps.MAIL_UID)
            users.append(f"{address}:{ps._hash_password(password)}:{ps.MAIL_UID}:{ps.MAIL_UID}::{home}::")
        public = ps._make_dkim_key(od / f"{domain}.private")
        ps._chown(od / f"{domain}.private", "opendkim")
        key_table.append(f"dkim._domainkey.{domain} {domain}:dkim:{od}/{domain}.private")
        signing_table.append(f"*@{domain} dkim._domainkey.{domain}")
        school.students[label] = {"domain": domain, "passwords": passwords,
                                  "dkim_txt": f"v=DKIM1;k=rsa;t=s;s=email;p={public}"}
    ps._write(dv / "users", "\n".join(users) + "\n", 0o640)
    ps._chown(dv / "users", "root", "dovecot")
    ps._write(od / "keytable", "\n".join(key_table) + "\n")
    ps._write(od / "signingtable", "\n".join(signing_table) + "\n")
    ps._write(od / "internal-hosts", "192.0.2.1\n")  # nobody by address: only SMTP AUTH'd mail is signed
    ps._write(od / "opendkim.conf", f"""Syslog no
Mode s
Canonicalization relaxed/relaxed
KeyTable {od}/keytable
SigningTable refile:{od}/signingtable
Socket inet:{ports['opendkim']}@127.0.0.1
UserID opendkim:opendkim
InternalHosts {od}/internal-hosts
OversignHeaders From
SignatureAlgorithm rsa-sha256
AutoRestart no
RequireSafeKeys false
""")
    ps._mkdir(dv / "run")
    ps._mkdir(dv / "state")
    ps._write(dv / "dovecot.conf", ps.dovecot_head("school", MAIL_HOST, "imap pop3 lmtp", dv, work, tls_cert, tls_key)
              + f"""first_valid_uid = {ps.MAIL_UID}
last_valid_uid = {ps.MAIL_UID}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  mailbox Pourriel {{
    special_use = \\Junk
    auto = subscribe
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
}}
passdb {{
  driver = passwd-file
  args = username_format=%u {dv}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {dv}/users
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {ports['imap']}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ports['imaps']}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {ports['pop3']}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {ports['pop3s']}
    ssl = yes
  }}
}}
protocol pop3 {{
  pop3_uidl_format = %08Xu%08Xv
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {ports['lmtp']}
  }}
}}
service auth {{
  inet_listener {{
    address = 127.0.0.1
    port = {ports['auth']}
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@{PARENT}
}}
""")

    # ---- Postfix: submission, SMTPS, reception for the students' domains, relay to the lab's providers
    pf = work / "postfix-school"
    ps._mkdir(pf / "etc")
    ps._mkdir(pf / "queue", 0o755)
    ps._mkdir(pf / "data", 0o700, "postfix")
    domains = [s["domain"] for s in school.students.values()]
    ps._write(pf / "etc/transport", "".join(f"{d} smtp:[{h}]:{p}\n" for d, (h, p) in outside.items()))
    ps._write(pf / "etc/vmailbox", "".join(f"{a} {a}\n" for s in school.students.values() for a in s["passwords"]))
    ps._write(pf / "etc/sender_login", "".join(f"{a} {a}\n" for s in school.students.values() for a in s["passwords"]))
    ps._write(pf / "etc/main.cf", f"""compatibility_level = 3.6
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
maillog_file_prefixes = {work}
maillog_file = {work}/log/postfix.log
syslog_name = postfix-school
queue_directory = {pf}/queue
data_directory = {pf}/data
alias_maps =
alias_database =
mydestination =
local_recipient_maps =
local_transport = error:local delivery is disabled
biff = no
append_dot_mydomain = no
readme_directory = no
myhostname = {MAIL_HOST}
mydomain = {PARENT}
myorigin = {PARENT}
mynetworks = 127.0.0.1/32
smtpd_banner = $myhostname ESMTP
smtp_helo_name = {MAIL_HOST}
disable_dns_lookups = yes
smtp_tls_security_level = may
smtpd_tls_cert_file = {tls_cert}
smtpd_tls_key_file = {tls_key}
smtpd_tls_security_level = may
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{ports['auth']}
smtpd_sender_login_maps = texthash:{pf}/etc/sender_login
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
virtual_mailbox_domains = {' '.join(domains)}
virtual_mailbox_maps = texthash:{pf}/etc/vmailbox
virtual_transport = lmtp:inet:127.0.0.1:{ports['lmtp']}
transport_maps = texthash:{pf}/etc/transport
default_transport = error:the school's test bed relays only to the lab's providers
milter_protocol = 6
milter_default_action = tempfail
smtpd_milters =
non_smtpd_milters =
""")
    submission = f"""  -o smtpd_tls_auth_only=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_sender_restrictions=reject_sender_login_mismatch
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_milters=inet:127.0.0.1:{ports['opendkim']}
  -o milter_macro_daemon_name=ORIGINATING
"""
    ps._write(pf / "etc/master.cf", ps._derive_master_cf() + f"""
127.0.0.1:{ports['smtp']} inet n - n - - smtpd
127.0.0.1:{ports['submission']} inet n - n - - smtpd
  -o syslog_name=postfix-school/submission
  -o smtpd_tls_security_level=encrypt
{submission}127.0.0.1:{ports['smtps']} inet n - n - - smtpd
  -o syslog_name=postfix-school/smtps
  -o smtpd_tls_wrappermode=yes
{submission}""")
    # ---- nginx: Thunderbird's autoconfig document, as Mozilla documents it for a domain's own web server
    from labmail.lab.web import autoconfig_xml

    www = work / "www"
    for where in ("mail", ".well-known/autoconfig/mail"):
        ps._write(www / where / "config-v1.1.xml", autoconfig_xml(MAIL_HOST))
    ng = work / "nginx"
    ps._write(ng / "nginx.conf", f"""pid {ng}/nginx.pid;
error_log {work}/log/nginx.log;
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log {work}/log/nginx-access.log;
    client_body_temp_path {ng}/body; proxy_temp_path {ng}/proxy; fastcgi_temp_path {ng}/fastcgi;
    uwsgi_temp_path {ng}/uwsgi; scgi_temp_path {ng}/scgi;
    types {{ text/xml xml; }}
    server {{
        listen 127.0.0.1:{ports['https']} ssl;
        server_name {' '.join(web_names) or '_'};
        ssl_certificate {tls_cert};
        ssl_certificate_key {tls_key};
        root {www};
        location / {{ try_files $uri =404; }}
    }}
}}
""")
    conf["paths"]["nginx_conf"] = str(ng / "nginx.conf")
    conf["paths"].update(postfix_school=str(pf / "etc"), postfix_provider=str(work / "postfix-provider/etc"),
                         dovecot_conf=str(dv / "dovecot.conf"), named_conf=str(nd / "named.conf"),
                         opendkim_conf=str(od / "opendkim.conf"))
    for what, cmd in (("postfix check", ["postfix", "-c", pf / "etc", "check"]),
                      ("opendkim -n", ["opendkim", "-n", "-x", od / "opendkim.conf"]),
                      ("doveconf", ["doveconf", "-n", "-c", dv / "dovecot.conf"])):
        r = ps._run(cmd)
        if r.returncode:
            raise RuntimeError(f"{what}: {r.stdout}{r.stderr}")
    ps._write(work / "conf.json", json.dumps(conf, indent=2), 0o600)
    return school


def start(school: School, timeout: float = 60.0) -> None:
    """Start BIND, OpenDKIM, Postfix and Dovecot; return once each answers."""
    work, conf = school.work, school.conf
    deadline = time.monotonic() + timeout
    ps._spawn(work, "named", ["/usr/sbin/named", "-f", "-4", "-c", conf["paths"]["named_conf"]])
    ps._spawn(work, "opendkim", ["/usr/sbin/opendkim", "-f", "-x", conf["paths"]["opendkim_conf"]])
    ps._spawn(work, "dovecot", ["/usr/sbin/dovecot", "-F", "-c", conf["paths"]["dovecot_conf"]])
    ps._spawn(work, "nginx", ["/usr/sbin/nginx", "-c", conf["paths"]["nginx_conf"], "-g", "daemon off;"])
    r = ps._postfix(conf["paths"]["postfix_school"], "start")
    if r.returncode:
        ps.print_logs(work)
        raise RuntimeError(f"postfix start: {r.stdout}{r.stderr}")
    p = school.ports
    ctx = ps.tls_context(conf)

    def dns_answers() -> bool:
        import dns.message
        import dns.query

        try:
            return bool(dns.query.udp(dns.message.make_query(f"{PARENT}.", "SOA"), "127.0.0.1", port=p["dns"],
                                      timeout=1).answer)
        except Exception:
            return False

    for what, ready in (("dns", dns_answers), ("opendkim", lambda: ps._tcp_open(p["opendkim"])),
                        ("auth", lambda: ps._tcp_open(p["auth"])), ("smtp", lambda: ps._smtp_greets(p["smtp"])),
                        ("submission", lambda: ps._smtp_greets(p["submission"])),
                        ("imaps", lambda: ps._imaps_greets(p["imaps"], ctx)), ("https", lambda: ps._tcp_open(p["https"]))):
        ps._wait(what, ready, deadline, work)


def leftovers(school: School) -> dict:
    return ps.leftovers(school.work)
