"""Thunderbird (Debian's package) against a throw-away lab: the real client path of the course, end to end.

Run: ``.venv/bin/python scripts/real_thunderbird.py OUT_DIR`` (``make gallery`` runs it for the README's screenshot;
``tests/test_real_clients.py`` runs it and checks ``OUT_DIR/results.json`` and the lab's log). It always re-runs
itself in a new network namespace where only loopback exists (``unshare --net``; ``--map-root-user`` when not
root): nothing Thunderbird tries (update or telemetry services, DNS queries for MX and SRV records) can leave the
machine, and no other user can reach its remote-control port.

What it does, as a student would, with the profile ``labmail thunderbird`` makes (:mod:`labmail.thunderbird`):

1. a lab in a temporary folder; tintin and milou get mailboxes (generated passwords, never printed); milou sends
   tintin a message (step 6, scenario 2);
2. Thunderbird without the lab's CA in its profile: its own discovery finds no usable configuration and a login to
   ``mailcow.labmail.cloud:993`` fails on the certificate — TLS really is verified;
3. the profile made by :func:`labmail.thunderbird.make_profile` (CA trusted, lab names and ports). Before the records
   of step 13, Thunderbird's discovery finds nothing, and the course's values typed by hand (step 6) log in. Once
   they are published, Thunderbird's own account setup code (``FindConfig`` → ``ConfigVerifier`` →
   ``CreateInBackend``, what the Account Hub runs after "Continuer") finds the configuration at
   ``https://autoconfig.<domain>/mail/config-v1.1.xml``, logs in over IMAP (SSL/TLS, 993), stores the password
   (``logins.json``, encrypted by NSS), fetches the INBOX; then sends a message to milou over SMTP (465), and the
   window showing the message is saved as ``thunderbird.png``;
4. Thunderbird quits and starts again: with nothing but its profile it logs in by itself and fetches the message
   milou sent in between.

Thunderbird is driven through Marionette (Gecko's remote protocol, ``--marionette``), in its chrome context; the
few lines of the protocol are below (length-prefixed JSON over TCP).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MARIONETTE_PORT = 2828
SUBJECT_IN, SUBJECT_OUT, SUBJECT_AFTER = "Réunion de service", "Re: Réunion de service", "Compte rendu"

FIND_AND_CREATE = r"""
const [email, password, realname, create] = arguments;
const { FindConfig } = ChromeUtils.importESModule("resource:///modules/accountcreation/FindConfig.sys.mjs");
const { AccountConfig } = ChromeUtils.importESModule("resource:///modules/accountcreation/AccountConfig.sys.mjs");
const { ConfigVerifier } = ChromeUtils.importESModule("resource:///modules/accountcreation/ConfigVerifier.sys.mjs");
const { CreateInBackend } = ChromeUtils.importESModule("resource:///modules/accountcreation/CreateInBackend.sys.mjs");
const domain = email.split("@")[1];
let config = null, found = null;
try {
  ({ value: config } = await FindConfig.parallelAutoDiscovery(domain, email, AbortSignal.timeout(60000), password).next());
} catch (e) { found = {error: String(e)}; }
if (config) {
  FindConfig.ewsifyConfig(config);
  AccountConfig.replaceVariables(config, realname, email, password);
  found = {source: config.source, subSource: config.subSource,
           incoming: {type: config.incoming.type, hostname: config.incoming.hostname, port: config.incoming.port,
                      socketType: config.incoming.socketType, username: config.incoming.username},
           outgoing: {hostname: config.outgoing.hostname, port: config.outgoing.port,
                      socketType: config.outgoing.socketType, username: config.outgoing.username},
           alternatives: config.incomingAlternatives.map(a => `${a.type} ${a.hostname}:${a.port} ${a.socketType}`)};
} else if (!found) {
  found = {error: "no configuration found"};
}
const win = Services.wm.getMostRecentWindow("mail:3pane");
if (!config) {  // the course's values, typed by hand (step 6): a login that must pass the certificate check
  config = new AccountConfig();
  config.incoming.type = "imap"; config.incoming.hostname = "mailcow.labmail.cloud"; config.incoming.port = 993;
  config.incoming.socketType = Ci.nsMsgSocketType.SSL; config.incoming.auth = Ci.nsMsgAuthMethod.passwordCleartext;
  config.incoming.username = email; config.incoming.password = password;
  config.outgoing.hostname = "mailcow.labmail.cloud"; config.outgoing.port = 465;
  config.outgoing.socketType = Ci.nsMsgSocketType.SSL; config.outgoing.auth = Ci.nsMsgAuthMethod.passwordCleartext;
  config.outgoing.username = email; config.outgoing.password = password;
  config.identity.realname = realname; config.identity.emailAddress = email;
}
config.rememberPassword = true;
// A certificate Thunderbird cannot verify opens its "Add Security Exception" dialog: noted, then cancelled, as a
// careful user does.
const certDialogs = [];
const watcher = {observe(win_) {
  win_.addEventListener("load", () => {
    if (win_.document.documentURI.includes("exceptionDialog")) {
      certDialogs.push(win_.arguments?.[0]?.location || "?");
      win_.setTimeout(() => win_.close(), 300);
    }
  }, {once: true});
}};
Services.ww.registerNotification(watcher);
let verified;
try {
  const verifier = new ConfigVerifier(win.msgWindow, AbortSignal.timeout(60000));
  await verifier.verifyConfig(config, config.source != AccountConfig.kSourceXML);
  verified = "ok";
} catch (e) { verified = String(e.message || e); }
finally { Services.ww.unregisterNotification(watcher); }
let key = null;
if (verified == "ok" && create) {
  const account = await CreateInBackend.createAccountInBackend(config);
  account.incomingServer.getNewMessages(account.incomingServer.rootFolder, win.msgWindow, null);
  key = account.key;
}
return {found, verified, key, certDialogs};
"""

INBOX = r"""
const [address] = arguments;
const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
const account = MailServices.accounts.accounts.find(a => a.defaultIdentity?.email == address);
if (!account) return null;
const inbox = account.incomingServer.rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox);
if (!inbox) return [];
const win = Services.wm.getMostRecentWindow("mail:3pane");
inbox.updateFolder(win.msgWindow);
return [...inbox.messages].map(h => ({subject: h.mime2DecodedSubject, author: h.mime2DecodedAuthor}));
"""

SEND = r"""
const [from, to, subject, body] = arguments;
const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
const account = MailServices.accounts.accounts.find(a => a.defaultIdentity?.email == from);
const fields = Cc["@mozilla.org/messengercompose/composefields;1"].createInstance(Ci.nsIMsgCompFields);
fields.from = `${account.defaultIdentity.fullName} <${from}>`; fields.to = to; fields.subject = subject;
fields.body = body;
const sender = Cc["@mozilla.org/messengercompose/send;1"].createInstance(Ci.nsIMsgSend);
return await new Promise(resolve => {
  const listener = {
    QueryInterface: ChromeUtils.generateQI(["nsIMsgSendListener"]),
    onStartSending() {}, onSendProgress() {}, onStatus() {}, onGetDraftFolderURI() {},
    onSendNotPerformed(id, status) { resolve("not performed " + status); },
    onTransportSecurityError(id, status, secInfo, location) { resolve("TLS error at " + location); },
    onStopSending(id, status) { resolve(Components.isSuccessCode(status) ? "ok" : "failed 0x" + (status >>> 0).toString(16)); },
  };
  sender.createAndSendMessage(null, account.defaultIdentity, account.key, fields, false, false,
                              Ci.nsIMsgSend.nsMsgDeliverNow, null, "text/plain", body, null, null, listener, null,
                              "", Ci.nsIMsgCompType.New);
});
"""

SHOW = r"""
const [address, subject] = arguments;
const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
const account = MailServices.accounts.accounts.find(a => a.defaultIdentity?.email == address);
const inbox = account.incomingServer.rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox);
const win = Services.wm.getMostRecentWindow("mail:3pane");
win.focus();
const tabmail = win.document.getElementById("tabmail");
for (const tab of [...tabmail.tabInfo].slice(1)) tabmail.closeTab(tab);
tabmail.switchToTab(0);
const about3Pane = tabmail.currentAbout3Pane;
about3Pane.displayFolder(inbox.URI);
await new Promise(r => win.setTimeout(r, 1000));
const view = about3Pane.gDBView;
for (let i = 0; i < view.rowCount; i++) {
  if (view.getMsgHdrAt(i).mime2DecodedSubject == subject) { about3Pane.threadTree.selectedIndex = i; break; }
}
await new Promise(r => win.setTimeout(r, 2500));
const shown = about3Pane.messageBrowser?.contentWindow?.gMessage;
return {title: win.document.title, selected: shown?.mime2DecodedSubject ?? null,
        body: about3Pane.messageBrowser?.contentDocument?.getElementById("messagepane")?.contentDocument?.body?.textContent ?? null};
