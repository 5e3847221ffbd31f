"""Who the student is and which world labmail talks to.

Values come, lowest priority first, from:

1. built-in defaults (parent domain ``labmail.cloud``, mail host
   ``mailcow.labmail.cloud``, world ``local``, language ``fr``);
2. the system file ``/etc/labmail/config.toml`` (or ``$LABMAIL_SYSTEM_CONFIG``),
   where a JupyterHub admin presets the class values;
3. the user file ``~/.config/labmail/config.toml`` (``$XDG_CONFIG_HOME`` is
   honoured, or ``$LABMAIL_CONFIG`` names the file), written by
   :func:`set_student` and :func:`save`;
4. environment variables ``LABMAIL_<KEY>`` (e.g. ``LABMAIL_PRENOM``,
   ``LABMAIL_WORLD``, ``LABMAIL_PARENT_DOMAIN``), which a hub spawner can set.

The files are flat TOML tables; keys are the field names of :class:`Config`::

    prenom = "jean-emile"
    world = "local"                 # or "live"
    parent_domain = "labmail.cloud"
    mail_host = "mailcow.labmail.cloud"
    lang = "fr"
    state_dir = "~/.local/share/labmail/lab"   # the embedded lab's state
    dns_port = 0                    # 0 = the lab picks a free port once, then keeps it
    # live world only:
    resolver = "203.0.113.53"       # recursive resolver, "ip" or "ip:port"
    dns_server = "ns1.labmail.cloud:53"   # authoritative server accepting RFC 2136 updates
    tsig_key_name = "jean-emile.labmail.cloud."
    tsig_algorithm = "hmac-sha256"
    tsig_secret_file = "~/.config/labmail/tsig.key"   # the secret never goes in a notebook
    credentials_file = "~/.config/labmail/credentials.json"   # from the instructor, 0600
    ca_file = "/etc/ssl/ecole-ca.pem"       # the school's CA, if its servers' certificates are not public
    gmail_address = "jean.dupont@gmail.com"  # the student's own external mailboxes (steps 7, 8, 12)
    outlook_address = "jean.dupont@ecole.fr"
    imap_gmail = "imap.gmail.com:993"        # where they are read, TLS from the first byte (defaults shown)
    imap_outlook = "outlook.office365.com:993"
    ports = "587=10587,993=10993"   # rarely: the school's servers on other ports than the standard ones
    # embedded lab only: zones its resolver asks a real server for (a school's BIND joined to the lab's "Internet")
    lab_forward = "ecole.test=192.0.2.53:53"

The TSIG secret itself is read from ``tsig_secret_file`` or from the
``LABMAIL_TSIG_SECRET`` environment variable; it is never written by labmail.

A first name becomes a DNS label by :func:`to_label`:

>>> to_label("Jean-Émile")
'jean-emile'
>>> to_label("Anne Sophie")
'anne-sophie'
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, InvalidName

WORLDS = ("local", "live")
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")  # .fullmatch only
_SPECIAL = {"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "đ": "d", "ł": "l", "þ": "th", "ð": "d", "ı": "i"}


def to_label(first_name: str) -> str:
    """Turn a first name into the DNS label of the student's subdomain.

    The rule: lower case; accents removed (``é`` → ``e``, ``ç`` → ``c``,
    ``œ`` → ``oe``); spaces, underscores and apostrophes become hyphens;
    repeated hyphens collapse. The result must be a valid host label
    (RFC 1123): letters, digits and hyphens, at most 63 characters, not
    starting or ending with a hyphen, not only digits, and without ``--`` in
    3rd-4th position (reserved for IDN, RFC 5891).

    Raises :class:`~labmail.errors.InvalidName` with a message that says what
    to type instead.

    >>> to_label("  Zoë ")
    'zoe'
    >>> to_label("François")
    'francois'
    """
    if not isinstance(first_name, str):
        raise InvalidName(
            f"Le prénom doit être du texte, pas {type(first_name).__name__}. Exemple : \"Jean-Émile\".",
            f"The first name must be text, not {type(first_name).__name__}. Example: \"Jean-Émile\".",
        )
    raw = first_name.strip()
    if not raw:
        raise InvalidName(
            "Le prénom est vide : tapez votre prénom, par exemple \"Jean-Émile\".",
            "The first name is empty: type your first name, for example \"Jean-Émile\".",
        )
    if "." in raw:
        guess = raw.split(".")[0]
        raise InvalidName(
            f"« {raw} » contient un point : il faut un seul mot, sans point (le domaine "
            f"« .labmail.cloud » est ajouté pour vous). Tapez par exemple « {guess} ».",
            f"\"{raw}\" contains a dot: type a single word without dots (the \".labmail.cloud\" "
            f"domain is added for you). For example \"{guess}\".",
        )
    text = raw.lower()
    text = "".join(_SPECIAL.get(ch, ch) for ch in text)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = re.sub(r"[\s_'’`]+", "-", text)
    text = re.sub(r"-{2,}", "-", text)
    bad = sorted({ch for ch in text if not (ch.isascii() and (ch.isalnum() or ch == "-"))})
    if bad:
        shown = " ".join(bad)
        raise InvalidName(
            f"« {raw} » contient des caractères impossibles dans un nom DNS : {shown}. "
            "Utilisez seulement des lettres (les accents sont retirés), des chiffres et des tirets ; "
            "pour un prénom dans un autre alphabet, tapez sa transcription en lettres latines.",
            f"\"{raw}\" contains characters that cannot be in a DNS name: {shown}. "
            "Use only letters (accents are removed), digits and hyphens; for a name in another "
            "script, type its Latin transliteration.",
            rfc="RFC 1123 §2.1",
        )
    return check_label(text, original=raw)


def check_label(label: str, *, original: str | None = None) -> str:
    """Check one DNS label (already lower case ASCII) and return it; raise InvalidName otherwise."""
    shown = original if original is not None else label
    stripped = label.strip("-")
    if not label:
        raise InvalidName(
            "Le nom est vide : il faut au moins une lettre.",
            "The name is empty: at least one letter is needed.",
        )
    if len(label) > 63:
        raise InvalidName(
            f"« {shown} » donne un nom de {len(label)} caractères ; un label DNS en compte 63 au plus. "
            f"Raccourcissez-le, par exemple « {stripped[:20].strip('-')} ».",
            f"\"{shown}\" gives a {len(label)}-character name; a DNS label has at most 63. "
            f"Shorten it, for example \"{stripped[:20].strip('-')}\".",
            rfc="RFC 1035 §2.3.4",
        )
    if label.startswith("-") or label.endswith("-"):
        hint = stripped or "jean"
        raise InvalidName(
            f"« {shown} » commence ou finit par un tiret, ce qui est interdit dans un nom DNS. Tapez « {hint} ».",
            f"\"{shown}\" starts or ends with a hyphen, which a DNS name cannot. Type \"{hint}\".",
            rfc="RFC 1123 §2.1",
        )
    if label.isdigit() or not any(ch.isalpha() for ch in label):
        raise InvalidName(
            f"« {shown} » ne contient aucune lettre : un prénom en a au moins une (un nom fait "
            "seulement de chiffres ressemble à une adresse). Tapez votre prénom, par exemple « jean ».",
            f"\"{shown}\" has no letter: a first name has at least one (a name made only of digits "
            "looks like an address). Type your first name, for example \"jean\".",
        )
    if len(label) >= 4 and label[2:4] == "--":
        raise InvalidName(
            f"« {shown} » a deux tirets en 3e et 4e position : c'est réservé aux noms internationalisés "
            f"(« xn-- »). Tapez-le avec un seul tiret : « {label[:2]}-{label[4:]} ».",
            f"\"{shown}\" has two hyphens in 3rd and 4th position, reserved for internationalized names "
            f"(\"xn--\"). Type it with one hyphen: \"{label[:2]}-{label[4:]}\".",
            rfc="RFC 5891 §4.2.3.1",
        )
    if not _LABEL_RE.fullmatch(label):
        raise InvalidName(
            f"« {shown} » n'est pas un label DNS valide : lettres, chiffres et tirets seulement.",
            f"\"{shown}\" is not a valid DNS label: letters, digits and hyphens only.",
            rfc="RFC 1123 §2.1",
        )
    return label


def check_domain(name: str, *, what: str = "domaine") -> str:
    """Validate a host or domain name; return it in lower case without the final dot.

    >>> check_domain("Mailcow.LabMail.cloud.")
    'mailcow.labmail.cloud'
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidName(
            f"Le {what} est vide : tapez un nom comme « labmail.cloud ».",
            f"The {what} is empty: type a name such as \"labmail.cloud\".",
        )
    text = name.strip().lower()
    if text.endswith("."):
        text = text[:-1]
    if ".." in text or text.startswith("."):
        raise InvalidName(
            f"« {name} » contient un label vide (deux points qui se suivent ou un point au début). "
            f"Retirez le point en trop : « {re.sub(r'[.]+', '.', text).strip('.')} ».",
            f"\"{name}\" contains an empty label (two dots in a row or a leading dot). "
            f"Remove the extra dot: \"{re.sub(r'[.]+', '.', text).strip('.')}\".",
            rfc="RFC 1035 §3.1",
        )
    if len(text) > 253:
        raise InvalidName(
            f"« {name} » dépasse 253 caractères, la longueur maximale d'un nom DNS.",
            f"\"{name}\" is longer than 253 characters, the maximum for a DNS name.",
            rfc="RFC 1035 §2.3.4",
        )
    for label in text.split("."):
        try:
            check_label(label)
        except InvalidName as exc:
            raise InvalidName(
                f"Le {what} « {name} » n'est pas valide : {exc.text.fr}",
                f"The {what} \"{name}\" is not valid: {exc.text.en}",
                rfc=exc.rfc,
            ) from None
    return text


