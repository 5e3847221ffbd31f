"""DMARC policy discovery to the letter: RFC 9989 §4.10 (tree walk), §4.10.1 (which record applies), §4.10.2
(organizational domain), the invalid-policy rule of RFC 7489 §6.6.3 / RFC 9989 §4.10.1, RFC 7489 §6.6.4 sampling,
tag-name case — from the RFC text (examples quoted from draft-ietf-dmarc-dmarcbis-41, the text RFC 9989 was
published from) and, on generated DNS trees, against an independent implementation: the Node library mailauth
(pinned in tests/js/package-lock.json, run through node; the test is skipped with a message without it).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from labmail import dmarc
from labmail.dns import Resolver

JS = Path(__file__).parent / "js"


class Tree:
    """An authoritative DNS made of a dict: TXT records by name, names that exist with an A record; every other
    name is NXDOMAIN unless a listed name is below it (an empty non-terminal: NOERROR, no data — RFC 8020)."""

    def __init__(self, txt: dict[str, list[str]] | None = None, a: list[str] = (), servfail: list[str] = ()) -> None:
        self.txt = {k.lower(): v for k, v in (txt or {}).items()}
        self.a = {n.lower() for n in a}
        self.servfail = {n.lower() for n in servfail}
        self.asked: list[str] = []

    def exists(self, name: str) -> bool:
        return any(o == name or o.endswith("." + name) for o in [*self.txt, *self.a])

    def exchange(self, query: dns.message.Message) -> dns.message.Message:
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        self.asked.append(f"{dns.rdatatype.to_text(question.rdtype)} {name}")
        response = dns.message.make_response(query)
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif question.rdtype == dns.rdatatype.TXT and name in self.txt:
            values = ['"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in self.txt[name]]
            response.answer.append(dns.rrset.from_text(question.name, 300, dns.rdataclass.IN, dns.rdatatype.TXT, *values))
        elif question.rdtype == dns.rdatatype.A and name in self.a:
            response.answer.append(dns.rrset.from_text(question.name, 300, dns.rdataclass.IN, dns.rdatatype.A, "192.0.2.1"))
        elif not self.exists(name):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response

    def resolver(self) -> Resolver:
        return Resolver(exchange=self.exchange)

    def for_mailauth(self, cases: list[dict]) -> dict:
        return {"dns": self.txt, "a": sorted(self.a), "servfail": sorted(self.servfail), "cases": cases, "compact": True}


def judge(tree: Tree, from_domain: str, *, spf: str | None = None, dkim: tuple[str, ...] = (), **kwargs) -> dmarc.DMARCEvaluation:
    return dmarc.evaluate(from_domain, spf_result="pass" if spf else None, spf_domain=spf,
                          dkim=[(d, "pass") for d in dkim], resolver=tree.resolver(), **kwargs)


# --- RFC 9989 §4.10: the tree walk --------------------------------------------------------------------------------
def test_the_tree_walk_of_section_4_10():
    """§4.10: "for a message with the arbitrary Author Domain of "a.b.c.d.e.f.g.h.i.j.mail.example.com", a full DNS
    Tree Walk would require the following eight queries"."""
    found = dmarc.discover("a.b.c.d.e.f.g.h.i.j.mail.example.com", resolver=Tree().resolver())
    assert list(found.queried) == [
        "_dmarc.a.b.c.d.e.f.g.h.i.j.mail.example.com", "_dmarc.g.h.i.j.mail.example.com", "_dmarc.h.i.j.mail.example.com",
        "_dmarc.i.j.mail.example.com", "_dmarc.j.mail.example.com", "_dmarc.mail.example.com", "_dmarc.example.com",
        "_dmarc.com"]
    assert found.status == "none" and found.record is None


@pytest.mark.parametrize("records,expected,rule", [
    # §4.10.2's three examples, starting domain "a.mail.example.com"
    ({"_dmarc.mail.example.com": ["v=DMARC1; p=none"], "_dmarc.example.com": ["v=DMARC1; p=reject"]}, "example.com",
     "fewest-labels"),
    ({"_dmarc.mail.example.com": ["v=DMARC1; p=none; psd=n"], "_dmarc.example.com": ["v=DMARC1; p=reject"]},
     "mail.example.com", "psd=n"),
    ({"_dmarc.com": ["v=DMARC1; p=reject; psd=y"]}, "example.com", "psd=y"),
    ({}, "a.mail.example.com", "start"),  # "If this process does not determine the Organizational Domain ..."
])
def test_organizational_domain_examples_of_section_4_10_2(records, expected, rule):
    tree = Tree(records)
    assert dmarc.organizational_domain("a.mail.example.com", resolver=tree.resolver()) == expected
    found = dmarc.discover("a.mail.example.com", resolver=tree.resolver())
    assert (found.org_domain, found.org_rule) == (expected, rule)


