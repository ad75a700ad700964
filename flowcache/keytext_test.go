package flowcache

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/flowcache/flowcache/reclaim"
)

func textKey(src, dst string, sport, dport uint16, proto uint8) FlowKey {
	return NewFlowKey(netip.MustParseAddr(src), netip.MustParseAddr(dst), sport, dport, proto)
}

// keyTextCases are keys with the one text String writes for each: every
// protocol form, both families, zero and all-ones addresses and ports.
func keyTextCases() []struct {
	name string
	key  FlowKey
	text string
} {
	return []struct {
		name string
		key  FlowKey
		text string
	}{
		{"tcp/v4", textKey("10.0.0.1", "10.0.0.2", 1234, 80, ProtoTCP), "tcp 10.0.0.1:1234 -> 10.0.0.2:80"},
		{"tcp/v4-mapped", textKey("::ffff:10.0.0.1", "::ffff:10.0.0.2", 1, 2, ProtoTCP), "tcp 10.0.0.1:1 -> 10.0.0.2:2"},
		{"tcp/v6", textKey("2001:db8::1", "2001:db8::2", 40000, 443, ProtoTCP), "tcp [2001:db8::1]:40000 -> [2001:db8::2]:443"},
		{"tcp/fragment-ports-0", textKey("10.0.0.1", "10.0.0.2", 0, 0, ProtoTCP), "tcp 10.0.0.1:0 -> 10.0.0.2:0"},
		{"tcp/v4-zero", textKey("0.0.0.0", "0.0.0.0", 0, 0, ProtoTCP), "tcp 0.0.0.0:0 -> 0.0.0.0:0"},
		{"tcp/v6-zero", textKey("::", "::", 0, 0, ProtoTCP), "tcp [::]:0 -> [::]:0"},
		{"udp/v6", textKey("2001:db8::1", "2001:db8::2", 53, 4000, ProtoUDP), "udp [2001:db8::1]:53 -> [2001:db8::2]:4000"},
		{"udp/v4-all-ones", textKey("255.255.255.255", "255.255.255.255", 65535, 65535, ProtoUDP), "udp 255.255.255.255:65535 -> 255.255.255.255:65535"},
		{"udp/v6-all-ones", textKey("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::1", 65535, 1, ProtoUDP), "udp [ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535 -> [::1]:1"},
		{"udp/v4-to-v6", textKey("10.0.0.1", "2001:db8::2", 53, 53, ProtoUDP), "udp 10.0.0.1:53 -> [2001:db8::2]:53"},
		{"udp/v4-compatible", textKey("::1.2.3.4", "::ffff:0:1.2.3.4", 1, 2, ProtoUDP), "udp [::102:304]:1 -> [::ffff:0:102:304]:2"},
		{"dccp", textKey("10.0.0.1", "10.0.0.2", 5004, 5005, ProtoDCCP), "dccp 10.0.0.1:5004 -> 10.0.0.2:5005"},
		{"sctp", textKey("10.0.0.1", "10.0.0.2", 36412, 36412, ProtoSCTP), "sctp 10.0.0.1:36412 -> 10.0.0.2:36412"},
		{"icmp/echo", textKey("10.0.0.1", "10.0.0.2", 7, 7, ProtoICMP), "icmp 10.0.0.1 -> 10.0.0.2 id 7"},
		{"icmp/echo-id-max", textKey("10.0.0.1", "10.0.0.2", 65535, 65535, ProtoICMP), "icmp 10.0.0.1 -> 10.0.0.2 id 65535"},
		{"icmp/other", textKey("10.0.0.1", "10.0.0.2", 0, 0, ProtoICMP), "icmp 10.0.0.1 -> 10.0.0.2"},
		{"icmp/ports-differ", textKey("10.0.0.1", "10.0.0.2", 7, 8, ProtoICMP), "icmp 10.0.0.1:7 -> 10.0.0.2:8"},
		{"icmp/one-port-zero", textKey("10.0.0.1", "10.0.0.2", 0, 8, ProtoICMP), "icmp 10.0.0.1:0 -> 10.0.0.2:8"},
		{"icmp/over-v6", textKey("2001:db8::1", "2001:db8::2", 9, 9, ProtoICMP), "icmp 2001:db8::1 -> 2001:db8::2 id 9"},
		{"icmpv6/echo", textKey("2001:db8::1", "2001:db8::2", 0x1234, 0x1234, ProtoICMPv6), "icmpv6 2001:db8::1 -> 2001:db8::2 id 4660"},
		{"icmpv6/neighbour-solicitation", textKey("fe80::1", "ff02::1:ff00:2", 0, 0, ProtoICMPv6), "icmpv6 fe80::1 -> ff02::1:ff00:2"},
		{"icmpv6/ports-differ", textKey("fe80::1", "ff02::1", 1, 2, ProtoICMPv6), "icmpv6 [fe80::1]:1 -> [ff02::1]:2"},
		{"icmpv6/zero-addrs", textKey("::", "::", 0, 0, ProtoICMPv6), "icmpv6 :: -> ::"},
		{"gre", textKey("10.0.0.1", "10.0.0.2", 0, 0, 47), "gre 10.0.0.1 -> 10.0.0.2"},
		{"gre/ports", textKey("10.0.0.1", "10.0.0.2", 1, 2, 47), "gre 10.0.0.1:1 -> 10.0.0.2:2"},
		{"gre/equal-ports", textKey("10.0.0.1", "10.0.0.2", 5, 5, 47), "gre 10.0.0.1:5 -> 10.0.0.2:5"},
		{"gre/v6-src-port-only", textKey("2001:db8::1", "2001:db8::2", 5, 0, 47), "gre [2001:db8::1]:5 -> [2001:db8::2]:0"},
		{"esp", textKey("192.0.2.1", "192.0.2.2", 0, 0, 50), "esp 192.0.2.1 -> 192.0.2.2"},
		{"ah/v6", textKey("2001:db8::1", "2001:db8::2", 0, 0, 51), "ah 2001:db8::1 -> 2001:db8::2"},
		{"ipv6-in-ipv4", textKey("192.0.2.1", "192.0.2.2", 0, 0, 41), "ipv6 192.0.2.1 -> 192.0.2.2"},
		{"ipv4-in-ipv4", textKey("192.0.2.1", "192.0.2.2", 0, 0, 4), "ipv4 192.0.2.1 -> 192.0.2.2"},
		{"igmp", textKey("192.0.2.1", "224.0.0.1", 0, 0, 2), "igmp 192.0.2.1 -> 224.0.0.1"},
		{"ospf", textKey("192.0.2.1", "224.0.0.5", 0, 0, 89), "ospf 192.0.2.1 -> 224.0.0.5"},
		{"pim", textKey("192.0.2.1", "224.0.0.13", 0, 0, 103), "pim 192.0.2.1 -> 224.0.0.13"},
		{"vrrp", textKey("192.0.2.1", "224.0.0.18", 0, 0, 112), "vrrp 192.0.2.1 -> 224.0.0.18"},
		{"l2tp", textKey("192.0.2.1", "192.0.2.2", 0, 0, 115), "l2tp 192.0.2.1 -> 192.0.2.2"},
		{"udplite/ports", textKey("192.0.2.1", "192.0.2.2", 1, 2, 136), "udplite 192.0.2.1:1 -> 192.0.2.2:2"},
		{"unnamed", textKey("10.0.0.1", "10.0.0.2", 0, 0, 253), "proto-253 10.0.0.1 -> 10.0.0.2"},
		{"unnamed/ports", textKey("::1", "::2", 1, 0, 255), "proto-255 [::1]:1 -> [::2]:0"},
		{"unnamed/equal-ports", textKey("10.0.0.1", "10.0.0.2", 9, 9, 200), "proto-200 10.0.0.1:9 -> 10.0.0.2:9"},
		{"zero-key", FlowKey{}, "proto-0 :: -> ::"},
		{"invalid-addrs", NewFlowKey(netip.Addr{}, netip.Addr{}, 1, 2, ProtoTCP), "tcp [::]:1 -> [::]:2"},
	}
}