def is_ip_address(text: str) -> bool:
    """True if ``text`` is an IPv4 or IPv6 address (not a name)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def port_map(value: str | None) -> dict[int, int]:
    """``"587=10587,993=10993"`` → {587: 10587, 993: 10993}: where the live world's servers listen instead of the
    standard ports (a test bed on loopback, or a school with unusual ports).

    >>> port_map("587=10587, 993=10993")
    {587: 10587, 993: 10993}
    """
    out: dict[int, int] = {}
    for item in (value or "").replace(" ", "").split(","):
        if not item:
            continue
        standard, _, actual = item.partition("=")
        if not (standard.isdigit() and actual.isdigit() and 0 < int(standard) < 65536 and 0 < int(actual) < 65536):
            raise ConfigError(f"ports = « {value} » : des paires port=port séparées par des virgules, par exemple "
                              "« 587=10587,993=10993 ».", f"ports = \"{value}\": port=port pairs separated by commas, "
                              "e.g. \"587=10587,993=10993\".")
        out[int(standard)] = int(actual)
    return out


def forward_zones(value: str | None) -> dict[str, tuple[str, int]]:
    """``"ecole.test=192.0.2.53:53, 2.0.192.in-addr.arpa=192.0.2.53"`` → {zone: (host, port)}: zones the embedded
    lab's resolver asks another DNS server for — a real school's BIND joined to the lab's simulated Internet, so
    that the lab's Gmail and Outlook can check mail sent by a real Postfix.

    >>> forward_zones("ecole.test=127.0.0.1:5353")
    {'ecole.test.': ('127.0.0.1', 5353)}
    """
    out: dict[str, tuple[str, int]] = {}
    for item in (value or "").replace(" ", "").split(","):
        if not item:
            continue
        zone, _, server = item.partition("=")
        name = zone.strip().rstrip(".").lower()
        if not re.fullmatch(r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", name):
            name = ""
        if not name or not server:
            raise ConfigError(f"lab_forward = « {value} » : des paires zone=serveur[:port] séparées par des virgules, "
                              "par exemple « ecole.test=192.0.2.53:53 ».", f"lab_forward = \"{value}\": zone=server[:port] "
                              "pairs separated by commas, e.g. \"ecole.test=192.0.2.53:53\".")
        host, port = parse_hostport(server)
        if not is_ip_address(host):
            raise ConfigError(f"lab_forward : « {host} » doit être une adresse IP (le lab ne résout pas ce nom).",
                              f"lab_forward: \"{host}\" must be an IP address (the lab does not resolve that name).")
        out[name + "."] = (host, port)
    return out


def parse_hostport(value: str, default_port: int = 53) -> tuple[str, int]:
    """Split ``"host"``, ``"host:port"``, ``"[2001:db8::1]:port"`` or a bare IPv6 address.

    >>> parse_hostport("203.0.113.53:5353")
    ('203.0.113.53', 5353)
    >>> parse_hostport("2001:db8::53")
    ('2001:db8::53', 53)
    """
    text = value.strip()
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(
            f"« {value} » : le port doit être un nombre entre 1 et 65535.",
            f"\"{value}\": the port must be a number from 1 to 65535.",
        )
    if not is_ip_address(host):
        host = check_domain(host, what="serveur")
    return host, int(port) if port else default_port


@dataclass(frozen=True)
class Config:
    """The effective configuration. Build it with :func:`load`."""

    prenom: str | None = None
    world: str = "local"
    parent_domain: str = "labmail.cloud"
    mail_host: str = "mailcow.labmail.cloud"
    lang: str = "fr"
    state_dir: Path = dataclasses.field(default_factory=lambda: _default_state_dir())
    dns_port: int = 0
    resolver: str | None = None
    dns_server: str | None = None
    tsig_key_name: str | None = None
    tsig_algorithm: str = "hmac-sha256"
    tsig_secret_file: Path | None = None
    credentials_file: Path | None = None
    ca_file: Path | None = None
    gmail_address: str | None = None
    outlook_address: str | None = None
    imap_gmail: str = "imap.gmail.com:993"
    imap_outlook: str = "outlook.office365.com:993"
    ports: str | None = None
    lab_forward: str | None = None

    @property
    def domain(self) -> str:
        """The student's mail domain, e.g. ``jean.labmail.cloud``."""
        if not self.prenom:
            raise ConfigError(
                "Votre prénom n'est pas encore configuré. Dans un notebook : "
                "labmail.config.set_student(\"Votre prénom\") ; en ligne de commande : "
                "labmail config --prenom \"Votre prénom\".",
                "Your first name is not configured yet. In a notebook: "
                "labmail.config.set_student(\"Your first name\"); on the command line: "
                "labmail config --prenom \"Your first name\".",
            )
        return f"{self.prenom}.{self.parent_domain}"

    def public_dict(self) -> dict[str, object]:
        """The values, for display (no secret is ever part of the configuration)."""
        return {f.name: (str(v) if isinstance(v, Path) else v) for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None}


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "labmail" / "lab"