def test_appendix_b_4_1_simple_example():
    tree = Tree({"_dmarc.example.com": ["v=DMARC1; p=reject"], "_dmarc.signing.example.com": ["v=DMARC1; p=reject"]},
                a=["example.com", "signing.example.com"])
    v = judge(tree, "example.com", spf="example.com", dkim=("signing.example.com",)).rfc9989
    assert (v.result, v.spf_aligned, v.dkim_aligned, v.record_domain, v.discovery.rule) == ("pass", True, True, "example.com", "author")


def test_appendix_b_4_2_deep_tree_walk():
    tree = Tree({"_dmarc.example.com": ["v=DMARC1; p=reject"], "_dmarc.signing.example.com": ["v=DMARC1; p=reject"]},
                a=["example.com", "a.b.c.d.e.f.g.h.i.j.k.example.com"])
    v = judge(tree, "a.b.c.d.e.f.g.h.i.j.k.example.com", spf="example.com", dkim=("signing.example.com",)).rfc9989
    assert v.discovery.queried == (
        "_dmarc.a.b.c.d.e.f.g.h.i.j.k.example.com", "_dmarc.g.h.i.j.k.example.com", "_dmarc.h.i.j.k.example.com",
        "_dmarc.i.j.k.example.com", "_dmarc.j.k.example.com", "_dmarc.k.example.com", "_dmarc.example.com", "_dmarc.com")
    assert (v.result, v.org_from, v.record_domain, v.discovery.rule) == ("pass", "example.com", "example.com", "organizational")
    assert v.spf_aligned and v.dkim_aligned


def test_appendix_b_4_3_psd_record():
    tree = Tree({"_dmarc.bank.example": ["v=DMARC1; p=reject; psd=y"], "_dmarc.giant.bank.example": ["v=DMARC1; p=quarantine"]},
                a=["giant.bank.example", "mail.giant.bank.example", "mail.mega.bank.example"])
    resolver = tree.resolver()
    assert dmarc.organizational_domain("giant.bank.example", resolver=resolver) == "giant.bank.example"
    assert dmarc.organizational_domain("mail.giant.bank.example", resolver=resolver) == "giant.bank.example"
    assert dmarc.organizational_domain("mail.mega.bank.example", resolver=resolver) == "mega.bank.example"
    v = judge(tree, "giant.bank.example", dkim=("mail.mega.bank.example",)).rfc9989
    assert (v.result, v.dkim_aligned, v.record_domain, v.policy) == ("fail", False, "giant.bank.example", "quarantine")
    v = judge(tree, "giant.bank.example", spf="mail.giant.bank.example").rfc9989
    assert v.result == "pass" and v.spf_aligned


# --- §4.10.1: which record applies --------------------------------------------------------------------------------
INTERMEDIATE = {"_dmarc.b.example.com": ["v=DMARC1; p=none; sp=none"],
                "_dmarc.example.com": ["v=DMARC1; p=reject; sp=quarantine"]}


def test_an_intermediate_record_is_not_the_policy():
    """From a.b.example.com: b.example.com's record is met first on the way up, but the policy is the organizational
    domain's (the fewest-labels record, example.com), read from its sp= — "not simply the first record met"."""
    tree = Tree(INTERMEDIATE, a=["a.b.example.com"])
    e = judge(tree, "a.b.example.com", spf="evil.test")
    v = e.rfc9989
    assert (v.result, v.record_domain, v.discovery.rule, v.policy_tag, v.policy, v.disposition) == (
        "fail", "example.com", "organizational", "sp", "quarantine", "quarantine")
    assert e.rfc7489.record_domain == "example.com"  # RFC 7489: the From domain, then its PSL organizational domain
    trace = [str(t) for t in v.trace()]
    assert any("_dmarc.b.example.com" in t for t in trace) and any("example.com, celui du domaine organisationnel" in t for t in trace)
    assert "sp=" in str(dmarc._TAG_RULES["sp"]) and len(v.trace_frame()) == len(trace)