// TestKeyText: each key has its text, String and MarshalText agree, and
// the text (and the reverse key's) reads back to the same key.
func TestKeyText(t *testing.T) {
	for _, tc := range keyTextCases() {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.key.String(); got != tc.text {
				t.Errorf("String() = %q, want %q", got, tc.text)
			}
			if got := fmt.Sprint(tc.key); got != tc.text {
				t.Errorf("fmt.Sprint = %q, want %q", got, tc.text)
			}
			b, err := tc.key.MarshalText()
			if err != nil || string(b) != tc.text {
				t.Errorf("MarshalText() = %q, %v; want %q", b, err, tc.text)
			}
			for _, k := range []FlowKey{tc.key, tc.key.Reverse()} {
				var got FlowKey
				if err := got.UnmarshalText([]byte(k.String())); err != nil || got != k {
					t.Errorf("UnmarshalText(%q) = %v, %v; want %v", k.String(), got, err, k)
				}
			}
		})
	}
}

// TestKeyTextEveryProto: every protocol number, with every shape of
// ports, in both families, round-trips, and its text starts with its
// name or proto-N.
func TestKeyTextEveryProto(t *testing.T) {
	addrs := [][2]string{{"10.0.0.1", "10.0.0.2"}, {"2001:db8::1", "2001:db8::2"}}
	ports := [][2]uint16{{0, 0}, {7, 7}, {1, 2}, {0, 9}, {9, 0}, {65535, 65535}}
	for p := range 256 {
		want := fmt.Sprintf("proto-%d ", p)
		if name := protoNames[p]; name != "" {
			want = name + " "
		}
		for _, a := range addrs {
			for _, pp := range ports {
				k := textKey(a[0], a[1], pp[0], pp[1], uint8(p))
				s := k.String()
				if !strings.HasPrefix(s, want) {
					t.Errorf("proto %d: %q does not start with %q", p, s, want)
				}
				var got FlowKey
				if err := got.UnmarshalText([]byte(s)); err != nil || got != k {
					t.Errorf("proto %d: UnmarshalText(%q) = %v, %v; want %v", p, s, got, err, k)
				}
			}
		}
	}
}

