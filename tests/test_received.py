"""Received headers as real servers write them (RFC 5321 §4.4, RFC 5322 §3.6.7): the connecting address from every
TCP-info form seen in the wild, the EHLO name, the reverse name, the port, envelope-from, TLS and authentication,
and the date even without ";". Each header below is verbatim from the public source cited beside it (mail archives
and test suites of other projects), expectations checked by hand against the header text.
"""

from __future__ import annotations

import doctest
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labmail import dmarc, headers, spf
from labmail.headers import parse_received

from fuzzing import examples

CASES = [
    # C1. Postfix, TLSv1.3 with key-exchange line, Authenticated sender, no "for" — `from ofsar (unknown [116.232.18.222])`; multi-line TLS comment `(
    ('https://github.com/linux-mailinglist-archives/linux-mmc.vger.kernel.org.0/blob/8de46ff6621a2293e4e3fc009aeccd8dc0773a92/m',
     'Received: from ofsar (unknown [116.232.18.222])\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n\t key-exchange x25519 server-signature RSA-PSS (4096 bits) server-digest SHA256)\n\t(No client certificate requested)\n\t(Authenticated sender: dlan)\n\tby smtp.gentoo.org (Postfix) with ESMTPSA id 27B5C341EAC;\n\tFri, 09 Jan 2026 11:37:13 +0000 (UTC)',
     {'helo': 'ofsar', 'rdns': None, 'ip': '116.232.18.222', 'port': None, 'by': 'smtp.gentoo.org', 'with_': 'ESMTPSA', 'envelope_from': None, 'tls': True, 'tls_version': 'TLSv1.3', 'authenticated': True, 'date': '2026-01-09T11:37:13+00:00'}),
    # C5. Exim 4.97 with TLS1.3, helo=, envelope-from, one clause per line — `([77.183.140.215] helo=suse-laptop.fritz.box)`; `with esmtpsa (TLS1.3)` 
    ('https://github.com/linux-mailinglist-archives/linux-mmc.vger.kernel.org.0/blob/b10a793a19400926366e37d111ac0750efdca592/m',
     'Received: from dynamic-077-183-140-215.77.183.pool.telefonica.de ([77.183.140.215] helo=suse-laptop.fritz.box)\n          by inpost2.zedat.fu-berlin.de (Exim 4.97)\n          with esmtpsa (TLS1.3)\n          tls TLS_AES_256_GCM_SHA384\n          (envelope-from <glaubitz@physik.fu-berlin.de>)\n          id 1rZzla-00000001fwb-39u4; Tue, 13 Feb 2024 21:52:34 +0100',
     {'helo': 'suse-laptop.fritz.box', 'rdns': 'dynamic-077-183-140-215.77.183.pool.telefonica.de', 'ip': '77.183.140.215', 'port': None, 'by': 'inpost2.zedat.fu-berlin.de', 'with_': 'esmtpsa tls TLS_AES_256_GCM_SHA384', 'envelope_from': 'glaubitz@physik.fu-berlin.de', 'tls': True, 'tls_version': 'TLS1.3', 'authenticated': True, 'date': '2024-02-13T21:52:34+01:00'}),
    # C6. Exim 4.98.1 — [ip] (port=NNN helo=[ip-literal]) — `from [95.248.141.113] (port=63559 helo=[192.168.178.65])`; double space in `esmtpsa  (TLS
    ('https://github.com/linux-mailinglist-archives/linux-mmc.vger.kernel.org.0/blob/2c2875e1adbbe26418f283b3093145f1fb08c8cf/m',
     'Received: from [95.248.141.113] (port=63559 helo=[192.168.178.65])\n\tby esm19.siteground.biz with esmtpsa  (TLS1.3) tls TLS_AES_256_GCM_SHA384\n\t(Exim 4.98.1)\n\t(envelope-from <francesco@valla.it>)\n\tid 1veasj-00000000ODh-1OLP;\n\tSat, 10 Jan 2026 15:28:01 +0000',
     {'helo': '[192.168.178.65]', 'rdns': None, 'ip': '95.248.141.113', 'port': 63559, 'by': 'esm19.siteground.biz', 'with_': 'esmtpsa tls TLS_AES_256_GCM_SHA384', 'envelope_from': 'francesco@valla.it', 'tls': True, 'tls_version': 'TLS1.3', 'authenticated': True, 'date': '2026-01-10T15:28:01+00:00'}),
    # C8. Exim 4.87 — [ip]:port helo= — `([86.187.174.57]:45321 helo=User)` — port appended after bracket; `(envelope-from <...>)` between `with` and 
    ('https://github.com/SpamScope/mail-parser/blob/01c177fecddd9db1def23ba509ab31b12ab4fbc5/tests/mails/mail_test_4',
     'Received: from host86-187-174-57.range86-187.btcentralplus.com ([86.187.174.57]:45321 helo=User)\n\tby localhost.localdomain.com with esmtpa (Exim 4.87)\n\t(envelope-from <anabelgonzalo@fanox.com>)\n\tid 1bakrE-000291-LF; Fri, 19 Aug 2016 20:34:52 +0600',
     {'helo': 'User', 'rdns': 'host86-187-174-57.range86-187.btcentralplus.com', 'ip': '86.187.174.57', 'port': 45321, 'by': 'localhost.localdomain.com', 'with_': 'esmtpa', 'envelope_from': 'anabelgonzalo@fanox.com', 'tls': False, 'tls_version': None, 'authenticated': True, 'date': '2016-08-19T20:34:52+06:00'}),
    # C10. Sendmail — authenticated bits=0, User authenticated as, TLS comment — `(8.14.7/8.12.4)` version comment after by-domain; `(authenticated bi
    ('https://github.com/linux-mailinglist-archives/linux-mmc.vger.kernel.org.0/blob/9db055acde39c3f79f5422f9e8d5045faf6d7a93/m',
     'Received: from cwcc.thunk.org (pool-173-48-120-46.bstnma.fios.verizon.net [173.48.120.46])\n        (authenticated bits=0)\n        (User authenticated as tytso@ATHENA.MIT.EDU)\n        by outgoing.mit.edu (8.14.7/8.12.4) with ESMTP id 2AHFgbpU025691\n        (version=TLSv1/SSLv3 cipher=DHE-RSA-AES256-GCM-SHA384 bits=256 verify=NOT);\n        Thu, 17 Nov 2022 10:42:38 -0500',
     {'helo': 'cwcc.thunk.org', 'rdns': 'pool-173-48-120-46.bstnma.fios.verizon.net', 'ip': '173.48.120.46', 'port': None, 'by': 'outgoing.mit.edu', 'with_': 'ESMTP', 'envelope_from': None, 'tls': True, 'tls_version': None, 'authenticated': True, 'date': '2022-11-17T10:42:38-05:00'}),
    # C13. Gmail inbound — SMTPS, for <...>, (Google Transport Security) — `(mail-sor-f41.google.com. [209.85.220.41])` — rDNS with trailing dot; `wit
    ('https://github.com/postalsys/mailauth/blob/d2616c6bee77cf0cf77fe6ea6743b856696f081e/test/fixtures/arc-fail.eml',
     'Received: from mail-sor-f41.google.com (mail-sor-f41.google.com. [209.85.220.41])\n        by mx.google.com with SMTPS id e21sor2892698lfq.1.2020.11.02.01.57.24\n        for <andris.reinman@gmail.com>\n        (Google Transport Security);\n        Mon, 02 Nov 2020 01:57:24 -0800 (PST)',
     {'helo': 'mail-sor-f41.google.com', 'rdns': 'mail-sor-f41.google.com', 'ip': '209.85.220.41', 'port': None, 'by': 'mx.google.com', 'with_': 'SMTPS', 'envelope_from': None, 'tls': True, 'tls_version': None, 'authenticated': False, 'date': '2020-11-02T01:57:24-08:00'}),
    # C14. Gmail inbound — ESMTPS with (version=TLS1_3 cipher=... bits=256/256) — upper-case HELO `MTA-244-117.TLL07.ZONEAS.EU` vs lower-case rDNS wit
    ('https://github.com/postalsys/mailauth/blob/d2616c6bee77cf0cf77fe6ea6743b856696f081e/test/fixtures/zbimi.eml',
     'Received: from MTA-244-117.TLL07.ZONEAS.EU (mta-244-117.tll07.zoneas.eu. [85.234.244.117])\n        by mx.google.com with ESMTPS id i7-20020a056e020d8700b0030d70d9a6absi3210775ilj.159.2023.01.27.00.11.25\n        for <andris.reinman@gmail.com>\n        (version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384 bits=256/256);\n        Fri, 27 Jan 2023 00:11:26 -0800 (PST)',
     {'helo': 'MTA-244-117.TLL07.ZONEAS.EU', 'rdns': 'mta-244-117.tll07.zoneas.eu', 'ip': '85.234.244.117', 'port': None, 'by': 'mx.google.com', 'with_': 'ESMTPS', 'envelope_from': None, 'tls': True, 'tls_version': 'TLS1_3', 'authenticated': False, 'date': '2023-01-27T00:11:26-08:00'}),
    # C16. Gmail internal — "by 2002:..." with no from clause — no `from`; by-domain is a bare IPv6 address `2002:a05:6358:e483:b0:ed:1eae:60a3` (not 
    ('https://github.com/postalsys/mailauth/blob/d2616c6bee77cf0cf77fe6ea6743b856696f081e/test/fixtures/zbimi.eml',
     'Received: by 2002:a05:6358:e483:b0:ed:1eae:60a3 with SMTP id by3csp989960rwb;\n        Fri, 27 Jan 2023 00:11:26 -0800 (PST)',
     {'helo': None, 'rdns': None, 'ip': None, 'port': None, 'by': '2002:a05:6358:e483:b0:ed:1eae:60a3', 'with_': 'SMTP', 'envelope_from': None, 'tls': False, 'tls_version': None, 'authenticated': False, 'date': '2023-01-27T00:11:26-08:00'}),
    # C20. Gmail via IPv6 into Postfix — [IPv6:...] address literal — `[IPv6:2a00:1450:4864:20::12a]`; two spaces before day `Tue,  4 Apr 2023` (Postf
    ('https://github.com/linux-mailinglist-archives/linux-mmc.vger.kernel.org.0/blob/7dfa5c3d26f2b7304416696374749c6e5bfe41a4/m',
     'Received: from mail-lf1-x12a.google.com (mail-lf1-x12a.google.com [IPv6:2a00:1450:4864:20::12a])\n        by lindbergh.monkeyblade.net (Postfix) with ESMTPS id B7FED4C1A\n        for <linux-mmc@vger.kernel.org>; Tue,  4 Apr 2023 23:50:45 -0700 (PDT)',
     {'helo': 'mail-lf1-x12a.google.com', 'rdns': 'mail-lf1-x12a.google.com', 'ip': '2a00:1450:4864:20::12a', 'port': None, 'by': 'lindbergh.monkeyblade.net', 'with_': 'ESMTPS', 'envelope_from': None, 'tls': True, 'tls_version': None, 'authenticated': False, 'date': '2023-04-04T23:50:45-07:00'}),
    # C21. vger.kernel.org — "[ip]:port "EHLO host" rhost-flags" and ORCPT comment — `([23.128.96.19]:51582 "EHLO\n        lindbergh.monkeyblade.net" 
    ('https://github.com/linux-mailinglist-archives/linux-mmc.vger.kernel.org.0/blob/7dfa5c3d26f2b7304416696374749c6e5bfe41a4/m',
     'Received: from lindbergh.monkeyblade.net ([23.128.96.19]:51582 "EHLO\n        lindbergh.monkeyblade.net" rhost-flags-OK-OK-OK-OK) by vger.kernel.org\n        with ESMTP id S237057AbjDEGur (ORCPT\n        <rfc822;linux-mmc@vger.kernel.org>); Wed, 5 Apr 2023 02:50:47 -0400',
     {'helo': 'lindbergh.monkeyblade.net', 'rdns': 'lindbergh.monkeyblade.net', 'ip': '23.128.96.19', 'port': 51582, 'by': 'vger.kernel.org', 'with_': 'ESMTP', 'envelope_from': None, 'tls': False, 'tls_version': None, 'authenticated': False, 'date': '2023-04-05T02:50:47-04:00'}),
    # C24. Exchange Online hop — IPv6 in parens, TLS1_3, id, via Frontend Transport — TCP-info is a bare IPv6 `(2603:10a6:20b:21f:cafe::4b)` (no brack
    ('https://github.com/linux-mailinglist-archives/linux-mmc.vger.kernel.org.0/blob/f6423f3957d2e526bb92571023b6f611fc69f22b/m',
     'Received: from AMS0EPF000001AD.eurprd05.prod.outlook.com\n (2603:10a6:20b:21f:cafe::4b) by AM9P195CA0007.outlook.office365.com\n (2603:10a6:20b:21f::12) with Microsoft SMTP Server (version=TLS1_3,\n cipher=TLS_AES_256_GCM_SHA384) id 15.20.9520.4 via Frontend Transport; Sun,\n 18 Jan 2026 10:29:25 +0000',
     {'helo': 'AMS0EPF000001AD.eurprd05.prod.outlook.com', 'rdns': None, 'ip': '2603:10a6:20b:21f:cafe::4b', 'port': None, 'by': 'AM9P195CA0007.outlook.office365.com', 'with_': 'Microsoft SMTP Server', 'envelope_from': None, 'tls': True, 'tls_version': 'TLS1_3', 'authenticated': False, 'date': '2026-01-18T10:29:25+00:00'}),
    # C25. Exchange Online mailbox hop — mapi, link-local IPv6 with zone index %6 — `([fe80::2c4e:e92a:4fa:a456])` and `([fe80::2c4e:e92a:4fa:a456%6])
    ('https://github.com/linux-mailinglist-archives/linux-mmc.vger.kernel.org.0/blob/3c3f03bce4ed2c448f1321be8b1ff7afe62dd2fa/m',
     'Received: from IA1PR11MB7198.namprd11.prod.outlook.com\n ([fe80::2c4e:e92a:4fa:a456]) by IA1PR11MB7198.namprd11.prod.outlook.com\n ([fe80::2c4e:e92a:4fa:a456%6]) with mapi id 15.20.9520.011; Mon, 19 Jan 2026\n 15:00:31 +0000',
     {'helo': 'IA1PR11MB7198.namprd11.prod.outlook.com', 'rdns': None, 'ip': 'fe80::2c4e:e92a:4fa:a456', 'port': None, 'by': 'IA1PR11MB7198.namprd11.prod.outlook.com', 'with_': 'mapi', 'envelope_from': None, 'tls': False, 'tls_version': None, 'authenticated': False, 'date': '2026-01-19T15:00:31+00:00'}),
    # C26. Exchange on-prem 15.2 — "id 15.2.2562.35 via Frontend Transport" — IPv4 in plain parens `(10.7.248.11)`; `(version=TLS1_2, cipher=...)` com
    ('https://github.com/linux-mailinglist-archives/linux-mmc.vger.kernel.org.0/blob/3c3f03bce4ed2c448f1321be8b1ff7afe62dd2fa/m',
     'Received: from ORSEDG901.ED.cps.intel.com (10.7.248.11) by\n ORSMSX902.amr.corp.intel.com (10.22.229.24) with Microsoft SMTP Server\n (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id\n 15.2.2562.35 via Frontend Transport; Mon, 19 Jan 2026 07:00:34 -0800',
     {'helo': 'ORSEDG901.ED.cps.intel.com', 'rdns': None, 'ip': '10.7.248.11', 'port': None, 'by': 'ORSMSX902.amr.corp.intel.com', 'with_': 'Microsoft SMTP Server', 'envelope_from': None, 'tls': True, 'tls_version': 'TLS1_2', 'authenticated': False, 'date': '2026-01-19T07:00:34-08:00'}),
    # C29. Intel IronPort-style — "with ESMTP/TLS/ECDHE-RSA-AES256-GCM-SHA384; 19 Jan 2026" — protocol token with slashes `ESMTP/TLS/ECDHE-RSA-AES256-
    ('https://github.com/linux-mailinglist-archives/linux-mmc.vger.kernel.org.0/blob/3c3f03bce4ed2c448f1321be8b1ff7afe62dd2fa/m',
     'Received: from fmviesa009.fm.intel.com ([10.60.135.149])\n  by orvoesa111.jf.intel.com with ESMTP/TLS/ECDHE-RSA-AES256-GCM-SHA384; 19 Jan 2026 07:00:36 -0800',
     {'helo': 'fmviesa009.fm.intel.com', 'rdns': None, 'ip': '10.60.135.149', 'port': None, 'by': 'orvoesa111.jf.intel.com', 'with_': 'ESMTP/TLS/ECDHE-RSA-AES256-GCM-SHA384', 'envelope_from': None, 'tls': True, 'tls_version': None, 'authenticated': False, 'date': '2026-01-19T07:00:36-08:00'}),
    # C30. Cisco IronPort — "from unknown (HELO x) ([ip])" — qmail/IronPort style: `from unknown (HELO email.microchip.com) ([170.129.1.10])`
    ('https://github.com/linux-mailinglist-archives/linux-mmc.vger.kernel.org.0/blob/efa971c626ff8b307e57bb2ad45a25c0be29977c/m',
     'Received: from unknown (HELO email.microchip.com) ([170.129.1.10])\n  by esa2.microchip.iphmx.com with ESMTP/TLS/ECDHE-RSA-AES128-GCM-SHA256; 24 Dec 2025 09:29:48 -0700',
     {'helo': 'email.microchip.com', 'rdns': None, 'ip': '170.129.1.10', 'port': None, 'by': 'esa2.microchip.iphmx.com', 'with_': 'ESMTP/TLS/ECDHE-RSA-AES128-GCM-SHA256', 'envelope_from': None, 'tls': True, 'tls_version': None, 'authenticated': False, 'date': '2025-12-24T09:29:48-07:00'}),
    # C33. qmail — "from unknown (HELO ) (ip)" empty HELO — empty HELO `(HELO )`; bare IPv4 in parens; `with SMTP;` then date without weekday
    ('https://github.com/SpamScope/mail-parser/blob/01c177fecddd9db1def23ba509ab31b12ab4fbc5/tests/mails/mail_malformed_1',
     'Received: from unknown (HELO ) (185.137.84.106)\n  by smtp.customers.net with SMTP; 24 May 2016 12:30:11 -0000',
     {'helo': None, 'rdns': None, 'ip': '185.137.84.106', 'port': None, 'by': 'smtp.customers.net', 'with_': 'SMTP', 'envelope_from': None, 'tls': False, 'tls_version': None, 'authenticated': False, 'date': '2016-05-24T12:30:11+00:00'}),
    # C34. qmail — HELO differs from rDNS (pphosted) — `from mx0b-001b2d01.pphosted.com (HELO mx0a-001b2d01.pphosted.com) (148.163.158.5)`
    ('https://github.com/SpamScope/mail-parser/blob/01c177fecddd9db1def23ba509ab31b12ab4fbc5/tests/mails/mail_test_10',
     'Received: from mx0b-001b2d01.pphosted.com (HELO mx0a-001b2d01.pphosted.com) (148.163.158.5)\n  by smtp.didi.net with SMTP; 8 Mar 2017 16:46:30 -0000',
     {'helo': 'mx0a-001b2d01.pphosted.com', 'rdns': 'mx0b-001b2d01.pphosted.com', 'ip': '148.163.158.5', 'port': None, 'by': 'smtp.didi.net', 'with_': 'SMTP', 'envelope_from': None, 'tls': False, 'tls_version': None, 'authenticated': False, 'date': '2017-03-08T16:46:30+00:00'}),
    # C38. Mailchimp — "from (127.0.0.1) by ..." and (envelope-from ...) after the date — from-domain missing (only a comment `(127.0.0.1)`); `(envelo
    ('https://github.com/SpamScope/mail-parser/blob/01c177fecddd9db1def23ba509ab31b12ab4fbc5/tests/mails/mail_test_13',
     'Received: from (127.0.0.1) by mail90.suw15.mcsv.net id hgs0ok2ddl42 for <dpinnix@coastbankcalifornia.com>; Wed, 29 Aug 2018 20:26:47 +0000 (envelope-from <bounce-mc.us14_65794145.395229-dpinnix=coastbankcalifornia.com@mail90.suw15.mcsv.net>)',
     {'helo': None, 'rdns': None, 'ip': '127.0.0.1', 'port': None, 'by': 'mail90.suw15.mcsv.net', 'with_': None, 'envelope_from': 'bounce-mc.us14_65794145.395229-dpinnix=coastbankcalifornia.com@mail90.suw15.mcsv.net', 'tls': False, 'tls_version': None, 'authenticated': False, 'date': '2018-08-29T20:26:47+00:00'}),
    # C41. Oracle Beehive — "(/10.156.108.201)" Java InetAddress form — `(/10.156.108.201)` — slash-prefixed IP; `by default (Oracle Beehive Gateway v
    ('https://github.com/linux-mailinglist-archives/linux-mmc.vger.kernel.org.0/blob/733d4019e9ac0cf03458c4c1cae402dfe23b1704/m',
     'Received: from ca-mkp.ca.oracle.com (/10.156.108.201)\n        by default (Oracle Beehive Gateway v4.0)\n        with ESMTP ; Mon, 07 Dec 2020 20:52:13 -0800',
     {'helo': 'ca-mkp.ca.oracle.com', 'rdns': None, 'ip': '10.156.108.201', 'port': None, 'by': 'default', 'with_': 'ESMTP', 'envelope_from': None, 'tls': False, 'tls_version': None, 'authenticated': False, 'date': '2020-12-07T20:52:13-08:00'}),
    # C42. BT (Critical Path / Openwave) — "(EHLO _192.168.0.100_) ([ip])" + AUTH comment — `(EHLO _192.168.0.100_)` — EHLO argument with underscores;
    ('https://github.com/linux-mailinglist-archives/linux-mmc.vger.kernel.org.0/blob/ff3edfdd324237081fefc66085c0d20fa69d9a2a/m',
     'Received: from 195-140-225-12.therecom.net (EHLO _192.168.0.100_) ([195.140.225.12])\n        by dy11780omr11.dci.bt.com\n        with ESMTP id ZLE44624 (AUTH inclusion@btconnect.com);\n        Mon, 01 Feb 2021 14:37:09 +0000 (GMT)',
     {'helo': '_192.168.0.100_', 'rdns': '195-140-225-12.therecom.net', 'ip': '195.140.225.12', 'port': None, 'by': 'dy11780omr11.dci.bt.com', 'with_': 'ESMTP', 'envelope_from': None, 'tls': False, 'tls_version': None, 'authenticated': True, 'date': '2021-02-01T14:37:09+00:00'}),
    # C45. Yahoo inbound (atlas) — "from ip(EHLO host)" and no ";" before the date (GitHub issue) — no space before `(EHLO`; NO `;` before the date; `
    ('https://github.com/pimlie/authres_status/issues/39',
     'Received: from 91.190.168.87(EHLO poc-ftven2.splio.com)\n by atlas207.free.mail.gq1.yahoo.comwith SMTPs Fri, 6 Mar 2020 09:53:21 +0000',
     {'helo': 'poc-ftven2.splio.com', 'rdns': None, 'ip': '91.190.168.87', 'port': None, 'by': 'atlas207.free.mail.gq1.yahoo.com', 'with_': 'SMTPs', 'envelope_from': None, 'tls': True, 'tls_version': None, 'authenticated': False, 'date': '2020-03-06T09:53:21+00:00'}),
    # C48. Haraka — "envelope-from <...>" as a bare clause (no parens) — `envelope-from <andris.reinman@gmail.com>` without parentheses (non-RFC5321 c
    ('https://github.com/postalsys/mailauth/blob/d2616c6bee77cf0cf77fe6ea6743b856696f081e/test/fixtures/zproov.eml',
     'Received: from mail-oi1-f179.google.com (mail-oi1-f179.google.com [209.85.167.179])\n\tby zonemx.eu (Haraka/2.8.25) with ESMTPS id B3C0198B-A390-42E9-9DDC-C57D8D207298.1\n\tenvelope-from <andris.reinman@gmail.com>\n\t(cipher=TLS_AES_256_GCM_SHA384);\n\tFri, 06 Nov 2020 12:20:14 +0000',
     {'helo': 'mail-oi1-f179.google.com', 'rdns': 'mail-oi1-f179.google.com', 'ip': '209.85.167.179', 'port': None, 'by': 'zonemx.eu', 'with_': 'ESMTPS', 'envelope_from': 'andris.reinman@gmail.com', 'tls': True, 'tls_version': None, 'authenticated': False, 'date': '2020-11-06T12:20:14+00:00'}),
    # C49. ZoneMTA — "from foo [127.0.0.1]" (no parens around IP) — address literal directly after HELO without parentheses; single-space continuation
    ('https://github.com/postalsys/mailauth/blob/d2616c6bee77cf0cf77fe6ea6743b856696f081e/test/fixtures/arc-fail.eml',
     'Received: from foo [127.0.0.1]\n by srs3.zonevs.eu (ZoneMTA Forwarder) with ESMTP id 175886347950003d56.001\n for <andris@tr.ee>;\n Mon, 02 Nov 2020 09:56:57 +0000',
     {'helo': 'foo', 'rdns': None, 'ip': '127.0.0.1', 'port': None, 'by': 'srs3.zonevs.eu', 'with_': 'ESMTP', 'envelope_from': None, 'tls': False, 'tls_version': None, 'authenticated': False, 'date': '2020-11-02T09:56:57+00:00'}),
    # C50. ZoneMTA submission — "([51.195.117.31] vpn.srv.dev)" and (Authenticated sender: x[y]) — IP literal BEFORE the hostname inside TCP-info; `(A
    ('https://github.com/postalsys/mailauth/blob/d2616c6bee77cf0cf77fe6ea6743b856696f081e/test/fixtures/zbimi.eml',
     'Received: from smtpclient.apple ([51.195.117.31] vpn.srv.dev)\n (Authenticated sender: zmail-364712[andris@zone.ee])\n by MTA-244-117.TLL07.ZONEAS.EU (ZoneMTA Forwarder) with ESMTPSA id 185f247f1cb000bca9.001\n for <andris.reinman@gmail.com>\n (version=TLSv1/SSLv3 cipher=ECDHE-RSA-AES128-GCM-SHA256);\n Fri, 27 Jan 2023 08:11:19 +0000',
     {'helo': 'smtpclient.apple', 'rdns': 'vpn.srv.dev', 'ip': '51.195.117.31', 'port': None, 'by': 'MTA-244-117.TLL07.ZONEAS.EU', 'with_': 'ESMTPSA', 'envelope_from': None, 'tls': True, 'tls_version': None, 'authenticated': True, 'date': '2023-01-27T08:11:19+00:00'}),
    # C65. RFC 8617 example Received headers ([2001:DB8::1A], authenticated bits, envelope-from after date) — spec example, 4 fields: `from [2001:DB8:
    ('https://github.com/jstedfast/MimeKit/blob/cf6d38dd0a1a26b5145c10b35e971efc133e1fb3/rfc/rfc8617.txt',
     'Received: from [2001:DB8::1A] (w-x-y-z.dsl.static.isp.example [w.x.y.z])\n    (authenticated bits=0)\n    by segv.d1.example with ESMTP id t0FN4a8O084569;\n    Thu, 14 Jan 2015 15:00:01 -0800 (PST)\n    (envelope-from jqd@d1.example)',
     {'helo': '[2001:DB8::1A]', 'rdns': None, 'ip': '2001:DB8::1A', 'port': None, 'by': 'segv.d1.example', 'with_': 'ESMTP', 'envelope_from': None, 'tls': False, 'tls_version': None, 'authenticated': True, 'date': '2015-01-14T15:00:01-08:00'}),
    # C70. SpamAssassin rcvd_parser sample: ecelerity [ip:port] helo=, empty from — ecelerity: empty from-domain, `[ip:port]` with port INSIDE the bra
    ('https://github.com/apache/spamassassin/blob/f7fe7b82a2db63ee1406d74d88ce564b69881954/t/rcvd_parser.t',
     'from ([192.168.1.205:50387] helo=i6.prod.democracyinaction.com) by m12.prod.democracyinaction.com (ecelerity 2.1.1.3 r(11743)) with ESMTP id 80/0A-02454-4DCB6054 for <example@vandinter.org>; Tue, 12 Sep 2006 09:57:40 -0400',
     {'helo': 'i6.prod.democracyinaction.com', 'rdns': None, 'ip': '192.168.1.205', 'port': 50387, 'by': 'm12.prod.democracyinaction.com', 'with_': 'ESMTP', 'envelope_from': None, 'tls': False, 'tls_version': None, 'authenticated': False, 'date': '2006-09-12T09:57:40-04:00'}),
    # C71. SpamAssassin rcvd_parser sample: Exim 3 [ip.port] and (ident) — Exim 3: `[ip.port]` (port as 5th dotted component) outside parens, ident `(
    ('https://github.com/apache/spamassassin/blob/f7fe7b82a2db63ee1406d74d88ce564b69881954/t/rcvd_parser.t',
     'from helene8.i.pinwand.net (helene.cats.ms) [10.0.8.6.13219] (mail) by lisbeth.i.pinwand.net with esmtp (Exim 3.35 #1 (Debian)) id 1CO5y7-0001vC-00; Sun, 31 Oct 2004 04:01:23 +0100',
     {'helo': 'helene8.i.pinwand.net', 'rdns': None, 'ip': '10.0.8.6', 'port': 13219, 'by': 'lisbeth.i.pinwand.net', 'with_': 'esmtp', 'envelope_from': None, 'tls': False, 'tls_version': None, 'authenticated': False, 'date': '2004-10-31T04:01:23+01:00'}),
    # C80. SpamAssassin rcvd_parser sample: NAVGW from-part inside a comment — Norton AV gateway: the from-part is entirely inside a comment
    ('https://github.com/apache/spamassassin/blob/f7fe7b82a2db63ee1406d74d88ce564b69881954/t/rcvd_parser.t',
     '(from KRYPTIK [70.20.57.51]) by host.name (NAVGW 2.5.2.12) with SMTP id M2006040415284308595 for <user@domain.co.uk>; Tue, 04 Apr 2006 15:28:45 +0100',
     {'helo': 'KRYPTIK', 'rdns': None, 'ip': '70.20.57.51', 'port': None, 'by': 'host.name', 'with_': 'SMTP', 'envelope_from': None, 'tls': False, 'tls_version': None, 'authenticated': False, 'date': '2006-04-04T15:28:45+01:00'}),
]


