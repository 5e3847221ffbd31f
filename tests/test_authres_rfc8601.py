"""Authentication-Results by RFC 8601's ABNF (§2.2): comments and folding wherever the grammar allows them, the
examples of RFC 8601 Appendix B, and the real-world forms of providers (each header cites its public source).

The property-based test generates headers from a model, inserts comments and folds at every place the ABNF allows
CFWS, and checks that the parse is the model, whatever the comments and folds.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzing import examples
from labmail import headers
from labmail.headers import parse_authentication_results as parse


# --- the property: the parse does not depend on CFWS ---------------------------------------------------------------
_LDH = st.from_regex(r"[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,4})?", fullmatch=True)
_DOMAIN = st.lists(_LDH, min_size=2, max_size=4).map(".".join)
_TOKEN = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.+_!#$%&'*^`{|}~-]{0,12}", fullmatch=True)
_QUOTED = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
_CTEXT = st.text(st.sampled_from(list("abcdefghij XYZ0123456789.,;:=/@<>[]'\"-_!?")), max_size=12)


@st.composite
def _comment(draw, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["text", "text", "quoted-pair", "nested", "fold"] if depth < 2 else ["text", "quoted-pair", "fold"]))
        if kind == "text":
            parts.append(draw(_CTEXT))
        elif kind == "quoted-pair":
            parts.append("\\" + draw(st.sampled_from(list("()\\\"a;"))))
        elif kind == "nested":
            parts.append(draw(_comment(depth + 1)))
        else:
            parts.append("\r\n\t")
    return "(" + "".join(parts) + ")"


@st.composite
def _cfws(draw, required: bool = False) -> str:
    """[CFWS] (or CFWS when required): white space, folds and comments in any mix."""
    pieces = []
    for _ in range(draw(st.integers(1 if required else 0, 3))):
        pieces.append(draw(st.sampled_from([" ", "  ", "\t", "\r\n ", " \r\n\t", "COMMENT"])))
    out = "".join(draw(_comment()) if p == "COMMENT" else p for p in pieces)
    if required and not out.strip(" \t\r\n") and not out:
        out = " "
    return out


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def _model(draw):
    results = []
    for _ in range(draw(st.integers(0, 4))):
        method = draw(st.sampled_from(["spf", "dkim", "dmarc", "iprev", "auth", "arc", "x-local"]))
        version = draw(st.sampled_from([None, None, "1", "2"]))
        result = draw(st.sampled_from(list(headers.RESULTS.get(method, ("pass", "fail", "none")))))
        reason = draw(st.one_of(st.none(), _TOKEN, _QUOTED))
        props = []
        for _ in range(draw(st.integers(0, 3))):
            ptype = draw(st.sampled_from(["smtp", "header", "body", "policy"]))
            name = draw(st.sampled_from(["mailfrom", "helo", "d", "i", "s", "b", "from", "expired", "iprev", "auth"]))
            kind = draw(st.sampled_from(["token", "addr", "at-domain", "quoted"]))
            if kind == "token":
                value = draw(_TOKEN)
            elif kind == "addr":
                value = draw(_LDH) + "@" + draw(_DOMAIN)
            elif kind == "at-domain":
                value = "@" + draw(_DOMAIN)
            else:
                value = draw(_QUOTED)
            props.append((ptype, name, value, kind))
        results.append((method, version, result, reason, props))
    return draw(_DOMAIN), draw(st.sampled_from([None, "1"])), results


@st.composite
def _render(draw, model, with_cfws: bool):
    authserv, version, results = model
    c = (lambda required=False: draw(_cfws(required))) if with_cfws else (lambda required=False: " " if required else "")
    out = c() + authserv
    if version:
        out += c(True) + version
    if not results:
        return out + c() + ";" + c() + "none" + c()
    for method, mversion, result, reason, props in results:
        out += c() + ";" + c() + method
        if mversion:
            out += c() + "/" + c() + mversion
        out += c() + "=" + c() + result
        if reason is not None:
            value = reason if reason.isascii() and reason and all(ch.isalnum() or ch in ".+_!#$%&'*^`{|}~-" for ch in reason) else _quote(reason)
            out += c(True) + "reason" + c() + "=" + c() + value
        for ptype, name, value, kind in props:
            rendered = _quote(value) if kind == "quoted" else value
            if kind == "addr" and with_cfws and draw(st.booleans()):  # local-part [CFWS] "@" domain (dot-atom's CFWS)
                local, domain = value.split("@", 1)
                rendered = local + draw(_cfws()) + "@" + domain
            out += c(True) + ptype + c() + "." + c() + name + c() + "=" + c() + rendered
    return out + c()


def _semantic(ar: headers.AuthResults):
    return (ar.authserv_id, ar.version, ar.none,
            [(r.method, r.version, r.result, r.reason, [(p.ptype, p.name, p.value) for p in r.items]) for r in ar.results])


def _expected(model):
    authserv, version, results = model
    return (authserv, version, not results,
            [(m, v, r, reason, [(p, n, value) for p, n, value, _k in props]) for m, v, r, reason, props in results])


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_parse_is_invariant_to_comments_and_folds(data):
    model = data.draw(_model())
    plain = data.draw(_render(model, False))
    noisy = data.draw(_render(model, True))
    assert _semantic(parse(plain)) == _expected(model), plain
    parsed = parse(noisy)
    assert _semantic(parsed) == _expected(model), noisy
    assert not [f for f in parsed.findings if "non fermé" in f.fr or "coupée" in f.fr or "isolé" in f.fr], (noisy, parsed.findings)
    assert parse("Authentication-Results:" + noisy).authserv_id == model[0]


# --- RFC 8601 Appendix B.7, "Comment-Heavy Example" ---------------------------------------------------------------
B7 = ("Authentication-Results: foo.example.net (foobar) 1 (baz);\r\n"
      "    dkim (Because I like it) / 1 (One yay) = (wait for it) fail\r\n"
      "      policy (A dot can go here) . (like that) expired\r\n"
      "      (this surprised me) = (as I wasn't expecting it) 1362471462")


def test_rfc8601_b7_comment_heavy_example():
    """RFC 8601 Appendix B.7 (https://www.rfc-editor.org/rfc/rfc8601#appendix-B.7): once parsed, the comments are
    gone from the values but kept, each with what it follows."""
    ar = parse(B7)
    assert (ar.authserv_id, ar.version, ar.authserv_comment, ar.version_comment) == ("foo.example.net", "1", "foobar", "baz")
    [dkim] = ar.results
    assert (dkim.method, dkim.version, dkim.result) == ("dkim", "1", "fail")
    assert dkim.items == (headers.Property("policy", "expired", "1362471462", ("as I wasn't expecting it",)),)
    assert dkim.get("policy.expired") == "1362471462"
    assert dkim.positions == (("method", "Because I like it"), ("method", "One yay"), ("method", "wait for it"),
                              ("result", "A dot can go here"), ("result", "like that"), ("result", "this surprised me"),
                              ("policy.expired", "as I wasn't expecting it"))
    assert not ar.findings


def test_arc_authentication_results_keeps_its_instance():
    """RFC 8617 §4.1.1: ``ARC-Authentication-Results: i=<n>; <authserv-id>; …`` — CFWS allowed around "=" and ";"."""
    ar = parse("ARC-Authentication-Results: i=2 (second hop); lists.example.org;\r\n spf=pass smtp.mailfrom=example.com")
    assert (ar.instance, ar.authserv_id, ar.get("spf").get("smtp.mailfrom")) == (2, "lists.example.org", "example.com")
    assert ("instance", "second hop") in ar.comments
    assert parse("i = (c) 1 ; mx.example ; none").instance == 1


def test_malformed_input_gives_a_partial_result_and_findings_never_an_exception():
    ar = parse("mx.example.com; spf=pass smtp.mailfrom=a@example.com (unclosed; dkim")
    assert ar.get("spf").get("smtp.mailfrom") == "a@example.com" and any("non fermé" in f.fr for f in ar.findings)
    assert parse("").findings and parse(";;;").findings
    ar = parse("mx.example.com; spf=; dkim=pass header.d=; =fail")
    assert [r.method for r in ar.results] == ["spf", "dkim", ""] and len(ar.findings) >= 3


# --- real headers from providers and archives (verbatim; the source of each is cited) -----------------------------
MA = "https://github.com/marcbradshaw/Mail-AuthenticationResults/blob/f31eefac3ab6130ad4d05ed6640bc948227a6d5b/t/"
LKML = "https://github.com/linux-mailinglist-archives/linux-mmc.vger.kernel.org.0/blob/{}/m"
REAL = {
    # postalsys/mailauth test/fixtures/arc-fail.eml @ d2616c6 (a Gmail-received message)
    "gmail": ("https://github.com/postalsys/mailauth/blob/d2616c6bee77cf0cf77fe6ea6743b856696f081e/test/fixtures/arc-fail.eml",
              "Authentication-Results: mx.google.com;\n"
              "       dkim=pass header.i=@zonevs.eu header.s=oct2016 header.b=0ZgeYqhD;\n"
              "       dkim=pass header.i=@srs3.zonevs.eu header.s=oct2016 header.b=u8s6EKdV;\n"
              "       arc=pass (i=1 spf=pass spfdomain=zone.ee dkim=pass dkdomain=zonevs.eu dkim=pass dkdomain=srs3.zonevs.eu dmarc=pass fromdomain=zone.ee);\n"
              "       spf=neutral (google.com: 209.85.220.41 is neither permitted nor denied by best guess record for domain of andris+caf_=andris.reinman=gmail.com@tr.ee) smtp.mailfrom=\"andris+caf_=andris.reinman=gmail.com@tr.ee\";\n"
              "       dmarc=fail (p=REJECT sp=REJECT dis=NONE arc=pass) header.from=zone.ee"),
    "outlook": (MA + "04-outlook.t",
                "Authentication-Results: spf=pass (sender IP is 66.111.4.222)\n"
                " smtp.mailfrom=fastmail.com; outlook.com; dkim=pass (signature was verified)\n"
                " header.d=fastmail.com;outlook.com; dmarc=pass action=none\n"
                " header.from=fastmail.com;"),
    "exchange-compauth": ("https://github.com/lieser/dkim_verifier/blob/1badb6c8d639bd5973f870fa7bfc6f96facba9ca/test/unittest/arhParserSpec.mjs.js",
                          "Authentication-Results: spf=pass (sender IP is 185.67.36.66)\n"
                          " smtp.mailfrom=posteo.net; dkim=pass (signature was verified)\n"
                          " header.d=posteo.net;dmarc=pass action=none\n"
                          " header.from=posteo.net;compauth=pass reason=100"),
    "ebay-folded-comment": ("https://github.com/lieser/dkim_verifier/issues/79",
                            "Authentication-Results: spf=pass (sender IP is 91.194.248.199)\n"
                            " smtp.mailfrom=reply1.ebay.com; outlook.com; dkim=pass (signature was\n"
                            " verified) header.d=reply1.ebay.com;outlook.com; dmarc=pass action=none\n"
                            " header.from=reply1.ebay.com;"),
    "exchange-tenant-token": (LKML.format("d55d5957754acc8ebf2d8eb5283f87c82850b2cf"),
                              "Authentication-Results: vger.kernel.org; dkim=none (message not signed)\n"
                              " header.d=none;vger.kernel.org; dmarc=none action=none header.from=silabs.com;"),
    "microsoft-arc": (LKML.format("f6423f3957d2e526bb92571023b6f611fc69f22b"),
                      "ARC-Authentication-Results: i=3; mx.microsoft.com 1; spf=fail (sender ip is\n"
                      " 52.17.62.50) smtp.rcpttodomain=atomide.com smtp.mailfrom=solid-run.com;\n"
                      " dmarc=fail (p=none sp=none pct=100) action=none header.from=solid-run.com;\n"
                      " dkim=pass (signature was verified) header.d=solidrn.onmicrosoft.com; arc=pass\n"
                      " (0 oda=1 ltdi=1 spf=[1,1,smtp.mailfrom=solid-run.com]\n"
                      " dkim=[1,1,header.d=solid-run.com] dmarc=[1,1,header.from=solid-run.com])"),
    "m365-empty-value": ("https://github.com/jstedfast/MimeKit/blob/cf6d38dd0a1a26b5145c10b35e971efc133e1fb3/UnitTests/Cryptography/AuthenticationResultsTests.cs",
                         "spf=temperror (sender IP is 1.1.1.1) smtp.helo=tes.test.ru; mydomain.com; dkim=none (message not signed) "
                         "header.d=none;mydomain.com; dmarc=none action=none header.from=;"),
    "yahoo-old": (MA + "04-yahoo.t",
                  "Authentication-Results: mta4011.mail.gq1.yahoo.com  from=fastmail.com; domainkeys=neutral (no sig);  "
                  "from=messagingengine.com; dkim=pass (ok)"),
    "yahoo-words": ("https://github.com/jstedfast/MimeKit/issues/584",
                    "Authentication-Results: atlas122.free.mail.gq1.yahoo.com;\n"
                    " dkim=dkim_pass header.i=@news.aegeanair.com header.s=@aegeanair2;\n"
                    " spf=pass smtp.mailfrom=news.aegeanair.com;\n"
                    " dmarc=success(p=REJECT) header.from=news.aegeanair.com;"),
    "yahoo-order": ("https://github.com/pimlie/authres_status/issues/41",
                    "Authentication-Results: mta1192.mail.ir2.yahoo.com \n"
                    " header.i=@plezi.co header.s=s1 dkim=pass (ok)\n"
                    " header.i=@sendgrid.info header.s=smtpapi dkim=pass (ok);\n"
                    " spfDomain=emails.plezi.co spfResult=pass;\n"
                    " dmarc=pass(p=none sp=NULL dis=none) header.from=plezi.co"),
    "fastmail-folds": ("https://github.com/lieser/dkim_verifier/blob/1badb6c8d639bd5973f870fa7bfc6f96facba9ca/test/data/original/"
                       "Fastmail%20from%20CNN%20-%20Thanks%20for%20subscribing%20to%205%20Things.eml",
                       "Authentication-Results: mx2.messagingengine.com;\n"
                       "    dkim=pass (2048-bit rsa key sha256) header.d=newsletters.cnn.com\n"
                       "      header.i=@newsletters.cnn.com header.b=h7n0m9lM header.a=rsa-sha256\n"
                       "      header.s=v2;\n"
                       "    dmarc=pass policy.dwl=pass policy.published-domain-policy=reject\n"
                       "      policy.applied-disposition=none policy.evaluated-disposition=none\n"
                       "      (p=reject,d=none,d.eval=none) policy.policy-from=p\n"
                       "      header.from=newsletters.cnn.com;\n"
                       "    iprev=pass smtp.remote-ip=96.47.27.93\n"
                       "      (cnn2news-86-2.bm16.maas.zetaglobal.net);\n"
                       "    spf=pass\n"
                       "      smtp.mailfrom=\n"
                       "      \"bounce-cn1-ZH_CNN_i_News_NDBAN10232023c194254b0-h-793fd129af=2@newsletters.cnn.com\"\n"
                       "      smtp.helo=cnn2news-86-2.bm16.maas.zetaglobal.net"),
    "icloud-tabs": (MA + "04-icloud.t",
                    "Authentication-results: mr21p00im-dkimmilter005.me.com;\tdkim=pass (2048-bit\n"
                    " key) header.d=fastmail.com header.i=@fastmail.com header.b=0GObIji6;\n"
                    "\tdkim-adsp=pass"),
    "kernel-no-space": (LKML.format("d7acb3c9210185f4a258aabdd0282ebd95548c04"),
                        "ARC-Authentication-Results:i=1; smtp.subspace.kernel.org; dmarc=pass (p=none dis=none) header.from=ew.tq-group.com; "
                        "spf=pass smtp.mailfrom=ew.tq-group.com; dkim=pass (2048-bit key) header.d=tq-group.com header.i=@tq-group.com "
                        "header.b=Id6NHlYp; dkim=fail (0-bit key) header.d=ew.tq-group.com header.i=@ew.tq-group.com header.b=FHUINlSc "
                        "reason=\"key not found in DNS\"; arc=none smtp.client-ip=93.104.207.81"),
    "siteground-property-alone": (LKML.format("2c2875e1adbbe26418f283b3093145f1fb08c8cf"),
                                  "ARC-Authentication-Results: i=1; outgoing.instance-europe-west4-lgnf.prod.antispam.mailspamprotection.com; "
                                  "smtp.remote-ip=35.214.173.214;\n"
                                  "\tiprev=pass (214.173.214.35.bc.googleusercontent.com) smtp.remote-ip=35.214.173.214;\n"
                                  "\tauth=pass (LOGIN) smtp.auth=esm19.siteground.biz;\n"
                                  "\tdkim=pass header.d=valla.it header.s=default header.a=rsa-sha256;\n"
                                  "\tarc=none"),
    "ironport": (LKML.format("4b1115e1c76bcbfe86ea70f08d1e1af113c24934"),
                 "Authentication-Results: esa3.microchip.iphmx.com; dkim=none (message not signed) header.i=none; "
                 "spf=Pass smtp.mailfrom=Ludovic.Desroches@microchip.com; spf=None smtp.helo=postmaster@email.microchip.com; "
                 "dmarc=pass (p=none dis=none) d=microchip.com"),
    "freebsd-none": (LKML.format("2fe3f1c44d1a92b6fe4df6cc59fd130baffab314"),
                     "ARC-Authentication-Results: i=1;\n        mx1.freebsd.org;\n        none"),
    "opendkim-reason": ("https://github.com/postalsys/mailauth/blob/d2616c6bee77cf0cf77fe6ea6743b856696f081e/test/fixtures/message4.eml",
                        "Authentication-Results: uvn-67-33.tll01.zonevs.eu; dkim=pass\n"
                        "\treason=\"1024-bit key; insecure key\"\n"
                        "\theader.d=out.srv.dev header.i=@out.srv.dev header.b=p4WDZf90;\n"
                        "\tdkim-adsp=none (insecure policy); dkim-atps=neutral"),
}


def _real(name: str) -> headers.AuthResults:
    _source, text = REAL[name]
    return parse(text.replace("\n", "\r\n"))


def _summary(ar: headers.AuthResults) -> list[tuple]:
    return [(r.method, r.result, r.reason, {p.key: p.value for p in r.items}) for r in ar.results]


def test_gmail_keeps_its_dmarc_comment_and_the_quoted_mailfrom():
    ar = _real("gmail")
    assert ar.authserv_id == "mx.google.com" and [r.method for r in ar.results] == ["dkim", "dkim", "arc", "spf", "dmarc"]
    assert ar.get("spf").get("smtp.mailfrom") == "andris+caf_=andris.reinman=gmail.com@tr.ee"
    assert ar.get("dmarc").comments == ("p=REJECT sp=REJECT dis=NONE arc=pass",) and ar.get("dmarc").positions[0][0] == "result"
    assert ar.get("arc").get("i") is None and "dkdomain=zonevs.eu" in ar.get("arc").comments[0]  # key=value inside a comment
    assert not ar.findings


def test_microsoft_forms_without_authserv_id_with_bare_tokens_and_keys():
    outlook = _real("outlook")
    assert outlook.authserv_id is None and outlook.stray == ("outlook.com", "outlook.com")
    assert _summary(outlook) == [("spf", "pass", None, {"smtp.mailfrom": "fastmail.com"}),
                                 ("dkim", "pass", None, {"header.d": "fastmail.com"}),
                                 ("dmarc", "pass", None, {"action": "none", "header.from": "fastmail.com"})]
    assert outlook.get("dmarc").items[0].ptype is None  # action=none: a key without ptype
    assert any("Microsoft 365" in f.fr for f in outlook.findings) and any("final" in f.fr for f in outlook.findings)
    compauth = _real("exchange-compauth").get("compauth")
    assert (compauth.result, compauth.reason) == ("pass", "100")
    folded = _real("ebay-folded-comment")
    assert folded.get("dkim").comments == ("signature was verified",) and folded.get("dkim").get("header.d") == "reply1.ebay.com"
    tenant = _real("exchange-tenant-token")
    assert tenant.authserv_id == "vger.kernel.org" and tenant.stray == ("vger.kernel.org",)
    assert tenant.get("dmarc").get("header.from") == "silabs.com"
    empty = _real("m365-empty-value")
    assert empty.get("dmarc").get("header.from") == "" and any("sans valeur" in f.fr for f in empty.findings)
    arc = _real("microsoft-arc")
    assert (arc.instance, arc.authserv_id, arc.version) == (3, "mx.microsoft.com", "1")
    assert arc.get("spf").get("smtp.rcpttodomain") == "atomide.com" and arc.get("spf").comments == ("sender ip is 52.17.62.50",)
    assert arc.get("arc").result == "pass" and "dmarc=[1,1,header.from=solid-run.com]" in arc.get("arc").comments[0]


def test_yahoo_words_and_order():
    words = _real("yahoo-words")
    assert [(r.method, r.result) for r in words.results] == [("dkim", "dkim_pass"), ("spf", "pass"), ("dmarc", "success")]
    assert words.get("dmarc").comments == ("p=REJECT",) and words.get("dkim").get("header.s") == "@aegeanair2"
    assert sum("non standard" in f.fr for f in words.findings) == 2
    order = _real("yahoo-order")
    assert _summary(order)[:2] == [("dkim", "pass", None, {"header.i": "@plezi.co", "header.s": "s1"}),
                                   ("dkim", "pass", None, {"header.i": "@sendgrid.info", "header.s": "smtpapi"})]
    assert order.get("dmarc").get("header.from") == "plezi.co" and any("Yahoo" in f.fr for f in order.findings)
    old = _real("yahoo-old")
    assert [(r.method, r.result) for r in old.results] == [("from", "fastmail.com"), ("domainkeys", "neutral"),
                                                            ("from", "messagingengine.com"), ("dkim", "pass")]


def test_folds_everywhere_and_other_providers():
    fm = _real("fastmail-folds")
    assert fm.get("spf").get("smtp.mailfrom") == "bounce-cn1-ZH_CNN_i_News_NDBAN10232023c194254b0-h-793fd129af=2@newsletters.cnn.com"
    assert fm.get("dmarc").get("policy.policy-from") == "p" and fm.get("dkim").get("header.s") == "v2"
    assert ("policy.evaluated-disposition", "p=reject,d=none,d.eval=none") in fm.get("dmarc").positions
    assert fm.get("iprev").items[0].comments == ("cnn2news-86-2.bm16.maas.zetaglobal.net",) and not fm.findings
    icloud = _real("icloud-tabs")
    assert [(r.method, r.result) for r in icloud.results] == [("dkim", "pass"), ("dkim-adsp", "pass")]
    assert icloud.get("dkim").comments == ("2048-bit key",)
    kernel = _real("kernel-no-space")
    assert kernel.instance == 1 and kernel.all("dkim")[1].reason == "key not found in DNS"  # reason after the properties
    site = _real("siteground-property-alone")
    assert [r.method for r in site.results] == ["iprev", "auth", "dkim", "arc"] and site.stray == ("smtp.remote-ip=35.214.173.214",)
    iron = _real("ironport")
    assert [r.result for r in iron.all("spf")] == ["pass", "none"] and iron.get("dmarc").get("d") == "microchip.com"
    free = _real("freebsd-none")
    assert (free.instance, free.authserv_id, free.none, free.results) == (1, "mx1.freebsd.org", True, ())
    od = _real("opendkim-reason")
    assert od.get("dkim").reason == "1024-bit key; insecure key" and od.get("dkim-atps").result == "neutral"


def test_every_real_header_parses_without_a_lost_word():
    """Nothing is dropped silently: every word of the header is a value, a comment, a stray item or a finding."""
    for name, (source, text) in REAL.items():
        assert source.startswith("https://"), name
        ar = parse(text.replace("\n", "\r\n"))
        assert ar.results or ar.none, name
        kept = " ".join(["reason", "for", "none" if ar.none else "", ar.authserv_id or "", ar.version or "", *ar.stray, *(c for _w, c in ar.comments)]
                        + [f"{r.method} {r.result} {r.reason or ''} {r.for_ or ''} " + " ".join(r.comments)
                           + " ".join(f"{p.key} {p.value}" for p in r.items) for r in ar.results]).lower()
        for word in re.findall(r"[a-z0-9@_+-]{3,}", re.sub(r"\([^()]*\)", " ", text.split(":", 1)[1] if ":" in text.split("\n")[0][:30] else text).lower()):
            assert word in kept, (name, word)


# --- found by an outside review -----------------------------------------------------------------------------------
def test_a_forged_header_of_another_authserv_id_is_ignored_by_analyze():
    """RFC 8601 §5: only the results added inside one's own boundary count (compared without case)."""
    forged = ("Authentication-Results: other.example; spf=pass smtp.mailfrom=bank.example; dkim=pass header.d=bank.example; "
              "dmarc=pass header.from=bank.example\r\nFrom: a@bank.example\r\nSubject: s\r\n\r\nbody\r\n").encode()
    report = headers.analyze(forged, recompute=False, authserv_id="mx.receiver.example")
    assert (report.spf, report.dmarc, report.dkim) == ("none", "none", ()) and any("RFC 8601 §5" == f.rfc for f in report.findings)
    real = b"Authentication-Results: MX.Receiver.example; spf=fail smtp.mailfrom=bank.example\r\n" + forged
    assert headers.analyze(real, recompute=False, authserv_id="mx.receiver.example").spf == "fail"


def test_a_missing_semicolon_between_results_is_not_a_merge():
    ar = parse("mx; dkim=pass header.d=a dkim=fail header.d=evil")
    assert [(r.result, r.get("header.d")) for r in ar.all("dkim")] == [("pass", "a"), ("fail", "evil")]
    assert any("manquant" in f.fr for f in ar.findings)


def test_a_huge_yahoo_order_header_is_read_whole():
    """20,000 properties in Yahoo's order (parsing them was quadratic: 29 s for 240 kB; its speed is measured by
    bench/auth_bench.py, not here): every property reaches the one method."""
    ar = parse("mx; a.b=c dkim=pass " + "h.d=x " * 20000)
    [dkim] = ar.results
    assert dkim.method == "dkim" and len(dkim.items) == 20001 and dkim.items[0].key == "a.b"


def test_dkim_none_is_not_a_signature_when_reading_headers():
    raw = b"Authentication-Results: mx.example; dkim=none; spf=pass smtp.mailfrom=a.example\r\nFrom: x@a.example\r\n\r\nb\r\n"
    report = headers.analyze(raw, recompute=False)
    assert report.dkim == () and any("non signé" in str(f.what) for f in report.findings)


# --- the fast path (issue 17): the form receivers write, read by two patterns -------------------------------------
# parse_authentication_results first tries authres._fast_parse; what it accepts must be read exactly as the full
# grammar reads it — every field, comments and their positions included.
from labmail import authres  # noqa: E402

@st.composite
def _receiver_form(draw):
    """A header in the fast path's family: id, version, items of method=result, reason, properties and comments,
    separators as receivers write them; half of them with only what the patterns accept (each then exercises the fast
    reading), the others with pieces chosen to make them decline or the full parser decide."""
    clean = draw(st.booleans())

    def pick(good: list, bad: list):
        return draw(st.sampled_from(good if clean else good + bad))

    value = lambda: pick(["pass", "PASS", "a@b.example", "@d.example", "x==", "a=b", "v.1", "none", '"a+b=c@d.example"', '""',  # noqa: E731
                          '"key not found"'], ["abc@", '"a;b"', '"a\\"b"', '"a\r\n b"', "é", '"x"y'])
    sep = pick([" ", "\r\n ", "\r\n\t", "  ", "\n "], ["", "\n"])
    out = draw(st.sampled_from(["", " ", "Authentication-Results: ", "authentication-results:"] +
                               ([] if clean else ["ARC-Authentication-Results: i=1; "])))
    out += pick(["mx.google.com", "mx.example.net", "[1.2.3.4]"], ["i", "a=b", "mx (c)"])
    out += pick(["", " 1", " 12"], ["1", " 1 (c)"])
    items = []
    for _ in range(draw(st.integers(1, 4))):
        method = pick(["spf", "dkim", "DMARC", "arc", "x-local", "dkim/1", "compauth"], ["reason", "a.b", "none"])
        item = f"{method}={pick(['pass', 'none', 'Pass'], ['fail', 'softfail', 'dkim_pass', 'policy'])}"
        for _ in range(draw(st.integers(0, 2))):
            item += pick([" ", "", "\r\n "], []) + "(" + pick(
                ["google.com: domain of a@b designates 192.0.2.1 as permitted sender", "p=NONE  sp=NONE dis=NONE", "",
                 "2048-bit key"], ["a;b", "x (y)", "a\\)"]) + ")"
        if draw(st.booleans()):
            item += sep + pick(["reason="], ["Reason=", "reason=\"", "reason ="]) + value()
            item += draw(st.sampled_from(["", " (why)", "(key not found)"]))
        for _ in range(draw(st.integers(0, 4))):
            key = pick(["header.d", "header.i", "smtp.mailfrom", "header.b", "policy.dmarc", "Header.From", "smtp.mail.from"],
                       ["action", "header.", "for", "reason"])
            item += sep + key + pick(["="], [" = "]) + value()
            if draw(st.booleans()):
                item += pick([" ", ""], []) + "(" + pick(["c", "key  one", ""], ["a;b"]) + ")"
        items.append(item)
    out += ";" + sep + (";" + sep).join(items) + pick(["", " "], [";", "; none"])
    return out


def _agree(text: str) -> bool:
    body = authres._NAME_RE.sub("", text, count=1)
    fast = authres._fast_parse(body)
    assert fast is None or fast == authres._full_parse(body), (text, fast, authres._full_parse(body))
    assert parse(text) == authres._full_parse(body)
    return fast is not None


@settings(max_examples=examples(500), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_receiver_form())
def test_the_fast_path_reads_exactly_what_the_full_grammar_reads(text):
    _agree(text)


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_fast_path_agrees_on_the_rfc_model_with_and_without_cfws(data):
    model = data.draw(_model())
    _agree(data.draw(_render(model, False)))
    _agree(data.draw(_render(model, True)))


def test_the_fast_path_takes_what_receivers_write():
    """Not a silent fallback: the lab's own header and the plain real ones go through the patterns; the RFC's
    comment-heavy example and Microsoft's forms do not — and every one reads the same either way."""
    from labmail.headers import make_authentication_results

    own = make_authentication_results("mx.lab.test", [
        headers.MethodResult("spf", "pass", properties={"smtp.mailfrom": "a@lab.test"}, comments=("lab: 192.0.2.1 allowed",)),
        headers.MethodResult("dkim", "pass", properties={"header.d": "lab.test", "header.s": "s1", "header.b": "AbCd+/=="}),
        headers.MethodResult("dmarc", "pass", properties={"header.from": "lab.test"}, comments=("p=none",))])
    assert _agree(own)
    taken = {name for name, (_source, text) in REAL.items() if _agree(text)}
    assert {"icloud-tabs", "gmail"} <= taken and not {"outlook", "yahoo-order", "m365-empty-value"} & taken, taken
    assert not _agree(B7)