// TestKeyTextReads: text String does not write but UnmarshalText reads:
// the older String's upper-case names and ports everywhere, proto-N for a
// named protocol, IPv4-mapped and bracketed addresses. Each reads as the
// key whose canonical text is given.
func TestKeyTextReads(t *testing.T) {
	for _, tc := range []struct {
		name, in, canonical string
	}{
		{"legacy/tcp", "TCP 10.0.0.1:1234 -> 10.0.0.2:80", "tcp 10.0.0.1:1234 -> 10.0.0.2:80"},
		{"legacy/udp-v6", "UDP [2001:db8::1]:53 -> [2001:db8::2]:5353", "udp [2001:db8::1]:53 -> [2001:db8::2]:5353"},
		{"legacy/icmp-echo", "ICMP 192.0.2.1:7 -> 192.0.2.2:7", "icmp 192.0.2.1 -> 192.0.2.2 id 7"},
		{"legacy/icmpv6-other", "ICMPv6 [fe80::1]:0 -> [ff02::1]:0", "icmpv6 fe80::1 -> ff02::1"},
		{"legacy/sctp", "SCTP 10.0.0.1:36412 -> 10.0.0.2:36412", "sctp 10.0.0.1:36412 -> 10.0.0.2:36412"},
		{"legacy/dccp", "DCCP 10.0.0.1:5004 -> 10.0.0.2:5005", "dccp 10.0.0.1:5004 -> 10.0.0.2:5005"},
		{"legacy/unnamed", "proto-47 10.0.0.1:0 -> 10.0.0.2:0", "gre 10.0.0.1 -> 10.0.0.2"},
		{"legacy/zero-key", "proto-0 [::]:0 -> [::]:0", "proto-0 :: -> ::"},
		{"mixed-case", "Udp 10.0.0.1:1 -> 10.0.0.2:2", "udp 10.0.0.1:1 -> 10.0.0.2:2"},
		{"proto-N-named", "proto-6 10.0.0.1:1 -> 10.0.0.2:2", "tcp 10.0.0.1:1 -> 10.0.0.2:2"},
		{"proto-N-upper", "PROTO-253 10.0.0.1 -> 10.0.0.2", "proto-253 10.0.0.1 -> 10.0.0.2"},
		{"v4-mapped-bracketed", "tcp [::ffff:10.0.0.1]:1 -> [::ffff:10.0.0.2]:2", "tcp 10.0.0.1:1 -> 10.0.0.2:2"},
		{"v4-mapped-bare", "gre ::ffff:10.0.0.1 -> 10.0.0.2", "gre 10.0.0.1 -> 10.0.0.2"},
		{"v6-bracketed-no-port", "gre [2001:db8::1] -> [2001:db8::2]", "gre 2001:db8::1 -> 2001:db8::2"},
		{"v6-not-canonical", "tcp [2001:DB8:0:0:0:0:0:1]:1 -> [2001:db8::2]:2", "tcp [2001:db8::1]:1 -> [2001:db8::2]:2"},
		{"icmp-id-0", "icmp 10.0.0.1 -> 10.0.0.2 id 0", "icmp 10.0.0.1 -> 10.0.0.2"},
		{"icmp-equal-ports", "icmp 10.0.0.1:7 -> 10.0.0.2:7", "icmp 10.0.0.1 -> 10.0.0.2 id 7"},
		{"gre-zero-ports", "gre 10.0.0.1:0 -> 10.0.0.2:0", "gre 10.0.0.1 -> 10.0.0.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var k, want FlowKey
			if err := want.UnmarshalText([]byte(tc.canonical)); err != nil || want.String() != tc.canonical {
				t.Fatalf("the canonical text %q reads as %v, %v", tc.canonical, want, err)
			}
			if err := k.UnmarshalText([]byte(tc.in)); err != nil {
				t.Fatalf("UnmarshalText(%q): %v", tc.in, err)
			}
			if k != want {
				t.Errorf("UnmarshalText(%q) = %v, want %v", tc.in, k, want)
			}
		})
	}
}

