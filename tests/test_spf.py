"""labmail.spf: RFC 7208 rules one by one, the trace, macros, lint, and hostile input."""

from __future__ import annotations

import dns.message
import dns.rcode
import pytest
from fuzzing import count, examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labmail import spf
from labmail.dns import Resolver
from labmail.i18n import set_language
from labmail.spf import SPFResult, SPFSyntaxError

ZONE = "spf.test."
RECORDS = """
spf.test. 300 IN SOA ns1.labmail.cloud. h.spf.test. 1 3600 900 1209600 60
spf.test. 300 IN NS ns1.labmail.cloud.
spf.test. 300 IN A 192.0.2.10
spf.test. 300 IN MX 10 mx1.spf.test.
spf.test. 300 IN MX 20 mx2.spf.test.
mx1.spf.test. 300 IN A 192.0.2.20
mx2.spf.test. 300 IN A 192.0.2.21
mx2.spf.test. 300 IN AAAA 2001:db8::21
www.spf.test. 300 IN CNAME mx1.spf.test.
exp.spf.test. 300 IN TXT "%{i} n'est pas autorise pour %{d} (voir %{h})"
192.0.2.30.bl.spf.test. 300 IN A 127.0.0.2
strong-bad.users.spf.test. 300 IN A 127.0.0.2
"""
PTR_ZONE = """
2.0.192.in-addr.arpa. 300 IN SOA ns1.labmail.cloud. h.spf.test. 1 3600 900 1209600 60
2.0.192.in-addr.arpa. 300 IN NS ns1.labmail.cloud.
40.2.0.192.in-addr.arpa. 300 IN PTR host.sub.spf.test.
41.2.0.192.in-addr.arpa. 300 IN PTR liar.spf.test.
"""


@pytest.fixture
def resolver(world_lab):
    extra = "host.sub.spf.test. 300 IN A 192.0.2.40\nliar.spf.test. 300 IN A 192.0.2.99\n"
    world_lab.zones.add_zone_text(ZONE, RECORDS + extra)
    world_lab.zones.add_zone_text("2.0.192.in-addr.arpa.", PTR_ZONE)
    engine = world_lab.engine("resolver")

    def exchange(query):
        return dns.message.from_wire(engine.handle(query.to_wire(), tcp=True)[0])

    return Resolver(exchange=exchange)


def check(resolver, record, ip="192.0.2.10", sender="strong-bad@spf.test", helo="mx1.spf.test"):
    return spf.evaluate(ip, sender, helo, resolver=resolver, record=record)


