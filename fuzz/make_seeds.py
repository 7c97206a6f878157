#!/usr/bin/env python3
"""Writes the committed seed corpus, fuzz/seeds/<target>/, from scratch.

Run from anywhere: python3 fuzz/make_seeds.py. Plain Python, no packages:
the DNS messages are built by hand below (RFC 1035 / 6891 wire format).
"""

import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SEEDS = os.path.join(HERE, "seeds")


# --- DNS wire format --------------------------------------------------------

def name(text):
    out = b""
    for label in text.strip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def header(ident, flags, qd=1, an=0, ns=0, ar=0):
    return struct.pack(">HHHHHH", ident, flags, qd, an, ns, ar)


def question(qname, qtype, qclass=1):
    return name(qname) + struct.pack(">HH", qtype, qclass)


def opt(payload=1232, do=False, version=0, ext_rcode=0, options=b""):
    flags = 0x8000 if do else 0
    return b"\x00" + struct.pack(">HHBBHH", 41, payload, ext_rcode, version, flags, len(options)) + options


def rr(owner, rtype, ttl, rdata, rclass=1):
    """owner: bytes (wire name or pointer)."""
    return owner + struct.pack(">HHIH", rtype, rclass, ttl, len(rdata)) + rdata


PTR_Q = b"\xc0\x0c"  # compression pointer to the question name

A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, OPT, HTTPS, RRSIG = 1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 65, 46
AXFR = 252

QUERY_RD = 0x0100
RESP = 0x8180  # QR RD RA, NOERROR


def query(ident, qname, qtype, flags=QUERY_RD, edns=None):
    ar = 1 if edns is not None else 0
    return header(ident, flags, 1, 0, 0, ar) + question(qname, qtype) + (edns or b"")


def soa_rdata(mname, rname, minimum=300):
    return name(mname) + name(rname) + struct.pack(">IIIII", 2024010101, 7200, 3600, 1209600, minimum)