@pytest.mark.parametrize("source,header,expected", CASES, ids=[c[0].rsplit("/", 2)[-2][:12] + str(i) for i, c in enumerate(CASES)])
def test_real_received_headers(source, header, expected):
    assert source.startswith("https://")
    hop = parse_received(header)
    got = dict(helo=hop.from_helo, rdns=hop.from_rdns, ip=hop.from_ip, port=hop.from_port, by=hop.by, with_=hop.with_,
               envelope_from=hop.envelope_from, tls=hop.tls, tls_version=hop.tls_version, authenticated=hop.authenticated,
               date=hop.date.isoformat() if hop.date else None)
    assert got == expected


@pytest.mark.parametrize("header,ip,port", [
    ("from x ([192.0.2.1]) by y; Mon, 1 Dec 2026 10:00:00 +0000", "192.0.2.1", None),  # [ip] inside a comment
    ("from x [192.0.2.1] by y; Mon, 1 Dec 2026 10:00:00 +0000", "192.0.2.1", None),  # [ip] outside a comment
    ("from x (192.0.2.1) by y; Mon, 1 Dec 2026 10:00:00 +0000", "192.0.2.1", None),  # qmail, Exchange
    ("from x (/192.0.2.1) by y; Mon, 1 Dec 2026 10:00:00 +0000", "192.0.2.1", None),  # Java InetAddress (Oracle)
    ("from x (x [IPv6:2001:db8::1]) by y; Mon, 1 Dec 2026 10:00:00 +0000", "2001:db8::1", None),
    ("from x (x [fe80::1%eth0]) by y; Mon, 1 Dec 2026 10:00:00 +0000", "fe80::1%eth0", None),  # link-local, zone index
    ("from x ([fe80::2c4e:e92a:4fa:a456%6]) by y with mapi; Mon, 19 Jan 2026 15:00:31 +0000", "fe80::2c4e:e92a:4fa:a456%6", None),
    ("from x ([192.0.2.1]:2525 helo=x) by y; Mon, 1 Dec 2026 10:00:00 +0000", "192.0.2.1", 2525),
    ("from [192.0.2.1]:2525 by y; Mon, 1 Dec 2026 10:00:00 +0000", "192.0.2.1", 2525),  # address literal in from
    ("from 192.0.2.1 by y; Mon, 1 Dec 2026 10:00:00 +0000", "192.0.2.1", None),
    ("from [192.0.2.9] (port=1 helo=[192.0.2.7]) by y; Mon, 1 Dec 2026 10:00:00 +0000", "192.0.2.9", 1),  # not the HELO's
    ("from x (EHLO [192.0.2.7]) (192.0.2.9) by y; Mon, 1 Dec 2026 10:00:00 +0000", "192.0.2.9", None),
    ("from x (x [not-an-ip]) by y; Mon, 1 Dec 2026 10:00:00 +0000", None, None),
    # the HELO argument is what the client claims, never its address (CommuniGate's form, qmail's)
    ("from [154.118.61.214] (account u@example.ru HELO [6.6.6.6]) by mx with ESMTPA id 1; Fri, 07 Aug 2020 19:21:52 +0300",
     "154.118.61.214", None),
    ("from x (HELO a@[6.6.6.6]) (192.0.2.4) by y; Fri, 07 Aug 2020 19:21:52 +0300", "192.0.2.4", None),
    ("from list.example (192.0.2.150:4323) by mx1; Sat, 18 Sep 2004 23:17:54 -0500", "192.0.2.150", 4323),  # XMail
])
def test_tcp_info_forms(header, ip, port):
    hop = parse_received(header)
    assert (hop.from_ip, hop.from_port) == (ip, port)