@pytest.mark.parametrize("record,ip,expected,matched", [
    ("v=spf1 ip4:192.0.2.10 -all", "192.0.2.10", SPFResult.PASS, "ip4:192.0.2.10"),
    ("v=spf1 ip4:192.0.2.0/24 -all", "192.0.2.77", SPFResult.PASS, "ip4:192.0.2.0/24"),
    ("v=spf1 ip4:192.0.2.10 -all", "192.0.2.11", SPFResult.FAIL, "-all"),
    ("v=spf1 ip4:192.0.2.10 ~all", "192.0.2.11", SPFResult.SOFTFAIL, "~all"),
    ("v=spf1 ip4:192.0.2.10 ?all", "192.0.2.11", SPFResult.NEUTRAL, "?all"),
    ("v=spf1 ip4:192.0.2.10", "192.0.2.11", SPFResult.NEUTRAL, None),
    ("v=spf1 a -all", "192.0.2.10", SPFResult.PASS, "a"),
    ("v=spf1 a/24 -all", "192.0.2.200", SPFResult.PASS, "a/24"),
    ("v=spf1 a:www.spf.test -all", "192.0.2.20", SPFResult.PASS, "a:www.spf.test"),  # through a CNAME
    ("v=spf1 mx -all", "192.0.2.21", SPFResult.PASS, "mx"),
    ("v=spf1 mx -all", "2001:db8::21", SPFResult.PASS, "mx"),
    ("v=spf1 mx//64 -all", "2001:db8::99", SPFResult.PASS, "mx//64"),
    ("v=spf1 ip6:2001:db8::/32 -all", "2001:db8::1", SPFResult.PASS, "ip6:2001:db8::/32"),
    ("v=spf1 ip4:192.0.2.0/24 -all", "2001:db8::1", SPFResult.FAIL, "-all"),  # ip4 ignores IPv6 clients
    ("v=spf1 ip4:192.0.2.10 -all", "::ffff:192.0.2.10", SPFResult.PASS, "ip4:192.0.2.10"),  # IPv4-mapped
    ("v=spf1 exists:%{i}.bl.spf.test -all", "192.0.2.30", SPFResult.PASS, "exists:%{i}.bl.spf.test"),
    ("v=spf1 exists:%{l}.users.spf.test -all", "192.0.2.31", SPFResult.PASS, "exists:%{l}.users.spf.test"),
    ("v=spf1 ptr -all", "192.0.2.40", SPFResult.PASS, "ptr"),  # host.sub.spf.test, forward-confirmed
    ("v=spf1 ptr -all", "192.0.2.41", SPFResult.FAIL, "-all"),  # liar.spf.test does not point back
    ("v=spf1 include:gmail.test -all", "198.51.100.10", SPFResult.PASS, "include:gmail.test"),
    ("v=spf1 -include:gmail.test ~all", "198.51.100.10", SPFResult.FAIL, "-include:gmail.test"),
    ("v=spf1 include:gmail.test -all", "192.0.2.10", SPFResult.FAIL, "-all"),  # gmail's ~all is not a match
    ("v=spf1 redirect=outlook.test", "198.51.100.140", SPFResult.PASS, "include:spf.protection.outlook.test"),
    ("v=spf1 ip4:192.0.2.10 redirect=outlook.test", "192.0.2.10", SPFResult.PASS, "ip4:192.0.2.10"),
    ("v=spf1 -all redirect=outlook.test", "198.51.100.140", SPFResult.FAIL, "-all"),  # all wins over redirect
    ("v=spf1 foo=bar ip4:192.0.2.10 -all", "192.0.2.10", SPFResult.PASS, "ip4:192.0.2.10"),  # unknown modifier
    ("V=SPF1 IP4:192.0.2.10 -ALL", "192.0.2.10", SPFResult.PASS, "IP4:192.0.2.10"),  # case-insensitive
])
def test_results(resolver, record, ip, expected, matched):
    result = check(resolver, record, ip)
    assert result.result is expected, str(result)
    assert result.matched == matched


@pytest.mark.parametrize("record,why", [
    ("v=spf1 include:nothing.spf.test -all", "include"),
    ("v=spf1 redirect=nothing.spf.test", "redirect"),
    ("v=spf1 ip4:192.0.2.10/33 -all", "syntax"),
    ("v=spf1 ip4:192.0.2.300 -all", "syntax"),
    ("v=spf1 a:192.0.2.10 -all", "syntax"),
    ("v=spf1 bogus -all", "syntax"),
    ("v=spf1 -all:x", "syntax"),
    ("v=spf1 exists:%{z}.spf.test -all", "syntax"),
    ("v=spf1 a:%{c}.spf.test -all", "syntax"),
    ("v=spf1 redirect=a.spf.test redirect=b.spf.test", "syntax"),
    ("v=spf1 " + " ".join(f"a:n{i}.spf.test" for i in range(3)) + " -all", "void"),
    ("v=spf1 " + " ".join(["a"] * 11) + " -all", "lookups"),
])
def test_permerrors(resolver, record, why):
    result = check(resolver, record, "192.0.2.99")
    assert result.result is SPFResult.PERMERROR, str(result)
    assert result.rfc.startswith("RFC 7208")


def test_syntax_error_anywhere_is_permerror_even_after_a_match(resolver):
    result = check(resolver, "v=spf1 ip4:192.0.2.10 bogus -all", "192.0.2.10")
    assert result.result is SPFResult.PERMERROR


