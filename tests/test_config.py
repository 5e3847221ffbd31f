"""Identity and configuration: the first-name rule, validation messages, file and environment precedence."""

from __future__ import annotations

import stat

import pytest

from labmail import config
from labmail.errors import ConfigError, CourseError, InvalidName, LabError, MailError
from labmail.i18n import set_language


@pytest.mark.parametrize("first_name,label", [
    ("Jean-Émile", "jean-emile"),
    ("  Zoë ", "zoe"),
    ("François", "francois"),
    ("Anne Sophie", "anne-sophie"),
    ("Anne  -  Sophie", "anne-sophie"),
    ("Chloé_Marie", "chloe-marie"),
    ("D'Artagnan", "d-artagnan"),
    ("Œdipe", "oedipe"),
    ("Jürgen", "jurgen"),
    ("Straße", "strasse"),
    ("Łukasz", "lukasz"),
    ("Ana3", "ana3"),
    ("ＪＥＡＮ", "jean"),  # full-width letters are folded by NFKD
])
def test_first_name_to_label(first_name, label):
    assert config.to_label(first_name) == label


@pytest.mark.parametrize("bad,expected_hint", [
    ("", "vide"),
    ("   ", "vide"),
    ("jean..pierre", "point"),
    ("jean.labmail.cloud", "« jean »"),
    ("x" * 64, "63"),
    ("-jean", "tiret"),
    ("jean-", "« jean »"),
    ("1234", "aucune lettre"),
    ("12-34", "aucune lettre"),
    ("李", "transcription"),
    ("jean@home", "@"),
    ("émile!", "!"),
])
def test_invalid_first_names_say_what_to_type(bad, expected_hint):
    with pytest.raises(InvalidName) as info:
        config.to_label(bad)
    assert expected_hint in str(info.value)


def test_repeated_hyphens_collapse_but_raw_idn_labels_are_refused():
    assert config.to_label("ab--cd") == "ab-cd"
    with pytest.raises(InvalidName, match="« ab-cd »"):
        config.check_label("ab--cd")
    with pytest.raises(InvalidName, match="internationalisés"):
        config.check_label("xn--jean")


def test_messages_exist_in_english():
    set_language("en")
    with pytest.raises(InvalidName) as info:
        config.to_label("jean..pierre")
    assert "single word" in str(info.value)
    assert "un seul mot" in info.value.message("fr")


def test_non_text_first_name():
    with pytest.raises(InvalidName, match="du texte"):
        config.to_label(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("name,ok", [
    ("Mailcow.LabMail.cloud.", "mailcow.labmail.cloud"),
    ("labmail.cloud", "labmail.cloud"),
])
def test_check_domain(name, ok):
    assert config.check_domain(name) == ok


@pytest.mark.parametrize("name", ["labmail..cloud", ".labmail.cloud", "", "a_b.cloud", "-x.cloud", "x" * 64 + ".cloud"])
def test_check_domain_rejects(name):
    with pytest.raises(InvalidName):
        config.check_domain(name)


def test_defaults():
    cfg = config.load()
    assert (cfg.world, cfg.parent_domain, cfg.mail_host, cfg.lang, cfg.prenom) == (
        "local", "labmail.cloud", "mailcow.labmail.cloud", "fr", None)
    with pytest.raises(ConfigError, match="set_student"):
        cfg.domain


def test_precedence_system_user_env(isolated_config, monkeypatch):
    (isolated_config / "system.toml").write_text('parent_domain = "ecole.cloud"\nprenom = "Sys"\nworld = "live"\n')
    assert config.load().parent_domain == "ecole.cloud"
    config.save(prenom="Jean-Émile")
    cfg = config.load()
    assert (cfg.prenom, cfg.parent_domain, cfg.world) == ("jean-emile", "ecole.cloud", "live")
    assert cfg.domain == "jean-emile.ecole.cloud"
    monkeypatch.setenv("LABMAIL_PRENOM", "Milou")
    monkeypatch.setenv("LABMAIL_WORLD", "local")
    cfg = config.load()
    assert (cfg.prenom, cfg.world) == ("milou", "local")


def test_set_student_writes_a_private_file_atomically(isolated_config):
    cfg = config.set_student("Zoë")
    assert cfg.domain == "zoe.labmail.cloud"
    path = isolated_config / "config.toml"
    assert 'prenom = "zoe"' in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in isolated_config.iterdir() if p.name.endswith(".tmp")]


def test_invalid_value_is_not_written(isolated_config):
    config.set_student("Zoë")
    before = (isolated_config / "config.toml").read_text()
    with pytest.raises(ConfigError):
        config.save(world="mars")
    with pytest.raises(InvalidName):
        config.set_student("a..b")
    assert (isolated_config / "config.toml").read_text() == before


def test_unknown_key_and_broken_file(isolated_config):
    with pytest.raises(ConfigError, match="inconnue"):
        config.save(colour="blue")
    (isolated_config / "config.toml").write_text("prenom = \n")
    with pytest.raises(ConfigError, match="illisible"):
        config.load()
    (isolated_config / "config.toml").write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="colour"):
        config.load()


