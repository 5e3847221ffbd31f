#!/usr/bin/env node
'use strict';

// DMARC judge backed by mailauth (>= 6, RFC 9989 DNS Tree Walk) and a fake DNS taken from stdin.
// Used by tests/test_dmarc_rfc9989.py (differential test); mailauth is pinned in package-lock.json beside this file.
//
// stdin: {
//   "dns":   { "_dmarc.example.com": ["v=DMARC1; p=reject", ...], ... },   // TXT records; a record may
//                                                                         // also be a list of character-strings
//   "a":     { "host.example.com": ["192.0.2.1"], ... } | ["host.example.com", ...],  // names with A/MX (optional)
//   "cname": { "alias.example.com": "target.example.com" },              // optional
//   "servfail": ["_dmarc.broken.example"],                               // optional, answer ESERVFAIL
//   "strict": false,                                                      // optional, mailauth strict mode
//   "raw": false,                                                         // optional, add the full mailauth result
//   "cases": [{ "from": "a.b.example.com" | "user@a.b.example.com",
//               "spfDomain": "...", "spfResult": "pass|fail|none",
//               "dkim": [{ "domain": "...", "result": "pass" }],
//               "strict": false }]
// }
// stdout: JSON array, one object per case (see REPORT.md).
//
// Only mailauth/lib/dmarc is loaded: the package's main entry pulls in undici 8, which needs Node >= 22.

const { evaluateDmarc } = require('mailauth/lib/dmarc');

const norm = name => String(name).toLowerCase().replace(/\.+$/, '');

const dnsError = (code, name, rrtype) => {
    const err = new Error(`query${rrtype} ${code} ${name}`);
    err.code = code;
    err.hostname = name;
    return err;
};

const buildResolver = (input, log) => {
    const txt = new Map();
    for (const [name, records] of Object.entries(input.dns || {})) {
        txt.set(norm(name), [].concat(records || []).map(r => (Array.isArray(r) ? r.map(String) : [String(r)])));
    }

    const a = new Map();
    const aInput = input.a || {};
    if (Array.isArray(aInput)) {
        aInput.forEach(name => a.set(norm(name), ['192.0.2.1']));
    } else {
        for (const [name, addrs] of Object.entries(aInput)) {
            const list = [].concat(addrs === true || addrs === null || addrs === undefined ? '192.0.2.1' : addrs).map(String);
            a.set(norm(name), list.length ? list : ['192.0.2.1']);
        }
    }

    const cname = new Map(Object.entries(input.cname || {}).map(([k, v]) => [norm(k), norm(v)]));
    const servfail = new Set((input.servfail || []).map(norm));

    // Every owner name in the zone; its parents exist too (empty non-terminals, RFC 8020).
    const owners = [...txt.keys(), ...a.keys(), ...cname.keys()];
    const exists = name => owners.some(o => o === name || o.endsWith(`.${name}`));

    return async (name, rrtype) => {
        rrtype = (rrtype || 'A').toUpperCase();
        const n = norm(name);
        log.push([n, rrtype]);

        if (servfail.has(n)) {
            throw dnsError('ESERVFAIL', n, rrtype);
        }

        if (rrtype === 'CNAME') {
            if (cname.has(n)) return [cname.get(n)];
        } else if (cname.has(n)) {
            // follow the alias like a recursive resolver; a dangling target gives NXDOMAIN
            const target = cname.get(n);
            if (rrtype === 'TXT' && txt.has(target)) return txt.get(target);
            if (rrtype === 'A' && a.has(target)) return a.get(target);
            throw dnsError(exists(target) ? 'ENODATA' : 'ENOTFOUND', n, rrtype);
        } else if (rrtype === 'TXT' && txt.has(n)) {
            return txt.get(n);
        } else if ((rrtype === 'A' || rrtype === 'MX') && a.has(n)) {
            return rrtype === 'A' ? a.get(n) : [{ exchange: n, priority: 10 }];
        }

        throw dnsError(exists(n) ? 'ENODATA' : 'ENOTFOUND', n, rrtype);
    };
};

const judgeCase = async (input, c) => {
    const queries = [];
    const resolver = buildResolver(input, queries);

    const spfDomains = c.spfDomain && (c.spfResult || 'pass') === 'pass' ? [c.spfDomain] : [];
    const dkimDomains = (c.dkim || []).filter(d => d && d.domain && (d.result || 'pass') === 'pass').map(d => ({ domain: d.domain }));
    const strict = c.strict !== undefined ? !!c.strict : !!input.strict;

    const out = { from: c.from };
    try {
        const { response, reason, authorDomains } = await evaluateDmarc({
            headerFrom: c.from,
            spfDomains,
            dkimDomains,
            resolver,
            strict
        });

        if (!response) {
            Object.assign(out, { result: null, reason, authorDomains });
        } else {
            Object.assign(out, {
                result: response.status.result,
                policy: response.policy ?? null, // applied policy after p/sp/np and t=y
                policyEvaluated: response.status.policy?.dmarc ?? null, // policy.dmarc of the A-R header
                p: response.p ?? null,
                sp: response.sp ?? null, // mailauth reports sp defaulted to p
                np: response.np ?? null,
                policyDomain: response.policyDomain ?? null, // where the applied record was published
                orgDomain: response.domain ?? null, // Tree Walk Organizational Domain of the author domain
                testing: response.testMode ?? null, // t=y
                alignment: response.alignment
                    ? { spf: response.alignment.spf.result ?? null, dkim: response.alignment.dkim.result ?? null, aspf: response.alignment.spf.strict ? 's' : 'r', adkim: response.alignment.dkim.strict ? 's' : 'r' }
                    : null,
                rr: response.rr ?? null,
                error: response.error ?? null,
                warnings: response.warnings ?? [],
                info: response.info
            });
            if (input.raw) out.raw = response;
        }
    } catch (err) {
        Object.assign(out, { result: 'exception', error: err.message });
    }
    out.queries = queries.map(([n, t]) => `${t} ${n}`);
    return out;
};

const main = async () => {
    let data = '';
    for await (const chunk of process.stdin) data += chunk;
    const parsed = JSON.parse(data || '{}');
    // one DNS tree, or a list of trees (one node process for a whole generated batch)
    const inputs = Array.isArray(parsed) ? parsed : [parsed];
    const all = [];
    for (const input of inputs) {
        const results = [];
        for (const c of input.cases || []) {
            results.push(await judgeCase(input, c));
        }
        all.push(results);
    }
    const out = Array.isArray(parsed) ? all : all[0];
    process.stdout.write(JSON.stringify(out, null, parsed.compact ? 0 : 2) + '\n');
};

main().catch(err => {
    process.stderr.write(`${err.stack || err}\n`);
    process.exit(1);
});