def test_a_hop_without_semicolon_keeps_its_date_and_by_is_not_glued_to_with():
    hop = parse_received("from 91.190.168.87(EHLO poc-ftven2.splio.com)\n by atlas207.free.mail.gq1.yahoo.comwith SMTPs "
                         "Fri, 6 Mar 2020 09:53:21 +0000")
    assert (hop.by, hop.with_, hop.date.isoformat()) == ("atlas207.free.mail.gq1.yahoo.com", "SMTPs", "2020-03-06T09:53:21+00:00")
    assert len(hop.findings) == 2
    plain = parse_received("from a by b with ESMTP id 1 Mon, 1 Dec 2026 10:00:00 +0100")
    assert (plain.by, plain.with_, plain.id, plain.date.isoformat()) == ("b", "ESMTP", "1", "2026-12-01T10:00:00+01:00")


def test_minus_zero_zone_is_utc_and_bad_input_never_raises():
    assert parse_received("(qmail 2160 invoked from network); 24 May 2016 12:30:11 -0000").date.isoformat() == \
        "2016-05-24T12:30:11+00:00"
    for text in ("", "(((", "from", "; ;", "from [", "by ; x", "from (x [999.1.1.1]) by y;", "\x00\xff"):
        parse_received(text)


def test_the_engine_doctests_run():
    """The examples in the docstrings of the engine are true."""
    for module in (headers, dmarc, spf):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted and not result.failed, module.__name__


