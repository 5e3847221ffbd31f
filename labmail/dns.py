"""DNS for students: queries whose outcomes explain themselves, and a panel to edit one's zone.

* :func:`lookup` asks the world's resolver, or the zone's own servers with
  ``authoritative=True`` (no cache anywhere), and returns a
  :class:`LookupResult`: the records with their TTL, and an outcome among
  answer, NXDOMAIN, NODATA, SERVFAIL, REFUSED, timeout… each explained.
* :func:`records` lists the mail-related records of a domain (MX and their
  addresses, SPF, DKIM, DMARC, autodiscover/autoconfig, SRV) as a DataFrame.
* :class:`ZonePanel` is the course's "DNS panel": list, add, replace and
  delete records of the student's zone with RFC 2136 updates signed by the
  student's TSIG key. It catches the classic mistakes (quotes pasted into a
  TXT value, a doubled name, an MX pointing to an IP or a CNAME…). The same
  code drives a real BIND or Knot server in the live world.
* :func:`export_zone` writes a zone as a BIND master file.

>>> r = lookup("labmail.cloud", "MX")     # doctest: +SKIP
>>> r.outcome, r.values                    # doctest: +SKIP
(<Outcome.ANSWER: 'réponse'>, ['10 mailcow.labmail.cloud.'])
"""

from __future__ import annotations

from .resolver import LookupResult, MailRecord, Outcome, Record, Resolver, lookup, mail_records, records
from .world import use_world_resolver
from .zonepanel import Change, ZonePanel, export_zone, panel, txt_strings

__all__ = [
    "Outcome", "Record", "LookupResult", "lookup", "Resolver", "records", "mail_records", "MailRecord",
    "ZonePanel", "Change", "panel", "export_zone", "use_world_resolver", "txt_strings",
]