def test_ten_lookups_pass_eleventh_fails(resolver):
    ten = "v=spf1 " + " ".join(["a"] * 9) + " a:spf.test -all"
    assert check(resolver, ten, "192.0.2.10").lookups == 1  # matches at the first "a": stops there
    late = "v=spf1 " + " ".join(["a:mx1.spf.test"] * 9) + " a -all"
    result = check(resolver, late, "192.0.2.10")
    assert result.result is SPFResult.PASS and result.lookups == 10
    over = "v=spf1 " + " ".join(["a:mx1.spf.test"] * 10) + " a -all"
    assert check(resolver, over, "192.0.2.10").result is SPFResult.PERMERROR


def test_two_published_records_and_none(world_lab, resolver):
    world_lab.zones.add_zone_text("two.test.", "two.test. 300 IN SOA a. b. 1 1 1 1 1\ntwo.test. 300 IN NS a.\n"
                                               'two.test. 300 IN TXT "v=spf1 -all"\ntwo.test. 300 IN TXT "v=spf1 +all"\n'
                                               'three.two.test. 300 IN TXT " v=spf1 -all"\n')
    two = spf.evaluate("192.0.2.1", "a@two.test", "x.two.test", resolver=resolver)
    assert two.result is SPFResult.PERMERROR and "2 SPF records" in two.reason.en
    lead = spf.evaluate("192.0.2.1", "a@three.two.test", "x.two.test", resolver=resolver)
    assert lead.result is SPFResult.NONE  # a leading space: not an SPF record


def test_temperror_on_dns_failure():
    def servfail(query):
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.SERVFAIL)
        return response

    result = spf.evaluate("192.0.2.1", "a@example.com", "mx.example.com", resolver=Resolver(exchange=servfail))
    assert result.result is SPFResult.TEMPERROR and "SERVFAIL" in result.reason.en


def test_helo_identity_for_bounces_and_postmaster(resolver):
    bounce = spf.evaluate("192.0.2.20", "", "mx1.spf.test", resolver=resolver, record="v=spf1 a -all")
    assert bounce.identity == "helo" and bounce.sender == "postmaster@mx1.spf.test" and bounce.result is SPFResult.PASS
    nolocal = spf.evaluate("192.0.2.20", "@spf.test", "x", resolver=resolver, record="v=spf1 exists:%{l}.users.spf.test -all")
    assert nolocal.sender == "postmaster@spf.test"
    helo = spf.evaluate("192.0.2.20", "a@spf.test", "mx1.spf.test", identity="helo", resolver=resolver, record="v=spf1 a -all")
    assert helo.domain == "mx1.spf.test" and helo.result is SPFResult.PASS


@pytest.mark.parametrize("domain", ["localhost", "a..b.test", "x" * 64 + ".test"])
def test_not_a_fqdn_is_none(resolver, domain):
    result = spf.evaluate("192.0.2.1", f"a@{domain}", "h", resolver=resolver)
    assert result.result is SPFResult.NONE and result.rfc == "RFC 7208 §4.3"


def test_explanation_on_fail_only(resolver):
    fail = check(resolver, "v=spf1 -all exp=exp.spf.test", "192.0.2.50")
    assert fail.explanation == "192.0.2.50 n'est pas autorise pour spf.test (voir mx1.spf.test)"
    passed = check(resolver, "v=spf1 +all exp=exp.spf.test", "192.0.2.50")
    assert passed.explanation is None
    broken = check(resolver, "v=spf1 -all exp=nothing.spf.test", "192.0.2.50")
    assert broken.result is SPFResult.FAIL and broken.explanation is None  # a bad exp never changes the result


RFC_SENDER = "strong-bad@email.example.com"


