"""`gateway dkim keygen` prints the TXT record also as a zone-file line: the value split into a
string list `( "..." "..." )`, each string at most 255 characters (a DNS character-string's limit)."""

from __future__ import annotations

import re

import dkim
import dns.zone

from gateway import cli
from gateway.senderauth import dkimsign
from tests.support.peers import make_message


def test_keygen_prints_a_zone_file_line_whose_strings_fit_and_join_to_the_record(tmp_path, capsys):
    for kind in ("rsa", "ed25519"):
        out = tmp_path / kind
        assert cli.main(["dkim", "keygen", "example.gov", f"z-{kind}", "--out", str(out), "--type", kind]) == 0
        value, zone_line, *rest = capsys.readouterr().out.splitlines()
        assert rest == []
        assert value.startswith(f"v=DKIM1; k={kind}; p=")
        match = re.fullmatch(rf'z-{kind}\._domainkey\.example\.gov\. IN TXT \( ((?:"[^"]*" )+)\)', zone_line)
        assert match, zone_line
        strings = re.findall(r'"([^"]*)"', match.group(1))
        assert all(0 < len(s) <= 255 for s in strings) and "".join(strings) == value
        if kind == "rsa":
            assert len(strings) > 1                        # a 2048-bit key's record is over 255 characters
        # a DNS server reads it back as one record whose strings join to the value
        zone = dns.zone.from_text("$TTL 3600\n@ IN SOA ns hostmaster 1 3600 600 86400 3600\n@ IN NS ns\n"
                                  + zone_line + "\n", origin="example.gov.", relativize=False)
        [rdata] = zone.find_rdataset(f"z-{kind}._domainkey.example.gov.", "TXT")
        published = b"".join(rdata.strings).decode()
        assert published == value
        algorithm, private = dkimsign.read_key(str(out / f"z-{kind}.key"))
        key = dkimsign.SigningKey("example.gov", f"z-{kind}", algorithm, private, str(out / f"z-{kind}.key"))
        message = make_message()
        record = published.encode()
        assert dkim.verify(key.sign(message) + message, dnsfunc=lambda name, timeout=5, record=record: record)