def test_an_unreadable_date_is_said():
    for text in ("from x by y; Mon, 32 Jan 2020 10:00:00 +0000", "from x by y; Sun Nov 13 14:50:12 2005"):
        hop = parse_received(text)
        assert hop.date is None and any("date illisible" in f.fr for f in hop.findings)


# --- the fast path (issue 17): one pattern for the forms Postfix, the lab and Gmail write --------------------------
# parse_received first tries headers._fast_received; what it accepts must be read exactly as the full grammar reads it.
_SEP = st.sampled_from([" ", " ", "  ", "\r\n\t", "\n "])
_NOTES = ["using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
          "using TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)\r\n\t key-exchange X25519 server-signature "
          "RSA-PSS (2048 bits) server-digest SHA256", "No client certificate requested", "Client did not present a certificate",
          "Authenticated sender: alice", "Authenticated sender: bob@example.com", "authenticated bits=0", "helo=trick",
          "port=25", "envelope-from <a@b.example>", "AUTH: LOGIN carol", "using TLS", "uſing TLSv1.3 with cipher X",
          "version=TLS1_3 cipher=TLS_AES_128_GCM_SHA256 bits=128/128", "Google Transport Security", "ORCPT rfc822;x",
          "User authenticated as dave", "EHLO x", "nested (deeper (deepest))", "Postfix", "TLS1.3", "with cipher=ABC"]