@pytest.mark.parametrize("macro,expected", [  # RFC 7208 §7.4
    ("%{s}", "strong-bad@email.example.com"), ("%{o}", "email.example.com"), ("%{d}", "email.example.com"),
    ("%{d4}", "email.example.com"), ("%{d3}", "email.example.com"), ("%{d2}", "example.com"), ("%{d1}", "com"),
    ("%{dr}", "com.example.email"), ("%{d2r}", "example.email"), ("%{l}", "strong-bad"), ("%{l-}", "strong.bad"),
    ("%{lr}", "strong-bad"), ("%{lr-}", "bad.strong"), ("%{l1r-}", "strong"),
    ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
    ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
    ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
    ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
    ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
    ("%{S}", "strong-bad%40email.example.com"), ("%%%_%-", "% %20"),
])
def test_macro_expansion_rfc_examples(macro, expected):
    import ipaddress
    import time

    ctx = spf._Context(Resolver(exchange=lambda q: q), ipaddress.ip_address("192.0.2.3"), RFC_SENDER, "mx.example.org",
                       time.monotonic() + 5)
    assert ctx.expand(macro, "email.example.com", exp=True) == expected


def test_ipv6_macro():
    import ipaddress
    import time

    ctx = spf._Context(Resolver(exchange=lambda q: q), ipaddress.ip_address("2001:db8::cb01"), RFC_SENDER, "h", time.monotonic() + 5)
    assert ctx.expand("%{ir}.%{v}._spf.%{d2}", "email.example.com") == (
        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com")
    # RFC 7208 §7.4's own example, in lower case; pyspf writes the same nibbles in upper case: the same DNS name
    import spf as pyspf

    theirs = pyspf.query("2001:db8::cb01", RFC_SENDER, "h").expand("%{ir}.%{v}._spf.%{d2}", "email.example.com")
    assert theirs != theirs.lower() and theirs.lower() == ctx.expand("%{ir}.%{v}._spf.%{d2}", "email.example.com")


def test_trace_shows_queries_counters_and_sections(resolver):
    result = check(resolver, "v=spf1 a:nothing.spf.test mx include:gmail.test -all", "198.51.100.10")
    assert result.result is SPFResult.PASS and result.lookups == 4 and result.void_lookups == 1  # a, mx, include, its redirect
    steps = {s.term: s for s in result.trace}
    assert steps["a:nothing.spf.test"].matched is False and steps["a:nothing.spf.test"].void_lookups == 1
    assert any(q.name == "mx1.spf.test" for q in steps["mx"].queries)
    assert steps["include:gmail.test"].matched is True and steps["include:gmail.test"].rfc == "RFC 7208 §5.2"
    assert any(s.depth == 1 and s.domain == "_spf.gmail.test" for s in result.trace)  # redirect inside the include
    df = result.to_dataframe()
    assert {"terme", "correspond", "requêtes DNS", "RFC"} <= set(df.columns) and len(df) == len(result.trace)
    header = result.received_spf("mx.gmail.test")
    assert header.startswith("pass (mx.gmail.test: ") and "client-ip=198.51.100.10" in header
    assert "<table>" in result._repr_html_()


def test_fail_reason_says_how_to_fix(resolver):
    result = check(resolver, "v=spf1 mx ~all", "203.0.113.10")
    assert result.result is SPFResult.SOFTFAIL
    assert "ajoutez « ip4:203.0.113.10 »" in str(result.reason)
    set_language("en")
    assert "add \"ip4:203.0.113.10\"" in str(result.reason)


@pytest.mark.parametrize("record,position", [
    ("v=spf1 ip4:1.2.3.4/33", 7), ("v=spf1 mx bogus", 10), ("v=spf1  a:exa mple.com", 10), ("v=spf1 a:%{q}.x.com", 9),
])
def test_parse_errors_have_positions(record, position):
    with pytest.raises(SPFSyntaxError) as info:
        spf.parse(record)
    assert info.value.position == position


def test_lint(resolver):
    codes = {f.code for f in spf.lint("v=spf1 +all ptr", resolver=resolver)}
    assert {"plus-all", "ptr", "after-all"} <= codes
    many = "v=spf1 " + " ".join(["include:gmail.test"] * 4) + " include:outlook.test mx a -all"
    finding = next(f for f in spf.lint(many, resolver=resolver) if f.code == "too-many-lookups")
    assert "12/10" in str(finding)  # 4 x (gmail include + its redirect) + outlook include + its include + mx + a
    dead = spf.lint("v=spf1 include:nothing.spf.test -all", resolver=resolver)
    assert any(f.code == "dead-include" for f in dead)
    split = spf.lint(strings=["v=spf1 ip4:192.0.2.10", "include:gmail.test -all"], resolver=resolver)
    assert any(f.code == "bad-split" for f in split)
    ok_split = spf.lint(strings=["v=spf1 ip4:192.0.2.10 ", "include:gmail.test -all"], resolver=resolver)
    assert not any(f.code == "bad-split" for f in ok_split)
    assert any(f.code == "no-all" for f in spf.lint("v=spf1 mx", resolver=resolver))
    evaluated = next(f for f in spf.lint(many, ip="198.51.100.10", resolver=resolver) if f.code == "evaluated")
    assert "2 requêtes comptées" in str(evaluated)  # the first include matches: 2 lookups, not 12


def test_lint_published_records(world_lab, resolver):
    world_lab.zones.add_zone_text("two.test.", "two.test. 300 IN SOA a. b. 1 1 1 1 1\ntwo.test. 300 IN NS a.\n"
                                               'two.test. 300 IN TXT "v=spf1 -all"\ntwo.test. 300 IN TXT "v=spf1 mx -all"\n')
    assert any(f.code == "two-records" for f in spf.lint(domain="two.test", resolver=resolver))
    assert any(f.code == "no-record" for f in spf.lint(domain="spf.test", resolver=resolver))


@pytest.mark.fuzz
@settings(max_examples=examples(300), deadline=None)
@given(st.text(max_size=120))
def test_parse_never_raises_anything_else(text):
    count()
    for record in (text, "v=spf1 " + text):
        try:
            spf.parse(record)
        except SPFSyntaxError:
            pass


@pytest.mark.fuzz
@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["a", "mx", "ptr", "-all", "~all", "include:gmail.test", "exists:%{i}.bl.spf.test",
                                 "ip4:192.0.2.0/24", "redirect=outlook.test", "a:%{d}", "%", "a:", "ip6:::1", "exp=x.test",
                                 "include:spf.test", "mx:%{l}.spf.test"]), max_size=8),
       st.sampled_from(["192.0.2.10", "2001:db8::21", "198.51.100.10"]))