// TestKeyTextErrors: text that is not a key fails with ErrBadKeyText and
// leaves the key as it was.
func TestKeyTextErrors(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"proto-only", "tcp"},
		{"no-dst", "tcp 10.0.0.1:1 ->"},
		{"empty-dst", "tcp 10.0.0.1:1 -> "},
		{"no-arrow", "tcp 10.0.0.1:1 10.0.0.2:2"},
		{"wrong-arrow", "tcp 10.0.0.1:1 => 10.0.0.2:2"},
		{"two-spaces", "tcp  10.0.0.1:1 -> 10.0.0.2:2"},
		{"leading-space", " tcp 10.0.0.1:1 -> 10.0.0.2:2"},
		{"trailing-space", "tcp 10.0.0.1:1 -> 10.0.0.2:2 "},
		{"trailing-newline", "tcp 10.0.0.1:1 -> 10.0.0.2:2\n"},
		{"tab", "tcp\t10.0.0.1:1 -> 10.0.0.2:2"},
		{"extra-field", "tcp 10.0.0.1:1 -> 10.0.0.2:2 x"},
		{"unknown-proto", "xyz 10.0.0.1 -> 10.0.0.2"},
		{"bare-number-proto", "6 10.0.0.1:1 -> 10.0.0.2:2"},
		{"proto-256", "proto-256 10.0.0.1 -> 10.0.0.2"},
		{"proto-empty", "proto- 10.0.0.1 -> 10.0.0.2"},
		{"proto-leading-zero", "proto-06 10.0.0.1:1 -> 10.0.0.2:2"},
		{"proto-sign", "proto-+6 10.0.0.1:1 -> 10.0.0.2:2"},
		{"proto-negative", "proto--1 10.0.0.1 -> 10.0.0.2"},
		{"proto-unicode-fold", "ſctp 10.0.0.1:1 -> 10.0.0.2:2"},
		{"tcp-no-ports", "tcp 10.0.0.1 -> 10.0.0.2"},
		{"udp-no-ports-v6", "udp 2001:db8::1 -> 2001:db8::2"},
		{"tcp-v6-port-without-brackets", "tcp 2001:db8::1:80 -> [2001:db8::2]:80"},
		{"one-port", "gre 10.0.0.1:1 -> 10.0.0.2"},
		{"one-port-dst", "icmp 10.0.0.1 -> 10.0.0.2:1"},
		{"port-too-big", "tcp 10.0.0.1:65536 -> 10.0.0.2:80"},
		{"port-leading-zero", "tcp 10.0.0.1:080 -> 10.0.0.2:80"},
		{"port-negative", "tcp 10.0.0.1:-1 -> 10.0.0.2:80"},
		{"port-empty", "tcp 10.0.0.1: -> 10.0.0.2:80"},
		{"port-hex", "tcp 10.0.0.1:0x50 -> 10.0.0.2:80"},
		{"port-long", "tcp 10.0.0.1:000000080 -> 10.0.0.2:80"},
		{"id-not-icmp", "udp 10.0.0.1 -> 10.0.0.2 id 7"},
		{"id-gre", "gre 10.0.0.1 -> 10.0.0.2 id 7"},
		{"id-and-ports", "icmp 10.0.0.1:7 -> 10.0.0.2:7 id 7"},
		{"id-too-big", "icmp 10.0.0.1 -> 10.0.0.2 id 65536"},
		{"id-leading-zero", "icmp 10.0.0.1 -> 10.0.0.2 id 07"},
		{"id-not-number", "icmp 10.0.0.1 -> 10.0.0.2 id x"},
		{"id-missing", "icmp 10.0.0.1 -> 10.0.0.2 id"},
		{"id-upper", "icmp 10.0.0.1 -> 10.0.0.2 ID 7"},
		{"zone", "icmpv6 fe80::1%eth0 -> ff02::1"},
		{"zone-bracketed", "udp [fe80::1%eth0]:1 -> [ff02::1]:2"},
		{"v4-in-brackets", "tcp [10.0.0.1]:1 -> 10.0.0.2:2"},
		{"unclosed-bracket", "tcp [2001:db8::1:1 -> [2001:db8::2]:2"},
		{"junk-after-bracket", "tcp [2001:db8::1]x1 -> [2001:db8::2]:2"},
		{"bracket-port-empty", "tcp [2001:db8::1]: -> [2001:db8::2]:2"},
		{"v4-octet-too-big", "tcp 10.0.0.256:1 -> 10.0.0.2:2"},
		{"v4-leading-zero", "tcp 010.0.0.1:1 -> 10.0.0.2:2"},
		{"v4-short", "gre 10.1 -> 10.0.0.2"},
		{"hostname", "tcp localhost:80 -> 10.0.0.2:80"},
		{"not-utf8", "tcp 10.0.0.1:1 -> 10.0.0.\xff:2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := textKey("192.0.2.9", "192.0.2.10", 11, 12, ProtoUDP)
			k := orig
			err := k.UnmarshalText([]byte(tc.in))
			if !errors.Is(err, ErrBadKeyText) {
				t.Errorf("UnmarshalText(%q) = %v; want ErrBadKeyText", tc.in, err)
			}
			if k != orig {
				t.Errorf("UnmarshalText(%q) changed the key to %v", tc.in, k)
			}
		})
	}
}