def _same_hop(a, b) -> bool:
    """Equal, and the same wall-clock time and offset (aware datetimes of one instant compare equal otherwise)."""
    return a == b and (a.date is None or (a.date.utcoffset(), a.date.replace(tzinfo=None)) ==
                       (b.date.utcoffset(), b.date.replace(tzinfo=None)))


_GOOD_NOTES = _NOTES[:7] + ["version=TLS1_3 cipher=TLS_AES_128_GCM_SHA256 bits=128/128", "Google Transport Security",
                            "Postfix", "TLS1.3", "with cipher=ABC", "User authenticated as dave", "AUTH: LOGIN carol"]


@st.composite
def _received(draw):
    """A Received in the fast pattern's family; half of them with only values the pattern accepts (each then
    exercises the fast path's reading), the others with values chosen to make it decline or the full parser decide."""
    clean = draw(st.booleans())

    def pick(good: list, bad: list):
        return draw(st.sampled_from(good if clean else good + bad))

    s = pick([" ", "\r\n\t", "\n "], ["  ", "\t"])
    name = pick(["mail.example.com", "unknown", "UNKNOWN", "[192.0.2.1]", "localhost", "x", "a-b.example.", "192.0.2.7"],
                ["for", "by", "helo.example", "[300.1.1.1]", "ſ"])
    rdns = pick(["mail.example.com", "unknown", "mail.example.com.", "192.0.2.9", "Unknown."], ["helo", "ſ", "a b"])
    ip = pick(["192.0.2.1", "2001:db8::1", "IPv6:2001:db8::1"], ["999.1.1.1", "1.2.3", "ipv6:2001:db8::2", "fe80::1%eth0"])
    text = f"from {name} ({rdns} [{ip}])"
    for note in draw(st.lists(st.sampled_from(_GOOD_NOTES if clean else _NOTES), max_size=3)):
        text += s + f"({note})"
    text = "" if draw(st.integers(0, 3)) == 0 else text + s  # a hop inside one system: "by HOST with …" alone
    text += "by " + pick(["mx.example.net", "mx.example.net."], ["for", "2001:db8::9"])
    by_note = pick([None, "Postfix", "8.14.7/8.12.4", "TLS1.3", "Exim 4.97"], ["a;b", "x (y)"])
    text += f" ({by_note})" if by_note else ""
    text += s + "with " + pick(["ESMTPS", "ESMTPSA", "SMTP", "esmtp", "LMTP", "UTF8SMTPSA", "SMTPS"], ["with", "Microsoft SMTP"])
    qid = pick([None, "4ABC", "1veasj-00000000ODh-1OLP", "e21sor.1.2020"], ["for", "a/b"])
    text += f"{s}id {qid}" if qid else ""
    rcpt = pick([None, "u@example.net", ""], ["a;b", "x y"])
    text += f"{s}for <{rcpt}>" if rcpt is not None else ""
    for note in draw(st.lists(st.sampled_from(_GOOD_NOTES if clean else _NOTES), max_size=2)):
        text += s + f"({note})"
    day = pick(["1", "01", "29", "31"], ["32", "0"])
    month = pick(["Feb", "Nov", "Dec"], ["nov", "Foo"])
    year = pick(["2026", "1999"], ["0099", "26"])
    clock = pick(["08:07:10", "23:59:59", "00:00:00"], ["23:59:60", "24:00:00", "8:07:10"])
    zone = pick(["+0000", "+0200", "-0800", "+0160", "-2359", "+0530"], ["-0000", "+2400", "UTC", "+02"])
    weekday = pick(["Sun, ", "Mon,  "], ["", "Dim, "])
    text += pick([";", "; ", " ;", ";" + s], [""]) + f"{weekday}{day} {month} {year} {clock} {zone}"
    text += pick(["", " (UTC)", " (PST)"], [" (CET (x))", " (a;b)"])
    return draw(st.sampled_from(["", "Received: ", "received:"])) + text