def test_evaluate_any_record_gives_a_result(resolver, terms, ip):
    count()
    result = check(resolver, " ".join(["v=spf1"] + terms), ip)
    assert isinstance(result.result, SPFResult) and result.trace


def test_bad_ip_is_a_clear_error(resolver):
    from labmail import errors

    with pytest.raises(errors.UsageError, match="n'est pas une adresse IP"):
        spf.evaluate("not-an-ip", "a@b.test", "h", resolver=resolver)


@pytest.mark.parametrize("record", ["v=spf1 mx\n", "v=spf1 -all\n", "v=spf1 ip4:192.0.2.1\n", "v=spf1 ip4:192.0.2.1\n -all",
                                    "v=spf1 include:spf.test\n", "v=spf1 redirect=spf.test\n", "v=spf1 mx\r\n", "v=spf1 mx\t-all"])
def test_a_term_followed_by_a_control_character_is_a_syntax_error(resolver, record):
    """RFC 7208 §12: terms are separated by SP only; a "$"-anchored regex used to let "mx\\n" pass as "mx".
    pyspf 2.0.14 answers permerror for the same records ("Unknown mechanism found: mx\\n")."""
    with pytest.raises(SPFSyntaxError) as info:
        spf.parse(record)
    bad = next(i for i, ch in enumerate(record) if ch in "\r\n\t")
    assert info.value.position == bad and "caractère de contrôle" in str(info.value)
    assert check(resolver, record, "192.0.2.1").result is SPFResult.PERMERROR


@pytest.mark.parametrize("term", ["mx\n", "all\n", "ip4:192.0.2.1\n", "a:spf.test/24\n", "exp=spf.test\n", "x=y\n"])
def test_term_grammar_is_anchored_at_the_true_end(term):
    with pytest.raises(SPFSyntaxError):
        spf._parse_term(term, 7)