// TestKeyTextErrorShort: the error quotes a long input cut short.
func TestKeyTextErrorShort(t *testing.T) {
	var k FlowKey
	err := k.UnmarshalText([]byte(strings.Repeat("x", 10_000)))
	if !errors.Is(err, ErrBadKeyText) || len(err.Error()) > 200 {
		t.Errorf("error of %d bytes: %v", len(err.Error()), err)
	}
}

// TestKeyJSON: a FlowKey in a struct, and as a map key, is its text in
// JSON, and reads back. json.Marshal escapes the ">" of the arrow as
// \u003e (it escapes <, > and & for HTML); an Encoder with
// SetEscapeHTML(false) writes it as is.
func TestKeyJSON(t *testing.T) {
	type flow struct {
		Key  FlowKey
		Note string
	}
	k := textKey("10.0.0.1", "10.0.0.2", 1234, 80, ProtoTCP)
	in := flow{Key: k, Note: "web"}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"Key":"tcp 10.0.0.1:1234 -\u003e 10.0.0.2:80","Note":"web"}`; string(b) != want {
		t.Errorf("json.Marshal = %s, want %s", b, want)
	}
	var generic map[string]any
	if err := json.Unmarshal(b, &generic); err != nil || generic["Key"] != k.String() {
		t.Errorf("the JSON's Key field = %q, %v; want %q", generic["Key"], err, k.String())
	}
	var out flow
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Errorf("json.Unmarshal = %+v, %v; want %+v", out, err, in)
	}

	var raw strings.Builder
	enc := json.NewEncoder(&raw)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(in); err != nil {
		t.Fatal(err)
	}
	if want := `{"Key":"tcp 10.0.0.1:1234 -> 10.0.0.2:80","Note":"web"}` + "\n"; raw.String() != want {
		t.Errorf("Encoder without HTML escaping = %s, want %s", raw.String(), want)
	}

	ik := textKey("2001:db8::1", "2001:db8::2", 5, 5, ProtoICMPv6)
	b, err = json.Marshal(map[FlowKey]int{ik: 1})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"icmpv6 2001:db8::1 -\u003e 2001:db8::2 id 5":1}`; string(b) != want {
		t.Errorf("json.Marshal(map) = %s, want %s", b, want)
	}
	var m map[FlowKey]int
	if err := json.Unmarshal(b, &m); err != nil || len(m) != 1 || m[ik] != 1 {
		t.Errorf("json.Unmarshal(map) = %v, %v", m, err)
	}

	if err := json.Unmarshal([]byte(`{"Key":"tcp nowhere"}`), &out); !errors.Is(err, ErrBadKeyText) {
		t.Errorf("json.Unmarshal of a bad key: %v, want ErrBadKeyText", err)
	}
}