"""


class Marionette:
    """The few commands of Gecko's Marionette protocol this script needs (``<length>:<json>`` over TCP)."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.ids = itertools.count(1)
        self._read()  # the greeting
        self.command("WebDriver:NewSession", {"capabilities": {}})
        self.command("WebDriver:SetTimeouts", {"script": 180_000})
        self.command("Marionette:SetContext", {"value": "chrome"})

    def _read(self):
        head = b""
        while not head.endswith(b":"):
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("Marionette closed the connection")
            head += chunk
        size, data = int(head[:-1]), b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("Marionette closed the connection")
            data += chunk
        return json.loads(data)

    def command(self, name: str, params: dict | None = None):
        mid = next(self.ids)
        body = json.dumps([0, mid, name, params or {}]).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body)
        while True:
            kind, rid, error, result = self._read()
            if kind == 1 and rid == mid:
                if error:
                    raise RuntimeError(f"{name}: {error.get('error')}: {error.get('message')}")
                return result

    def js(self, script: str, *args):
        return self.command("WebDriver:ExecuteScript", {"script": "return (async () => {" + script + "})()",
                                                        "args": list(args)})["value"]

    def wait(self, script: str, *args, until=bool, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(script, *args)
            if until(value) or time.monotonic() > deadline:
                return value
            time.sleep(0.5)

    def quit(self) -> None:
        with contextlib.suppress(Exception):
            self.command("Marionette:Quit", {"flags": ["eForceQuit"]})
        self.sock.close()


@contextlib.contextmanager
def thunderbird(binary: str, profile: Path, log: Path):
    """Thunderbird on a virtual screen (Xvfb), with Marionette; stopped (the whole process group) afterwards. Its
    home is a folder next to the profile: nothing is written in the user's own home."""
    command = ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", binary, "--marionette", "--remote-allow-system-access",
               "--profile", str(profile), "--no-remote"]
    home = profile.parent / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "MOZ_CRASHREPORTER_DISABLE": "1", "LANG": "fr_FR.UTF-8", "HOME": str(home),
           "XDG_CACHE_HOME": str(home / ".cache"), "XDG_CONFIG_HOME": str(home / ".config")}
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    driver = None
    try:
        driver = Marionette(MARIONETTE_PORT)
        driver.wait("return !!Services.wm.getMostRecentWindow('mail:3pane')?.gTabmail?.currentAbout3Pane")
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _loopback_up() -> None:
    """Bring ``lo`` up in a fresh network namespace (what ``ip link set lo up`` does)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, siocgifflags, request)[:18])[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH", b"lo", flags | iff_up))


def run(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("thunderbird")
    if not binary or not shutil.which("xvfb-run"):
        raise SystemExit("thunderbird and xvfb-run are needed (Debian: thunderbird xvfb xauth; make test installs them)")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        os.environ.update({"LABMAIL_STATE_DIR": str(base / "state"), "LABMAIL_CONFIG": str(base / "config.toml"),
                           "LABMAIL_SYSTEM_CONFIG": str(base / "system.toml"), "LABMAIL_PRENOM": "jean-emile"})
        from labmail import config, dns, lab, mail
        from labmail import thunderbird as tb

        cfg = config.load()
        status = lab.start(cfg)
        results: dict = {"state_dir": str(cfg.state_dir), "log": str(status.log_path), "marks": {}}
        try:
            tintin, milou = f"tintin@{cfg.domain}", f"milou@{cfg.domain}"
            passwords = {a: secrets.token_urlsafe(12) for a in (tintin, milou)}
            for address, password in passwords.items():
                lab.add_mailbox(address, password, config=cfg)
            sent = mail.submit(milou, tintin, password=passwords[milou], message=mail.make_message(
                milou, tintin, SUBJECT_IN, "Bonjour Tintin,\n\nRéunion demain à 10 h.\n\nMilou", sender_name="Milou"))
            assert sent.accepted, sent.reply
            extra = {"marionette.port": MARIONETTE_PORT, "intl.locale.requested": "fr"}
            log = out / "thunderbird.log"

            # 2. without the lab's CA: nothing found over HTTPS, and the course's values fail on the certificate
            bare = tb.make_profile(base / "untrusted", config=cfg, extra_prefs=extra)
            subprocess.run(["certutil", "-D", "-n", tb.CA_NICKNAME, "-d", f"sql:{bare.path}"], check=True)
            results["marks"]["untrusted"] = _log_size(status.log_path)
            with thunderbird(binary, bare.path, log) as driver:
                results["untrusted"] = driver.js(FIND_AND_CREATE, tintin, passwords[tintin], "Tintin", False)

            # 3. the profile labmail makes. Before step 13's records: Thunderbird finds nothing by itself, the
            # course's values typed by hand (step 6) log in; after them: it finds everything alone, logs in,
            # fetches, sends
            profile = tb.make_profile(base / "profile", config=cfg, extra_prefs=extra)
            results["profile"] = {"ca_trusted": profile.ca_trusted, "prefs": {k: profile.prefs[k] for k in (
                "network.dns.localDomains", "network.socket.forcePort")}}
            results["marks"]["before"] = _log_size(status.log_path)
            with thunderbird(binary, profile.path, log) as driver:
                results["before"] = driver.js(FIND_AND_CREATE, tintin, passwords[tintin], "Tintin", False)
                results["marks"]["first"] = _log_size(status.log_path)
                panel = dns.ZonePanel(cfg.domain)
                for name, rtype, value in (("autoconfig", "CNAME", f"{cfg.mail_host}."),
                                           ("autodiscover", "CNAME", f"{cfg.mail_host}."),
                                           ("_autodiscover._tcp", "SRV", f"0 0 443 {cfg.mail_host}.")):
                    panel.add(name, rtype, value)
                results["setup"] = driver.js(FIND_AND_CREATE, tintin, passwords[tintin], "Tintin", True)
                results["inbox"] = driver.wait(INBOX, tintin, until=lambda v: v and any(
                    m["subject"] == SUBJECT_IN for m in v))
                results["send"] = driver.js(SEND, tintin, milou, SUBJECT_OUT, "Bien reçu, j'y serai.\r\n\r\nTintin\r\n")
                results["shown"] = driver.js(SHOW, tintin, SUBJECT_IN)
                png = driver.command("WebDriver:TakeScreenshot", {"full": False})["value"]
                (out / "thunderbird.png").write_bytes(base64.b64decode(png))
            results["milou_received"] = _wait_subject(mail, milou, passwords[milou], SUBJECT_OUT)

            # 4. a second start: the profile alone (stored password) logs in and fetches what came in between
            sent = mail.submit(milou, tintin, password=passwords[milou], message=mail.make_message(
                milou, tintin, SUBJECT_AFTER, "Voici le compte rendu.\n\nMilou", sender_name="Milou"))
            assert sent.accepted, sent.reply
            results["marks"]["second"] = _log_size(status.log_path)
            with thunderbird(binary, profile.path, log) as driver:
                results["inbox_after_restart"] = driver.wait(INBOX, tintin, until=lambda v: v and any(
                    m["subject"] == SUBJECT_AFTER for m in v), timeout=150)  # a cold start on a loaded machine (CI)
            stored = json.loads((profile.path / "logins.json").read_text())
            results["logins"] = [{"hostname": e["hostname"], "encrypted": _sdr_blob(e["encryptedPassword"])}
                                 for e in stored["logins"]]
            results["password_in_clear_in_profile"] = any(_contains(p, passwords.values()) for p in
                                                          profile.path.rglob("*") if p.is_file())
            results["ports"] = {str(k): v for k, v in status.endpoints.items()}
            results["log_text"] = status.log_path.read_text(encoding="utf-8", errors="replace")
        finally:
            lab.stop(cfg)
    (out / "results.json").write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")
    return results


def _sdr_blob(value: str) -> bool:
    """Is this what NSS's SDR writes: base64 of a DER SEQUENCE (key id, algorithm, ciphertext)?"""
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        return False
    return len(raw) > 32 and raw[0] == 0x30


def _log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _wait_subject(mail, address: str, password: str, subject: str, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(m.subject == subject for m in mail.imap(address, password=password)):
            return True
        time.sleep(0.5)
    return False


def _contains(path: Path, secrets_) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return any(s.encode() in data for s in secrets_)


def main(argv: list[str]) -> int:
    if "--inside-netns" not in argv:
        # Always in a network namespace of its own: nothing leaves the machine, and no other user of the machine can
        # reach Thunderbird's remote-control port (Marionette runs privileged code and has no password).
        args = [a for a in argv if a != "--netns"]
        out = Path(args[0]) if args else ROOT / "build" / "thunderbird"
        unshare = ["unshare", "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
        try:
            return subprocess.run([*unshare, sys.executable, __file__, "--inside-netns", str(out.absolute())]).returncode
        except FileNotFoundError:
            raise SystemExit("unshare (util-linux) is needed: this script runs Thunderbird in its own network namespace")
    args = [a for a in argv if a != "--inside-netns"]
    out = Path(args[0])
    _loopback_up()
    results = run(out)
    print(json.dumps({k: v for k, v in results.items() if k not in ("log_text", "ports")}, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