def user_config_path() -> Path:
    """Where the user's configuration file is (it may not exist yet)."""
    if os.environ.get("LABMAIL_CONFIG"):
        return Path(os.environ["LABMAIL_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "labmail" / "config.toml"


def system_config_path() -> Path:
    return Path(os.environ.get("LABMAIL_SYSTEM_CONFIG", "/etc/labmail/config.toml"))


def _read_file(path: Path) -> dict[str, object]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"Le fichier de configuration {path} est illisible ({exc}). Corrigez-le ou supprimez-le.",
            f"The configuration file {path} cannot be read ({exc}). Fix it or delete it.",
        ) from None
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"{path} : clé(s) inconnue(s) {', '.join(unknown)}. Clés possibles : {', '.join(_FIELDS)}.",
            f"{path}: unknown key(s) {', '.join(unknown)}. Known keys: {', '.join(_FIELDS)}.",
        )
    return data


def _coerce(values: dict[str, object]) -> Config:
    clean: dict[str, object] = {}
    for key, value in values.items():
        if value is None or value == "":
            continue
        if key in ("state_dir", "tsig_secret_file", "credentials_file", "ca_file"):
            clean[key] = Path(str(value)).expanduser()
        elif key == "dns_port":
            try:
                port = int(str(value))
            except (TypeError, ValueError):
                port = -1
            if not 0 <= port < 65536:
                raise ConfigError(
                    f"dns_port = « {value} » : un numéro de port entre 1024 et 65535 (0 = automatique).",
                    f"dns_port = \"{value}\": a port number from 1024 to 65535 (0 = automatic).",
                )
            clean[key] = port
        else:
            clean[key] = str(value).strip()
    if "prenom" in clean:
        clean["prenom"] = to_label(str(clean["prenom"]))
    for key in ("parent_domain", "mail_host"):
        if key in clean:
            clean[key] = check_domain(str(clean[key]), what=key)
    if clean.get("world", "local") not in WORLDS:
        raise ConfigError(
            f"world = « {clean['world']} » : choisissez « local » (le lab intégré) ou « live » (les serveurs de la classe).",
            f"world = \"{clean['world']}\": choose \"local\" (the embedded lab) or \"live\" (the class servers).",
        )
    if clean.get("lang", "fr") not in ("fr", "en"):
        raise ConfigError(
            f"lang = « {clean['lang']} » : choisissez « fr » ou « en ».",
            f"lang = \"{clean['lang']}\": choose \"fr\" or \"en\".",
        )
    for key in ("resolver", "dns_server", "imap_gmail", "imap_outlook"):
        if key in clean:
            parse_hostport(str(clean[key]))
    if "ports" in clean:
        port_map(str(clean["ports"]))
    if "lab_forward" in clean:
        forward_zones(str(clean["lab_forward"]))
    for key in ("gmail_address", "outlook_address"):
        if key in clean and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", str(clean[key])):
            raise ConfigError(f"{key} = « {clean[key]} » : une adresse de courriel complète, par exemple "
                              "« jean.dupont@gmail.com ».", f"{key} = \"{clean[key]}\": a full e-mail address, e.g. "
                              "\"jean.dupont@gmail.com\".")
    return Config(**clean)  # type: ignore[arg-type]