// TestDumpJSON: json.Marshal of a Dump shows readable keys, in Dump order.
func TestDumpJSON(t *testing.T) {
	tb, err := New(Config[int]{Name: "json", Limit: 16, Seed: 1, Domain: reclaim.NewDomain()})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	keys := []FlowKey{
		textKey("2001:db8::1", "2001:db8::2", 0, 0, 47),
		textKey("10.0.0.1", "10.0.0.2", 9, 9, ProtoICMP),
		textKey("10.0.0.2", "10.0.0.3", 5000, 53, ProtoUDP),
		textKey("10.0.0.1", "10.0.0.2", 1234, 80, ProtoTCP),
	}
	for i, k := range keys {
		if _, err := tb.Insert(k, i); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.Marshal(tb.Dump())
	if err != nil {
		t.Fatal(err)
	}
	// Decoded as plain strings, not FlowKeys: what a program in another
	// language reading the JSON sees.
	var rows []struct {
		Key   string
		Value int
	}
	if err := json.Unmarshal(b, &rows); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rows {
		got = append(got, r.Key)
	}
	want := []string{
		"icmp 10.0.0.1 -> 10.0.0.2 id 9",
		"tcp 10.0.0.1:1234 -> 10.0.0.2:80",
		"udp 10.0.0.2:5000 -> 10.0.0.3:53",
		"gre 2001:db8::1 -> 2001:db8::2",
	}
	if !slices.Equal(got, want) {
		t.Errorf("keys in json.Marshal(Dump()) = %q, want %q\n%s", got, want, b)
	}
	if !strings.Contains(string(b), `"Key":"tcp 10.0.0.1:1234 -\u003e 10.0.0.2:80"`) {
		t.Errorf("json.Marshal(Dump()) lacks the readable TCP key:\n%s", b)
	}
}

// FuzzKeyText checks the text both ways. From key bytes: the key NewFlowKey
// builds from them reads back from its text. From text: UnmarshalText
// either fails with ErrBadKeyText and leaves the key alone, or gives a key
// whose own text is canonical (reads back to it, and is its String again).
// The seed corpus is keyTextCases plus testdata/fuzz/FuzzKeyText.
func FuzzKeyText(f *testing.F) {
	for _, tc := range keyTextCases() {
		k := tc.key
		f.Add(append([]byte(nil), k.bytes()[:37]...), tc.text)
	}
	f.Fuzz(func(t *testing.T, raw []byte, text string) {
		var b [37]byte
		copy(b[:], raw)
		k := NewFlowKey(netip.AddrFrom16([16]byte(b[0:16])), netip.AddrFrom16([16]byte(b[16:32])),
			binary.BigEndian.Uint16(b[32:]), binary.BigEndian.Uint16(b[34:]), b[36])
		checkKeyText(t, k)

		orig := textKey("192.0.2.9", "192.0.2.10", 11, 12, ProtoUDP)
		got := orig
		if err := got.UnmarshalText([]byte(text)); err != nil {
			if !errors.Is(err, ErrBadKeyText) {
				t.Fatalf("UnmarshalText(%q) = %v, not ErrBadKeyText", text, err)
			}
			if got != orig {
				t.Fatalf("UnmarshalText(%q) failed but changed the key to %v", text, got)
			}
			return
		}
		checkKeyText(t, got)
	})
}

// checkKeyText: k's text reads back to k, and writing that gives the same
// text.
func checkKeyText(t *testing.T, k FlowKey) {
	t.Helper()
	s := k.String()
	var back FlowKey
	if err := back.UnmarshalText([]byte(s)); err != nil || back != k {
		t.Fatalf("key % x: text %q reads as %v, %v", k.bytes(), s, back, err)
	}
	if s2 := back.String(); s2 != s {
		t.Fatalf("key % x: text %q reads back and writes %q", k.bytes(), s, s2)
	}
}