@pytest.mark.parametrize("value,expected", [
    ("203.0.113.53", ("203.0.113.53", 53)),
    ("203.0.113.53:5353", ("203.0.113.53", 5353)),
    ("[2001:db8::53]:5353", ("2001:db8::53", 5353)),
    ("2001:db8::53", ("2001:db8::53", 53)),
    ("NS1.labmail.cloud", ("ns1.labmail.cloud", 53)),
])
def test_parse_hostport(value, expected):
    assert config.parse_hostport(value) == expected


@pytest.mark.parametrize("key,value", [("dns_server", "ns1.labmail.cloud:99999"), ("resolver", "bad..host"),
                                       ("dns_port", "abc"), ("lang", "de")])
def test_bad_values_in_environment(monkeypatch, key, value):
    monkeypatch.setenv(f"LABMAIL_{key.upper()}", value)
    with pytest.raises(ConfigError):
        config.load()


def test_language_from_environment(monkeypatch):
    from labmail.i18n import get_language

    monkeypatch.setenv("COURSE_LANG", "en_US")
    assert get_language() == "en"
    monkeypatch.setenv("LABMAIL_LANG", "fr")
    assert get_language() == "fr"


def test_live_credentials_come_from_a_protected_file(tmp_path):
    import json

    from labmail import lab, mail
    from labmail.config import Config
    from labmail.world import World

    creds = tmp_path / "classe.json"
    creds.write_text(json.dumps({"api_key": "K-123", "passwords": {"Tintin@jean.ecole.cloud": "s3cret"}}))
    creds.chmod(0o644)
    cfg = Config(prenom="jean", world="live", parent_domain="ecole.cloud", state_dir=tmp_path / "st", credentials_file=creds)
    world = World("live", cfg, ("127.0.0.1", 53), (("127.0.0.1", 53),))
    with pytest.raises(ConfigError, match="chmod 600"):
        mail.stored_password("tintin@jean.ecole.cloud", world=world)
    creds.chmod(0o600)
    assert mail.stored_password("tintin@jean.ecole.cloud", world=world) == "s3cret"
    assert lab.api_key(cfg) == "K-123"
    with pytest.raises(MailError, match="getpass"):
        mail.stored_password("milou@jean.ecole.cloud", world=world)
    creds.write_text("{pas du json")
    with pytest.raises(ConfigError, match="JSON"):
        lab.api_key(cfg)
    with pytest.raises(LabError, match="credentials_file"):
        lab.api_key(Config(prenom="jean", world="live", state_dir=tmp_path / "st"))
    with pytest.raises(LabError, match="n'existe que dans le lab intégré"):
        lab.spoof("direction@jean.ecole.cloud", "x@gmail.test", config=cfg)
    from labmail import course

    with pytest.raises(CourseError, match="Monde live : indiquez vos vraies boîtes externes"):
        course.find("jean@gmail.test", "Bonjour", config=cfg)  # the student's real mailboxes, once configured


@pytest.mark.parametrize("value", ["", "   ", "jean.pierre"])
def test_cli_refuses_an_empty_or_impossible_first_name_and_keeps_the_file(isolated_config, value):
    """`labmail config --prenom ""` used to write prenom = "None" and exit 0."""
    import os
    import subprocess
    import sys

    from labmail import config

    config.set_student("Zoé")
    before = config.user_config_path().read_text()
    out = subprocess.run([sys.executable, "-m", "labmail.cli", "config", "--prenom", value], capture_output=True,
                         text=True, env=dict(os.environ), timeout=60)
    assert out.returncode == 2 and ("vide" in out.stderr or "point" in out.stderr), out.stderr
    assert config.user_config_path().read_text() == before and config.load().prenom == "zoe"
    assert "None" not in before


def test_a_label_with_a_final_line_feed_is_refused():
    """The label pattern is matched whole (fullmatch): "$" would accept "jean\n"."""
    with pytest.raises(config.InvalidName):
        config.check_label("jean\n")


def test_live_world_with_a_dns_server_name_that_does_not_resolve_says_what_to_do(monkeypatch):
    import dns.name
    import dns.resolver

    from labmail.world import current

    def nxdomain(*_args, **_kwargs):
        raise dns.resolver.NXDOMAIN(qnames=[dns.name.from_text("ns1.nulle-part.example")])

    monkeypatch.setattr(dns.resolver, "resolve", nxdomain)
    cfg = config.Config(prenom="jean", world="live", dns_server="ns1.nulle-part.example:53", resolver="127.0.0.1:53")
    with pytest.raises(ConfigError, match="ne se résout pas"):
        current(cfg)


def test_the_live_world_can_name_other_ports_than_the_standard_ones(isolated_config):
    from labmail.config import Config, port_map
    from labmail.world import World

    assert port_map("587=10587, 993=10993") == {587: 10587, 993: 10993} and port_map(None) == {}
    world = World("live", Config(world="live", ports="587=10587,53=5353"), ("127.0.0.1", 5353), ())
    assert world.connect_address("mail.ecole.fr", 587) == ("mail.ecole.fr", 10587)
    assert world.connect_address("mail.ecole.fr", 993) == ("mail.ecole.fr", 993)  # not named: the standard port
    assert world.endpoint("192.0.2.53", 53) == ("192.0.2.53", 5353)
    for bad in ("587:10587", "587=", "x=1", "587=70000"):
        with pytest.raises(ConfigError, match="port=port"):
            config.save(ports=bad)