def test_psd_n_makes_the_intermediate_record_the_policy():
    tree = Tree({**INTERMEDIATE, "_dmarc.b.example.com": ["v=DMARC1; p=none; sp=reject; psd=n"]}, a=["a.b.example.com"])
    v = judge(tree, "a.b.example.com").rfc9989
    assert (v.record_domain, v.discovery.org_rule, v.policy, v.org_from) == ("b.example.com", "psd=n", "reject", "b.example.com")


def test_psd_record_applies_when_the_organizational_domain_has_none():
    tree = Tree({"_dmarc.example": ["v=DMARC1; p=reject; sp=quarantine; psd=y"]}, a=["shop.example", "www.shop.example"])
    v = judge(tree, "www.shop.example").rfc9989
    assert (v.record_domain, v.discovery.rule, v.org_from, v.policy) == ("example", "psd", "shop.example", "quarantine")
    assert "psd=y" in str(v.discovery.explain())


def test_several_records_are_discarded_and_the_walk_goes_on():
    tree = Tree({"_dmarc.x.example.com": ["v=DMARC1; p=none", "v=DMARC1; p=quarantine"],
                 "_dmarc.example.com": ["v=DMARC1; p=reject"]}, a=["x.example.com"])
    e = judge(tree, "x.example.com")
    assert (e.rfc9989.result, e.rfc9989.record_domain, e.rfc9989.policy) == ("fail", "example.com", "reject")
    assert e.rfc9989.discovery.lookups[0].outcome == "multiple"
    assert "tous écartés" in str(e.rfc9989.discovery.lookups[0].describe())
    # RFC 7489 §6.6.3 step 5: "If the remaining set contains multiple records ... DMARC processing is not applied"
    assert (e.rfc7489.result, e.rfc7489.discovery.status) == ("none", "multiple")


def test_the_non_existent_from_domain_takes_np():
    tree = Tree({"_dmarc.example.com": ["v=DMARC1; p=reject; sp=quarantine; np=none"]}, a=["real.example.com"])
    real, ghost = judge(tree, "real.example.com").rfc9989, judge(tree, "ghost.example.com").rfc9989
    assert (real.policy_tag, real.policy) == ("sp", "quarantine")
    assert (ghost.policy_tag, ghost.policy) == ("np", "none")
    assert judge(tree, "ghost.example.com").rfc7489.policy == "quarantine"  # np= does not exist in RFC 7489
    without_np = Tree({"_dmarc.example.com": ["v=DMARC1; p=reject; sp=quarantine"]}, a=["real.example.com"])
    v = judge(without_np, "ghost.example.com").rfc9989
    assert (v.policy_tag, v.policy, v.from_exists) == ("sp", "quarantine", False)
    assert any("n'existe pas (NXDOMAIN) mais l'enregistrement n'a pas de np=" in str(t) for t in v.trace())


@pytest.mark.parametrize("record,standard,result,policy", [
    ("v=DMARC1; p=reject; sp=bogus", "9989", "none", None),
    ("v=DMARC1; p=reject; sp=bogus", "7489", "none", None),
    ("v=DMARC1; p=reject; sp=bogus; rua=mailto:r@example.com", "9989", "fail", "none"),
    ("v=DMARC1; p=reject; sp=bogus; rua=mailto:r@example.com", "7489", "fail", "none"),
    ("v=DMARC1; p=reject; np=maybe", "9989", "none", None),
    ("v=DMARC1; p=reject; np=maybe", "7489", "fail", "reject"),  # np is not an RFC 7489 tag: ignored
    ("v=DMARC1; p=maybe; rua=mailto:r@example.com", "9989", "fail", "none"),
    ("v=DMARC1; rua=mailto:r@example.com", "7489", "fail", "none"),
    ("v=DMARC1; sp=reject", "9989", "none", None),
])
def test_invalid_p_sp_np_act_as_p_none_with_rua_else_no_dmarc(record, standard, result, policy):
    """RFC 7489 §6.6.3 step 6 and RFC 9989 §4.10.1: "does not contain a valid "p" tag, or contains an "sp" [or "np"]
    tag that is not valid": p=none with a valid rua, else no DMARC processing — the valid p is not applied."""
    tree = Tree({"_dmarc.example.com": [record]}, a=["example.com"])
    v = getattr(judge(tree, "example.com"), f"rfc{standard}")
    assert (v.result, v.policy, v.disposition) == (result, policy, policy or "none")