@settings(max_examples=examples(600), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_received())
def test_the_fast_path_reads_exactly_what_the_full_grammar_reads(value):
    text = headers._received_text(value)
    fast, full = headers._fast_received(text), headers._full_received(text)
    if fast is not None:
        assert _same_hop(fast, full), (value, fast, full)
    assert _same_hop(parse_received(value), full)


def test_the_fast_path_takes_the_forms_the_lab_postfix_and_gmail_write():
    """Not a silent fallback: the lab's own header, Postfix's and Gmail's real ones go through the one pattern."""
    from labmail.lab.receiving import received_header

    own = received_header("client.example", "192.0.2.1", "client.example", "mx.lab", "ESMTPSA", "4AbC", "bob@lab.test",
                          ("TLS_AES_256_GCM_SHA384", "TLSv1.3", 256), "alice@lab.test").decode()
    real = [header for _source, header, _expected in CASES]
    fast = [h for h in [own] + real
            if headers._fast_received(headers._received_text(h)) is not None]
    assert own in fast
    assert {h.split()[2] if h.startswith("Received:") else h.split()[1] for h in fast} >= {
        "ofsar", "mail-sor-f41.google.com", "MTA-244-117.TLL07.ZONEAS.EU", "mail-lf1-x12a.google.com"}, fast
    inner = "by smtp.kernel.org (Postfix) with ESMTPSA id 27B5C341EAC; Fri, 09 Jan 2026 11:37:13 +0000 (UTC)"
    assert headers._fast_received(inner) is not None  # a hop inside one system, without "from"
    for header in [own] + real:  # and on every real header, the two agree wherever the pattern answers
        text = headers._received_text(header)
        fast_hop = headers._fast_received(text)
        assert fast_hop is None or _same_hop(fast_hop, headers._full_received(text)), header


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.sampled_from(["helo=", "HELO", "ehlo", " ", "x", "[1.2.3.4]", "=", "h", "\t", "é", "HELOx", "(", "[",
                                 "Helo=", "\u00a0", "EHLO="]), max_size=14).map("".join))
def test_helo_claims_reads_what_the_prefix_search_read(note):
    """The literal-by-literal search of a prefix (quadratic on a comment of thousands of literals) replaced by
    positions found once: the same answer at every literal."""
    claimed = headers._helo_claims(note)
    pattern = re.compile(r"helo=\S*$|\b(?:HELO|EHLO)\b", re.I)
    for i, ch in enumerate(note):
        if ch == "[":
            assert claimed(i) == bool(pattern.search(note[:i])), (note, i)


def test_thousands_of_literals_after_helo_are_all_the_helo_argument():
    hop = parse_received("from a (helo=" + "[192.0.2.1]" * 8000 + ") by b; Mon, 1 Jan 2024 00:00:00 +0000")
    assert hop.from_ip is None and hop.by == "b"
    hop = parse_received("from a ([192.0.2.9] helo=" + "[192.0.2.1]" * 8000 + ") by b; Mon, 1 Jan 2024 00:00:00 +0000")
    assert hop.from_ip == "192.0.2.9"