def write(target, files):
    d = os.path.join(SEEDS, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for fname, data in files.items():
        if isinstance(data, str):
            data = data.encode()
        with open(os.path.join(d, fname), "wb") as f:
            f.write(data)


# --- packet: raw client queries ---------------------------------------------

cookie = struct.pack(">HH", 10, 8) + bytes(range(8))
packet = {
    "a-www-example-com": query(0x1234, "www.example.com", A),
    "aaaa-edns-do": query(0xABCD, "www.example.com", AAAA, edns=opt(1232, do=True)),
    "https-edns-cookie": query(0x0001, "example.com", HTTPS, flags=0x0120, edns=opt(4096, options=cookie)),
    "ptr-local": query(0x7777, "10.1.168.192.in-addr.arpa", PTR),
    "ptr-private-unknown": query(0x7778, "99.2.168.192.in-addr.arpa", PTR, edns=opt(1232)),
    "ptr-public": query(0x7779, "8.8.8.8.in-addr.arpa", PTR),
    "local-a": query(0x0101, "nas.home.lan", A),
    "local-cname-aaaa": query(0x0102, "WWW.Home.LAN", AAAA, edns=opt(512)),
    "local-cname-loop": query(0x0103, "loop1.home.lan", A),
    "local-mx": query(0x0104, "home.lan", MX),
    "local-srv": query(0x0105, "_http._tcp.home.lan", SRV),
    "local-nxdomain": query(0x0106, "nope.home.lan", TXT, edns=opt(1232, do=True)),
    "local-empty-nonterminal": query(0x0107, "b.c.home.lan", A),
    "blocked-list": query(0x0201, "data.mistat.xiaomi.com", A, edns=opt(1232)),
    "blocked-aaaa": query(0x0202, "api.ad.xiaomi.com", AAAA),
    "blocked-regex": query(0x0203, "ad42.example.net", A, edns=opt(1232)),
    "blocked-adblock-https": query(0x0204, "x.ads.example.com", HTTPS),
    "allowed-exception": query(0x0205, "ok.ads.example.com", A),
    "firefox-canary": query(0x0206, "use-application-dns.net", A, edns=opt(1232)),
    "ddr": query(0x0207, "_dns.resolver.arpa", 64),
    "forwarded": query(0x0301, "fritz.box", A),
    "root-ns-edns": query(0x0302, ".", NS, edns=opt(1232)),
    "axfr": query(0x0401, "home.lan", AXFR),
    "badvers": query(0x0402, "example.com", A, edns=opt(1232, version=1)),
    "opcode-notify": query(0x0403, "example.com", SOA, flags=0x2000),
    "response-qr": header(0x0404, 0x8180) + question("example.com", A),
    "qdcount-2": header(0x0405, QUERY_RD, qd=2) + question("a.example", A) + question("b.example", A),
    "compressed-question": header(0x0406, QUERY_RD) + b"\xc0\x0c\x00\x01\x00\x01",
    "two-opts": header(0x0407, QUERY_RD, ar=2) + question("example.com", A) + opt() + opt(),
    "binary-label": query(0x0408, "a\x00b.\xff.example", A),
    "truncated-header": b"\x12\x34\x01\x00\x00",
    "truncated-question": header(0x0409, QUERY_RD) + b"\x07exam",
}

# --- upstream_answer: a knob byte, then the upstream's answer ---------------
# knob bits 0-2: fixed query index (0-6) or 7 = the answer's own question;
# bit 3/4: EDNS / DO on a derived query; bits 5-6: TTL clamps; bit 7: aged.

def answer(ident, qname, qtype, answers=(), authority=(), additional=(), flags=RESP):
    return (header(ident, flags, 1, len(answers), len(authority), len(additional))
            + question(qname, qtype) + b"".join(answers) + b"".join(authority) + b"".join(additional))


www = "www.example.com"
soa = rr(name("example.com"), SOA, 3600, soa_rdata("ns1.example.com", "hostmaster.example.com", 300))
https_rdata = struct.pack(">H", 1) + b"\x00" + struct.pack(">HH", 1, 3) + b"\x02h2"
upstream = {
    # 0: A www.example.com -> CNAME (compressed) + A
    "q0-cname-a": b"\x00" + answer(0x1234, www, A, [
        rr(PTR_Q, CNAME, 300, b"\xc0\x10"),
        rr(b"\xc0\x10", A, 300, bytes([93, 184, 216, 34])),
    ]),
    # 1: AAAA with DO -> AAAA + RRSIG, OPT last
    "q1-aaaa-rrsig-opt": b"\x01" + answer(0xABCD, www, AAAA, [
        rr(PTR_Q, AAAA, 3600, bytes.fromhex("26062800022000010248189325c81946")),
        rr(PTR_Q, RRSIG, 3600, struct.pack(">HBBIIIH", AAAA, 13, 3, 3600, 0, 0, 1) + name("example.com") + b"\x00" * 16),
    ], additional=[opt(1232, do=True)]),
    # 2: HTTPS example.com
    "q2-https": b"\x02" + answer(0x0001, "example.com", HTTPS, [rr(PTR_Q, HTTPS, 300, https_rdata)],
                                 additional=[opt(1232)]),
    # 3: PTR
    "q3-ptr": b"\x03" + answer(0x7777, "10.1.168.192.in-addr.arpa", PTR, [rr(PTR_Q, PTR, 60, name("nas.home.lan"))]),
    # 4: 0x20 query, answer spelled in lowercase, with A in the rebinding range
    "q4-0x20-private": b"\x24" + answer(0x55AA, www, A, [rr(PTR_Q, A, 10, bytes([192, 168, 1, 1]))]),
    # 5: MX NXDOMAIN with SOA (negative caching)
    "q5-nxdomain-soa": b"\x05" + answer(0x0002, "example.com", MX, authority=[soa], flags=0x8183),
    # 6: blocked-list name CNAME-cloaked to a listed target and an answer-IP range
    "q6-cloaked": b"\x46" + answer(0x4321, "data.mistat.xiaomi.com", A, [
        rr(PTR_Q, CNAME, 600, name("tracking.miui.com")),
        rr(name("tracking.miui.com"), A, 600, bytes([42, 62, 48, 157])),
    ]),
    # 7: derived query with EDNS+DO: NODATA with SOA and OPT
    "derived-nodata-edns": bytes([0x07 | 0x08 | 0x10]) + answer(0x0BAD, "rebind.example", AAAA, authority=[
        rr(name("example"), SOA, 900, soa_rdata("a.example", "b.example", 60))], additional=[opt(4096)]),
    # OPT not the last record: the hickory re-encoding fallback
    "opt-not-last": b"\x07" + answer(0x1111, "x.example", A, [rr(PTR_Q, A, 300, bytes([203, 0, 113, 5]))],
                                     additional=[opt(1232), rr(PTR_Q, TXT, 60, b"\x03abc")]),
    # truncated answer (TC) and an answer without the question (SERVFAIL)
    "tc-set": b"\x00" + answer(0x1234, www, A, flags=0x8380),
    "no-question": b"\x00" + header(0x1234, 0x8182, qd=0),
    # CNAME chain with a long target and a pointer loop-ish target
    "cname-chain": b"\x87" + answer(0x2222, "a.example", A, [
        rr(PTR_Q, CNAME, 30, name("b.example")),
        rr(b"\xc0\x27", CNAME, 30, b"\x01c\xc0\x0e"),
        rr(name("c.example"), A, 30, bytes([198, 51, 100, 1])),
    ]),
    # Found by fuzzing, fixed in 0bdd97d: a byte after the last record was
    # served, and our OPT appended after it.
    "regress-trailing-bytes": b"\x01" + answer(0xABCD, www, AAAA) + b"\x00",
    # AAAA wrong length, TXT, and an unknown type in the answer
    "odd-rdata": b"\x07" + answer(0x3333, "odd.example", AAAA, [
        rr(PTR_Q, AAAA, 300, b"\x00" * 5),
        rr(PTR_Q, TXT, 300, b"\x05hello"),
        rr(PTR_Q, 65280, 300, b"\xde\xad"),
    ]),
}

# --- lists: list text -------------------------------------------------------

def content(path, n):
    """The first n entry lines of a repository list, comments included."""
    lines = open(os.path.join(REPO, path), encoding="utf-8").read().split("\n")
    out = [l for l in lines if l.startswith("#")][:2]
    out += [l for l in lines if l and not l.startswith("#")][:n]
    return "\n".join(out) + "\n"


lists = {
    "xiaomi-telemetry": content("blocklists/xiaomi-telemetry.txt", 12),
    "xiaomi-ads": content("blocklists/xiaomi-ads.txt", 10),
    "doh": content("blocklists/doh.txt", 10),
    "allow-essentials": content("blocklists/allow/xiaomi-essentials.txt", 8),
    "cidr": content("blocklists/xiaomi.cidr", 10) + "2001:db8::/32\n::ffff:10.0.0.0/104\n0.0.0.0/0\n10.1.2.3/8\n",
    "adblock": "[Adblock Plus 2.0]\n! comment\n||ads.example.com^\n|exact.example.com^$important\n"
               "||bad.example^$third-party\n@@||ok.ads.example.com^\n*.tracker.example\n@@*.ok.tracker.example # ok\n"
               "||no-caret.example\n|^\n@@\n",
    "hosts": "127.0.0.1 localhost\n::1 ip6-localhost ip6-loopback\n0.0.0.0 ads.example a.b.example # x\n"
             "0.0.0.0 0.0.0.0\n192.168.1.1\tRouter.LAN router\n1.2.3.4\n999.1.1.1 bad.example\n",
    "regex": "/^ad[0-9]+\\.example\\.net$/\n@@/^safe-.*$/\n/(unclosed/\n//\n/a{2,5}b{3}/\n/.*/ # not a comment\n",
    "idn-crlf-bom": "\ufeffB\u00fccher.example\r\nM\u00fcnchen.DE.\r\n\u0440\u0444\r\nxn--bcher-kva.example\r\nEXAMPLE.COM\r\n"
                    "a..b\r\n-lead.example\r\n" + "x" * 64 + ".example\r\n" + ".".join(["a"] * 130) + "\r\n",
    "multi-file": "block.example\n*.sub.block.example\n\x00allow.block.example\n/^allow/\n\x00@@x.block.example\n||y.example^\n",
    "plain": "example.com\nwww.example.org\nmiui.com\n",
}

# --- config: config text \0 hosts file \0 lease file ------------------------

local_config = """
[server]
listen = ["127.0.0.1:5353", "[::1]:5353"]
allow = ["127.0.0.0/8", "192.168.0.0/16"]
rate_limit = 0

[upstream]
servers = ["udp://127.0.0.1:9", "tcp://[::1]:53", "tls://9.9.9.9#dns.quad9.net", "https://1.1.1.1/dns-query#cloudflare-dns.com"]
timeout_ms = 500

[cache]
size = 10
min_ttl = 5
max_ttl = 3600

[blocking]
mode = "ip:192.0.2.9,2001:db8::9"
ttl = 30
bypass_hygiene = false

[local]
zones = ["home.lan", "lan."]
ttl = 120
[[local.records]]
name = "nas.home.lan"
type = "A"
value = "192.168.1.10"
[[local.records]]
name = "www.home.lan"
type = "cname"
value = "nas.home.lan."
[[local.records]]
name = "home.lan"
type = "MX"
value = "10 nas.home.lan"
[[local.records]]
name = "_http._tcp.home.lan"
type = "SRV"
value = "0 5 80 nas.home.lan"
ttl = 60
[[local.records]]
name = "txt.home.lan"
type = "TXT"
value = "v=spf1 -all"

[[forward]]
domains = ["fritz.box", "168.192.in-addr.arpa"]
servers = ["udp://192.168.1.1:53"]

[[clients]]
name = "Anna's phone"
match = ["aa:bb:cc:dd:ee:ff", "192.168.1.20", "10.0.0.0/8"]
group = "phones"

[querylog]
enabled = false
"""

hosts_file = "127.0.0.1 localhost\n192.168.1.30 tv tv.home.lan # living room\nfd00::1 router\nbad-address host\n"
dnsmasq_leases = "1700000000 aa:bb:cc:dd:ee:01 192.168.1.23 laptop 01:aa:bb:cc:dd:ee:01\nduid 00:01\n1700000000 zz 1.2.3.4 x *\n"
isc_leases = 'lease 192.168.1.24 {\n  hardware ethernet aa:bb:cc:dd:ee:02;\n  client-hostname "printer";\n}\nlease bad {\n}\n'

config = {
    "repo-config": open(os.path.join(REPO, "config.toml"), encoding="utf-8").read(),
    "local-everything": local_config + "\x00" + hosts_file + "\x00" + dnsmasq_leases,
    "isc-leases": "[local]\nzones = [\"lan\"]\n\x00\x00" + isc_leases,
    "empty": "",
    "bad-values": "[cache]\nmin_ttl = 600\nmax_ttl = 300\n",
    "bad-upstream": "[upstream]\nservers = [\"udp://1.1.1.1\", \"ftp://x\"]\n",
    "unicode-error": "[server]\n# \u00e9\u00e9\u00e9\nlisen = \"\u2603\"\n",
    "bad-records": '[local]\nzones = [".", "a\\\\.b"]\n[[local.records]]\nname = ""\ntype = "SRV"\nvalue = "1 2 x y"\n'
                   '[[local.records]]\nname = "x.lan"\ntype = "AAAA"\nvalue = "1.2.3.4"\n',
    "modes": '[blocking]\nmode = "nxdomain"\n[firewall]\nrefresh = "1d 12h"\n[[blocking.remote]]\nurl = "https://example.com/list.txt"\nrefresh = "30m"\n',
}

for target, files in [("packet", packet), ("upstream_answer", upstream), ("lists", lists), ("config", config)]:
    write(target, files)
    total = sum(len(v if isinstance(v, bytes) else v.encode()) for v in files.values())
    print(f"seeds/{target}: {len(files)} files, {total} bytes")