def test_tag_names_are_case_insensitive_but_not_the_version():
    tree = Tree({"_dmarc.example.com": ["V=DMARC1; P=Reject; ADKIM=s"]}, a=["example.com", "mail.example.com"])
    e = judge(tree, "example.com", dkim=("mail.example.com",))
    assert (e.rfc9989.result, e.rfc9989.disposition, e.rfc7489.disposition) == ("fail", "reject", "reject")
    assert not e.rfc9989.dkim_aligned  # ADKIM=s read: strict alignment
    lower = Tree({"_dmarc.example.com": ["v=dmarc1; p=reject"]}, a=["example.com"])
    assert judge(lower, "example.com").rfc9989.result == "none"


@pytest.mark.parametrize("pct,sample,disposition", [(0, 0.0, "quarantine"), (0, 0.99, "quarantine"), (50, 0.2, "reject"),
                                                    (50, 0.7, "quarantine"), (100, 0.99, "reject")])
def test_rfc7489_pct_sampling_gives_the_next_lower_policy(pct, sample, disposition):
    tree = Tree({"_dmarc.example.com": [f"v=DMARC1; p=reject; pct={pct}"]}, a=["example.com"])
    e = judge(tree, "example.com", sample=sample)
    assert (e.rfc7489.disposition, e.rfc7489.sampled) == (disposition, disposition == "reject")
    assert any("RFC 7489 §6.6.4" in str(n) for n in e.rfc7489.notes)
    assert e.rfc9989.disposition == "reject"  # pct= was removed by RFC 9989


def test_rfc9989_test_mode_beside_pct():
    tree = Tree({"_dmarc.example.com": ["v=DMARC1; p=reject; pct=0; t=y"]}, a=["example.com"])
    e = judge(tree, "example.com", sample=0.5)
    assert (e.rfc9989.disposition, e.rfc9989.testing, e.rfc7489.disposition) == ("quarantine", True, "quarantine")
    assert any("t=y" in str(n) for n in e.rfc9989.notes) and any("pct=0" in str(n) for n in e.rfc7489.notes)


def test_a_dns_error_on_the_walk_is_temperror():
    tree = Tree({"_dmarc.example.com": ["v=DMARC1; p=reject"]}, a=["x.example.com"], servfail=["_dmarc.example.com"])
    assert judge(tree, "x.example.com").rfc9989.result == "temperror"


# --- the same verdicts as mailauth, on generated DNS trees ------------------------------------------------------
def _mailauth() -> tuple[str, Path]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node absent : le test différentiel contre mailauth est sauté (make test installe nodejs et npm)")
    if not (JS / "node_modules" / "mailauth" / "lib" / "dmarc").is_dir():
        pytest.skip("mailauth absent : lancez « npm ci --prefix tests/js » (make test le fait)")
    return node, JS / "mailauth_judge.js"


_NAMES = ["test", "example.test", "bank.test", "a.example.test", "mail.example.test", "b.a.example.test",
          "giant.bank.test", "mail.giant.bank.test", "x.b.a.example.test"]


def _random_record(rng: random.Random) -> str:
    tags = ["v=DMARC1"]
    for tag, values in (("p", ["none", "quarantine", "reject", "Reject", "bogus", None, None]),
                        ("sp", ["none", "quarantine", "reject", "bogus", None, None, None]),
                        ("np", ["none", "quarantine", "reject", "bogus", None, None, None, None]),
                        ("psd", ["y", "n", "u", None, None, None]), ("t", ["y", "n", None, None, None]),
                        ("adkim", ["s", "r", None, None]), ("aspf", ["s", "r", None, None]),
                        ("rua", ["mailto:d@example.test", None, None])):
        value = rng.choice(values)
        if value is not None:
            tags.append(f"{tag.upper() if rng.random() < 0.1 else tag}={value}")
    return "; ".join(tags)