def load() -> Config:
    """Read the configuration (defaults < system file < user file < environment)."""
    values: dict[str, object] = {}
    values.update(_read_file(system_config_path()))
    values.update(_read_file(user_config_path()))
    for key in _FIELDS:
        env = os.environ.get(f"LABMAIL_{key.upper()}")
        if env is not None and env.strip():
            values[key] = env
    return _coerce(values)


def _toml_value(value: object) -> str:
    if isinstance(value, int):
        return str(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def save(**changes: object) -> Config:
    """Write ``changes`` into the user's configuration file and return the new effective config.

    The file is replaced atomically; values that fail validation are not written.
    """
    unknown = sorted(set(changes) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"Clé(s) inconnue(s) {', '.join(unknown)}. Clés possibles : {', '.join(_FIELDS)}.",
            f"Unknown key(s) {', '.join(unknown)}. Known keys: {', '.join(_FIELDS)}.",
        )
    if changes.get("prenom") is not None:
        to_label(str(changes["prenom"]))  # an empty or impossible first name is an error, not "None" in the file
    path = user_config_path()
    current = _read_file(path)
    current.update({k: v for k, v in changes.items() if v is not None})
    checked = _coerce(current)  # validate before writing anything
    stored = {k: getattr(checked, k) if k == "prenom" else v for k, v in current.items()}
    stored = {k: v for k, v in stored.items() if v is not None and v != ""}
    from ._files import atomic_write_text

    lines = ["# labmail configuration (see labmail.config for the keys)"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in stored.items()]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return load()


def set_student(first_name: str) -> Config:
    """Record the student's first name (as a DNS label) in the user configuration.

    >>> cfg = set_student("Jean-Émile")   # doctest: +SKIP
    >>> cfg.domain                         # doctest: +SKIP
    'jean-emile.labmail.cloud'
    """
    return save(prenom=to_label(first_name))


def live_credentials(cfg: Config) -> dict:
    """The class credentials of the live world: ``credentials_file`` (JSON, mode 0600, from the instructor) with
    ``{"api_key": "…", "passwords": {"tintin@prenom.labmail.cloud": "…"}}``; empty if not configured."""
    import json

    if cfg.credentials_file is None:
        return {}
    path = Path(cfg.credentials_file)
    try:
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"{path} est lisible par d'autres : protégez-le (chmod 600 {path}).",
                              f"{path} is readable by others: protect it (chmod 600 {path}).")
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Impossible de lire credentials_file {path} ({exc.strerror}).",
                          f"Cannot read credentials_file {path} ({exc.strerror}).") from None
    except ValueError:
        raise ConfigError(f"{path} n'est pas du JSON valide : {{\"api_key\": …, \"passwords\": {{adresse: mot de passe}}}}.",
                          f"{path} is not valid JSON: {{\"api_key\": …, \"passwords\": {{address: password}}}}.") from None
    return data if isinstance(data, dict) else {}