def _random_tree(rng: random.Random) -> tuple[Tree, list[dict]]:
    txt: dict[str, list[str]] = {}
    for name in _NAMES:
        if rng.random() < 0.4:
            txt[f"_dmarc.{name}"] = [_random_record(rng) for _ in range(2 if rng.random() < 0.1 else 1)]
    tree = Tree(txt, a=[n for n in _NAMES[1:] if rng.random() < 0.6])
    everything = _NAMES[1:] + ["ghost.example.test", "deep.x.b.a.example.test", "1.2.3.4.5.6.7.8.example.test"]
    cases = []
    for _ in range(4):
        spf = rng.choice(everything + [None])
        dkim = [rng.choice(everything) for _ in range(rng.choice([0, 1, 2]))]
        cases.append({"from": rng.choice(everything), "spfDomain": spf, "spfResult": "pass" if spf else "none",
                      "dkim": [{"domain": d, "result": "pass"} for d in dkim]})
    return tree, cases


def test_same_verdicts_as_mailauth_on_generated_trees():
    node, script = _mailauth()
    rng = random.Random(9989)
    trees = [_random_tree(rng) for _ in range(250)]
    payload = [tree.for_mailauth(cases) for tree, cases in trees]
    done = subprocess.run([node, str(script)], input=json.dumps(payload), capture_output=True, text=True, timeout=120,
                          cwd=JS, check=True)
    theirs = json.loads(done.stdout)
    compared, disagreements = 0, []
    for (tree, cases), answers in zip(trees, theirs):
        for case, other in zip(cases, answers):
            v = dmarc.evaluate(case["from"], spf_result=case["spfResult"], spf_domain=case["spfDomain"],
                               dkim=[(d["domain"], d["result"]) for d in case["dkim"]], resolver=tree.resolver()).rfc9989
            applied = None if v.result in ("none", "temperror") else (dmarc._LOWER[v.policy] if v.testing else v.policy)
            ours = (v.result, applied, v.record_domain if v.result not in ("none", "temperror") else None)
            them = (other["result"], other.get("policy") if other["result"] not in ("none", "temperror") else None,
                    other.get("policyDomain") if other["result"] not in ("none", "temperror") else None)
            compared += 1
            if ours != them:
                disagreements.append((tree.txt, case, ours, them))
    assert compared == 1000
    assert not disagreements, "\n".join(map(str, disagreements[:5]))


# --- found by an outside review: DNS failures, IDN, repeated tags, impossible names --------------------------------
def test_a_dns_failure_while_walking_for_alignment_is_temperror_not_fail():
    """RFC 9989 §5.3.6: a DNS query that does not complete: "the message cannot be considered to pass or fail"."""
    tree = Tree({"_dmarc.a.example.com": ["v=DMARC1; p=reject"], "_dmarc.example.com": ["v=DMARC1; p=none"]},
                a=["a.example.com", "b.example.com"], servfail=["_dmarc.example.com"])
    v = judge(tree, "a.example.com", dkim=("b.example.com",)).rfc9989
    assert (v.result, v.disposition) == ("temperror", "none") and "§5.3.6" in str(v.reason)


def test_an_unknown_existence_between_sp_and_np_is_temperror():
    tree = Tree({"_dmarc.example.com": ["v=DMARC1; p=reject; np=none"]}, a=["x.example.com"], servfail=["ghost.example.com"])
    assert judge(tree, "ghost.example.com").rfc9989.result == "temperror"


def test_a_u_label_author_domain_is_converted_to_an_a_label():
    """RFC 9989 §5.3.1: "If the domain is a U-label, the domain MUST be converted to an A-label"."""
    tree = Tree({"_dmarc.xn--bcher-kva.example": ["v=DMARC1; p=reject"]}, a=["xn--bcher-kva.example"])
    v = judge(tree, "BÜCHER.example", spf="xn--bcher-kva.example").rfc9989
    assert (v.result, v.record_domain) == ("pass", "xn--bcher-kva.example")


def test_a_repeated_tag_makes_the_record_invalid():
    """RFC 9989 §4.7 refers to RFC 6376 §3.2: "if a tag name does occur more than once, the entire tag-list is invalid"."""
    tree = Tree({"_dmarc.example.com": ["v=DMARC1; p=none; p=reject"]}, a=["example.com"])
    v = judge(tree, "example.com").rfc9989
    assert (v.result, v.disposition) == ("none", "none") and "répétée" in str(v.reason)


def test_a_from_name_that_cannot_exist_still_gets_its_parents_policy():
    tree = Tree({"_dmarc.example.com": ["v=DMARC1; p=reject"]}, a=["example.com"])
    v = judge(tree, "a" * 64 + ".example.com").rfc9989
    assert (v.result, v.disposition, v.record_domain) == ("fail", "reject", "example.com")
