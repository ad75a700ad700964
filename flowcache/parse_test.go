package flowcache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// The packets below are built by hand, a header at a time, so that what
// the tests expect does not come from a decoder: each case says which key
// the packet has and how many of its bytes the key needs, and
// TestParseTruncations checks that every shorter prefix is ErrTruncated
// and every longer one gives the same key.

var (
	srcV4 = netip.MustParseAddr("192.0.2.1")
	dstV4 = netip.MustParseAddr("198.51.100.2")
	srcV6 = netip.MustParseAddr("2001:db8::1")
	dstV6 = netip.MustParseAddr("2001:db8:ffff::2")
)

const (
	protoIPIP    = 4
	protoIPv6    = 41
	protoGRE     = 47
	protoESP     = 50
	protoNoNext  = 59
	protoHopOpts = 0
	protoRouting = 43
	protoDstOpts = 60
	protoMobile  = 135
	protoHIP     = 139
	protoShim6   = 140
	protoIGMP    = 2
	protoOSPF    = 89
)

func concat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// appData is application bytes after a transport header: a recognisable
// filler, so that a parser reading ports from it would be caught.
var appData = []byte("PAYLOAD-PAYLOAD-")

// ip4 is an IPv4 packet: 20-byte header (IHL 5, total length set, TTL 64)
// from srcV4 to dstV4, then body.
func ip4(proto byte, body ...[]byte) []byte {
	b := concat(body...)
	h := make([]byte, 20, 20+len(b))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:4], uint16(20+len(b)))
	h[8] = 64
	h[9] = proto
	copy(h[12:16], srcV4.AsSlice())
	copy(h[16:20], dstV4.AsSlice())
	return append(h, b...)
}

// ip4opts is ip4 with IPv4 options; len(opts) must be a multiple of 4.
func ip4opts(proto byte, opts []byte, body ...[]byte) []byte {
	p := ip4(proto, concat(opts, concat(body...)))
	// Move the options into the header: they were appended as body.
	p[0] = 0x40 | byte((20+len(opts))/4)
	return p
}

// patched returns p after fn changed a copy of it.
func patched(p []byte, fn func(p []byte)) []byte {
	p = append([]byte(nil), p...)
	fn(p)
	return p
}

// frag4 sets the IPv4 flags and fragment offset word.
func frag4(p []byte, mf bool, offset uint16) []byte {
	return patched(p, func(p []byte) {
		w := offset & 0x1fff
		if mf {
			w |= 0x2000
		}
		binary.BigEndian.PutUint16(p[6:8], w)
	})
}

// ip6 is an IPv6 packet: 40-byte header (payload length set, hop limit
// 64) from srcV6 to dstV6, then body.
func ip6(nh byte, body ...[]byte) []byte {
	b := concat(body...)
	h := make([]byte, 40, 40+len(b))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:6], uint16(len(b)))
	h[6] = nh
	h[7] = 64
	copy(h[8:24], srcV6.AsSlice())
	copy(h[24:40], dstV6.AsSlice())
	return append(h, b...)
}

// extHdr is a generic IPv6 extension header (Hop-by-Hop, Routing,
// Destination Options, Mobility, HIP, Shim6, 253, 254) of (n+1)×8 bytes.
// Its body is well-formed PadN options (so that a decoder that reads the
// options accepts it) whose padding is 0xa5 rather than 0, so that a
// parser reading a length from the wrong place would go astray.
func extHdr(nh byte, n byte) []byte {
	h := make([]byte, (int(n)+1)*8)
	h[0], h[1] = nh, n
	for b := h[2:]; len(b) > 0; {
		if len(b) == 1 {
			b[0] = 0 // Pad1
			break
		}
		l := min(len(b)-2, 255)
		if len(b)-2-l == 1 { // leave no single byte that would need a Pad1 after a full PadN
			l--
		}
		b[0], b[1] = 1, byte(l) // PadN
		for i := range l {
			b[2+i] = 0xa5
		}
		b = b[2+l:]
	}
	return h
}

// frag6Hdr is an IPv6 Fragment header; offset is in 8-byte units.
func frag6Hdr(nh byte, offset uint16, more bool) []byte {
	h := []byte{nh, 0xff, 0, 0, 0xde, 0xad, 0xbe, 0xef} // byte 1 is reserved; 0xff must not be read as a length
	w := offset << 3
	if more {
		w |= 1
	}
	binary.BigEndian.PutUint16(h[2:4], w)
	return h
}

// ahHdr is an IPv6 Authentication Header of (plen+2)×4 bytes.
func ahHdr(nh byte, plen byte) []byte {
	h := make([]byte, (int(plen)+2)*4)
	h[0], h[1] = nh, plen
	binary.BigEndian.PutUint32(h[4:8], 0x1000) // SPI
	return h
}

func portHeader(sport, dport uint16, n int) []byte {
	h := make([]byte, n)
	binary.BigEndian.PutUint16(h[0:2], sport)
	binary.BigEndian.PutUint16(h[2:4], dport)
	return h
}

func tcpHdr(sport, dport uint16) []byte {
	h := portHeader(sport, dport, 20)
	h[12] = 5 << 4
	h[13] = 0x02 // SYN
	return h
}
func udpHdr(sport, dport uint16) []byte     { return portHeader(sport, dport, 8) }
func sctpHdr(sport, dport uint16) []byte    { return portHeader(sport, dport, 12) }
func dccpHdr(sport, dport uint16) []byte    { return portHeader(sport, dport, 16) }
func udpLiteHdr(sport, dport uint16) []byte { return portHeader(sport, dport, 8) }

// icmpHdr is an 8-byte ICMP or ICMPv6 header: type, code, checksum, then
// identifier and sequence (the echo layout; other types have other data
// there).
func icmpHdr(typ, code byte, id, seq uint16) []byte {
	h := []byte{typ, code, 0xbe, 0xef, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(h[4:6], id)
	binary.BigEndian.PutUint16(h[6:8], seq)
	return h
}

// ethFrame is an Ethernet II frame with the given tags (each a TPID; the TCI
// is VLAN 100 + i) and EtherType.
func ethFrame(etype uint16, tpids []uint16, body []byte) []byte {
	h := []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2}
	for i, tpid := range tpids {
		h = binary.BigEndian.AppendUint16(h, tpid)
		h = binary.BigEndian.AppendUint16(h, uint16(100+i))
	}
	h = binary.BigEndian.AppendUint16(h, etype)
	return append(h, body...)
}

// ethIP wraps an IP packet in an untagged frame with the EtherType its
// version nibble calls for (0x0800 for anything but 6).
func ethIP(p []byte) []byte {
	etype := uint16(etherTypeIPv4)
	if len(p) > 0 && p[0]>>4 == 6 {
		etype = etherTypeIPv6
	}
	return ethFrame(etype, nil, p)
}

func key4(proto uint8, sport, dport uint16) FlowKey {
	return NewFlowKey(srcV4, dstV4, sport, dport, proto)
}

func key6(proto uint8, sport, dport uint16) FlowKey {
	return NewFlowKey(srcV6, dstV6, sport, dport, proto)
}

// parseCase is a hand-built packet and what the parser makes of it.
//
// A valid packet (err == nil) has key want, and need is the length of the
// shortest prefix that has it: every prefix shorter than need is
// ErrTruncated, every prefix from need on gives want.
//
// An invalid packet fails with err (a sentinel), and need is the length
// of the shortest prefix that shows it: shorter prefixes are ErrTruncated,
// longer ones fail with err.
type parseCase struct {
	name  string
	frame bool // ParseFrame; else ParseFlowKey (and ParseFrame on ethIP of it)
	pkt   []byte
	need  int
	want  FlowKey
	err   error
}

func parseCases() []parseCase {
	// Eight generic extension headers, each pointing to the next; the
	// last names last.
	chain := func(n int, last byte) []byte {
		var b []byte
		for i := range n {
			nh := byte(protoDstOpts)
			if i == n-1 {
				nh = last
			}
			b = append(b, extHdr(nh, 0)...)
		}
		return b
	}
	tagged := func(tpids ...uint16) []uint16 { return tpids }
	eightTags := []uint16{0x8100, 0x88a8, 0x9100, 0x8100, 0x88a8, 0x9100, 0x8100, 0x8100}

	return []parseCase{
		// IPv4, each transport that has ports: need = 20 + 4.
		{name: "ipv4/tcp", pkt: ip4(ProtoTCP, tcpHdr(49152, 443), appData), need: 24, want: key4(ProtoTCP, 49152, 443)},
		{name: "ipv4/udp", pkt: ip4(ProtoUDP, udpHdr(5353, 53), appData), need: 24, want: key4(ProtoUDP, 5353, 53)},
		{name: "ipv4/sctp", pkt: ip4(ProtoSCTP, sctpHdr(2905, 2905), appData), need: 24, want: key4(ProtoSCTP, 2905, 2905)},
		{name: "ipv4/dccp", pkt: ip4(ProtoDCCP, dccpHdr(5004, 5005), appData), need: 24, want: key4(ProtoDCCP, 5004, 5005)},
		{name: "ipv4/udplite", pkt: ip4(protoUDPLite, udpLiteHdr(1000, 2000), appData), need: 24, want: key4(protoUDPLite, 1000, 2000)},
		{name: "ipv4/ports-0", pkt: ip4(ProtoUDP, udpHdr(0, 0)), need: 24, want: key4(ProtoUDP, 0, 0)},
		{name: "ipv4/ports-max", pkt: ip4(ProtoTCP, tcpHdr(65535, 65534)), need: 24, want: key4(ProtoTCP, 65535, 65534)},

		// IPv4 header length: options are skipped by IHL; under 5 is malformed.
		{name: "ipv4/options-4/tcp", pkt: ip4opts(ProtoTCP, []byte{0x94, 0x04, 0, 0}, tcpHdr(1024, 22)), need: 28, want: key4(ProtoTCP, 1024, 22)},
		{name: "ipv4/options-40/udp", pkt: ip4opts(ProtoUDP, []byte(strings.Repeat("\x01", 39)+"\x00"), udpHdr(68, 67)), need: 64, want: key4(ProtoUDP, 68, 67)},
		{name: "ipv4/options-unread", pkt: ip4opts(ProtoTCP, []byte{0x44, 0x01, 0, 0}, tcpHdr(1024, 22)), need: 28, want: key4(ProtoTCP, 1024, 22)},
		{name: "ipv4/ihl-4", pkt: patched(ip4(ProtoTCP, tcpHdr(1, 2)), func(p []byte) { p[0] = 0x44 }), need: 20, err: ErrMalformed},
		{name: "ipv4/ihl-0", pkt: patched(ip4(ProtoTCP, tcpHdr(1, 2)), func(p []byte) { p[0] = 0x40 }), need: 20, err: ErrMalformed},

		// IP version: neither 4 nor 6 is not IP, seen from the first byte.
		{name: "version-0", pkt: patched(ip4(ProtoTCP, tcpHdr(1, 2)), func(p []byte) { p[0] = 0x05 }), need: 1, err: ErrNotIP},
		{name: "version-5", pkt: patched(ip4(ProtoTCP, tcpHdr(1, 2)), func(p []byte) { p[0] = 0x55 }), need: 1, err: ErrNotIP},
		{name: "version-15", pkt: patched(ip6(ProtoTCP, tcpHdr(1, 2)), func(p []byte) { p[0] = 0xf0 }), need: 1, err: ErrNotIP},

		// Length fields are not checked against the buffer.
		{name: "ipv4/total-length-0", pkt: patched(ip4(ProtoTCP, tcpHdr(80, 8080), appData), func(p []byte) { p[2], p[3] = 0, 0 }), need: 24, want: key4(ProtoTCP, 80, 8080)},
		{name: "ipv4/total-length-20", pkt: patched(ip4(ProtoUDP, udpHdr(80, 8080)), func(p []byte) { p[2], p[3] = 0, 20 }), need: 24, want: key4(ProtoUDP, 80, 8080)},
		{name: "ipv4/total-length-65535", pkt: patched(ip4(ProtoUDP, udpHdr(80, 8080)), func(p []byte) { p[2], p[3] = 0xff, 0xff }), need: 24, want: key4(ProtoUDP, 80, 8080)},
		{name: "ipv4/total-length-10", pkt: patched(ip4(ProtoUDP, udpHdr(80, 8080)), func(p []byte) { p[2], p[3] = 0, 10 }), need: 24, want: key4(ProtoUDP, 80, 8080)},
		{name: "ipv6/payload-length-0", pkt: patched(ip6(ProtoTCP, tcpHdr(80, 8080), appData), func(p []byte) { p[4], p[5] = 0, 0 }), need: 44, want: key6(ProtoTCP, 80, 8080)},
		{name: "ipv6/payload-length-4/destination/udp", pkt: patched(ip6(protoDstOpts, extHdr(ProtoUDP, 0), udpHdr(80, 8080)), func(p []byte) { p[4], p[5] = 0, 4 }), need: 52, want: key6(ProtoUDP, 80, 8080)},
		{name: "ipv6/payload-length-4/hop-by-hop/tcp", pkt: patched(ip6(protoHopOpts, extHdr(ProtoTCP, 0), tcpHdr(80, 8080)), func(p []byte) { p[4], p[5] = 0, 4 }), need: 52, want: key6(ProtoTCP, 80, 8080)},
		{name: "ipv6/payload-length-1", pkt: patched(ip6(ProtoUDP, udpHdr(80, 8080)), func(p []byte) { p[4], p[5] = 0, 1 }), need: 44, want: key6(ProtoUDP, 80, 8080)},

		// IPv4 fragments: the first has the transport header, the others have ports 0/0.
		{name: "ipv4/fragment-first", pkt: frag4(ip4(ProtoUDP, udpHdr(4500, 4500), appData), true, 0), need: 24, want: key4(ProtoUDP, 4500, 4500)},
		{name: "ipv4/fragment-dont-fragment", pkt: patched(ip4(ProtoTCP, tcpHdr(4500, 80)), func(p []byte) { p[6] = 0x40 }), need: 24, want: key4(ProtoTCP, 4500, 80)},
		{name: "ipv4/fragment-middle", pkt: frag4(ip4(ProtoUDP, appData), true, 185), need: 20, want: key4(ProtoUDP, 0, 0)},
		{name: "ipv4/fragment-last", pkt: frag4(ip4(ProtoTCP, appData), false, 370), need: 20, want: key4(ProtoTCP, 0, 0)},
		{name: "ipv4/fragment-offset-1", pkt: frag4(ip4(ProtoTCP, appData), false, 1), need: 20, want: key4(ProtoTCP, 0, 0)},
		{name: "ipv4/fragment-offset-max", pkt: frag4(ip4(ProtoICMP, appData), false, 0x1fff), need: 20, want: key4(ProtoICMP, 0, 0)},
		{name: "ipv4/fragment-last-options", pkt: frag4(ip4opts(ProtoUDP, []byte{1, 1, 1, 0}, appData), false, 8), need: 24, want: key4(ProtoUDP, 0, 0)},

		// ICMP: echo puts the identifier in both ports and needs 6 bytes;
		// other types need the type byte and have ports 0/0.
		{name: "ipv4/icmp-echo-request", pkt: ip4(ProtoICMP, icmpHdr(8, 0, 0x1234, 1), appData), need: 26, want: key4(ProtoICMP, 0x1234, 0x1234)},
		{name: "ipv4/icmp-echo-reply", pkt: ip4(ProtoICMP, icmpHdr(0, 0, 0xbeef, 7)), need: 26, want: key4(ProtoICMP, 0xbeef, 0xbeef)},
		{name: "ipv4/icmp-echo-code-1", pkt: ip4(ProtoICMP, icmpHdr(8, 1, 0x0102, 0)), need: 26, want: key4(ProtoICMP, 0x0102, 0x0102)},
		{name: "ipv4/icmp-dest-unreachable", pkt: ip4(ProtoICMP, icmpHdr(3, 3, 0x1234, 0), ip4(ProtoUDP, udpHdr(1, 2))), need: 21, want: key4(ProtoICMP, 0, 0)},
		{name: "ipv4/icmp-time-exceeded", pkt: ip4(ProtoICMP, icmpHdr(11, 0, 0, 0)), need: 21, want: key4(ProtoICMP, 0, 0)},
		{name: "ipv4/icmp-timestamp", pkt: ip4(ProtoICMP, icmpHdr(13, 0, 0x1234, 1)), need: 21, want: key4(ProtoICMP, 0, 0)},
		{name: "ipv4/icmp-type-only", pkt: ip4(ProtoICMP, []byte{3}), need: 21, want: key4(ProtoICMP, 0, 0)},
		// Which types are echo follows the protocol number, not the IP version.
		{name: "ipv4/icmpv6-type-128", pkt: ip4(ProtoICMPv6, icmpHdr(128, 0, 0x1234, 1)), need: 26, want: key4(ProtoICMPv6, 0x1234, 0x1234)},
		{name: "ipv4/icmp-type-128", pkt: ip4(ProtoICMP, icmpHdr(128, 0, 0x1234, 1)), need: 21, want: key4(ProtoICMP, 0, 0)},

		// Tunnels and other protocols: the outer header, ports 0/0, nothing past it read.
		{name: "ipv4/ipip", pkt: ip4(protoIPIP, ip4(ProtoTCP, tcpHdr(1, 2))), need: 20, want: key4(protoIPIP, 0, 0)},
		{name: "ipv4/6in4", pkt: ip4(protoIPv6, ip6(ProtoUDP, udpHdr(1, 2))), need: 20, want: key4(protoIPv6, 0, 0)},
		{name: "ipv4/gre", pkt: ip4(protoGRE, []byte{0, 0, 0x08, 0x00}, ip4(ProtoTCP, tcpHdr(1, 2))), need: 20, want: key4(protoGRE, 0, 0)},
		{name: "ipv4/esp", pkt: ip4(protoESP, []byte{0, 0, 0x10, 0, 0, 0, 0, 1}, appData), need: 20, want: key4(protoESP, 0, 0)},
		{name: "ipv4/ah-not-skipped", pkt: ip4(protoAH, ahHdr(ProtoTCP, 4), tcpHdr(1, 2)), need: 20, want: key4(protoAH, 0, 0)},
		{name: "ipv4/igmp", pkt: ip4(protoIGMP, []byte{0x16, 0, 0, 0, 224, 0, 0, 251}), need: 20, want: key4(protoIGMP, 0, 0)},
		{name: "ipv4/ospf", pkt: ip4(protoOSPF, appData), need: 20, want: key4(protoOSPF, 0, 0)},
		{name: "ipv4/proto-255-empty", pkt: ip4(255), need: 20, want: key4(255, 0, 0)},

		// IPv6, each transport: need = 40 + 4.
		{name: "ipv6/tcp", pkt: ip6(ProtoTCP, tcpHdr(49152, 443), appData), need: 44, want: key6(ProtoTCP, 49152, 443)},
		{name: "ipv6/udp", pkt: ip6(ProtoUDP, udpHdr(546, 547), appData), need: 44, want: key6(ProtoUDP, 546, 547)},
		{name: "ipv6/sctp", pkt: ip6(ProtoSCTP, sctpHdr(36412, 36412)), need: 44, want: key6(ProtoSCTP, 36412, 36412)},
		{name: "ipv6/dccp", pkt: ip6(ProtoDCCP, dccpHdr(5004, 5005)), need: 44, want: key6(ProtoDCCP, 5004, 5005)},
		{name: "ipv6/udplite", pkt: ip6(protoUDPLite, udpLiteHdr(1000, 2000)), need: 44, want: key6(protoUDPLite, 1000, 2000)},

		// ICMPv6.
		{name: "ipv6/icmpv6-echo-request", pkt: ip6(ProtoICMPv6, icmpHdr(128, 0, 0x4242, 1), appData), need: 46, want: key6(ProtoICMPv6, 0x4242, 0x4242)},
		{name: "ipv6/icmpv6-echo-reply", pkt: ip6(ProtoICMPv6, icmpHdr(129, 0, 0x4242, 1)), need: 46, want: key6(ProtoICMPv6, 0x4242, 0x4242)},
		{name: "ipv6/icmpv6-neighbor-solicitation", pkt: ip6(ProtoICMPv6, icmpHdr(135, 0, 0, 0), srcV6.AsSlice()), need: 41, want: key6(ProtoICMPv6, 0, 0)},
		{name: "ipv6/icmpv6-packet-too-big", pkt: ip6(ProtoICMPv6, icmpHdr(2, 0, 0, 1280)), need: 41, want: key6(ProtoICMPv6, 0, 0)},
		{name: "ipv6/icmpv6-type-8", pkt: ip6(ProtoICMPv6, icmpHdr(8, 0, 0x1234, 1)), need: 41, want: key6(ProtoICMPv6, 0, 0)},
		{name: "ipv6/icmp-type-8", pkt: ip6(ProtoICMP, icmpHdr(8, 0, 0x1234, 1)), need: 46, want: key6(ProtoICMP, 0x1234, 0x1234)},

		// IPv6 extension headers, each kind, skipped to the protocol.
		{name: "ipv6/hop-by-hop/tcp", pkt: ip6(protoHopOpts, extHdr(ProtoTCP, 0), tcpHdr(1, 2)), need: 52, want: key6(ProtoTCP, 1, 2)},
		{name: "ipv6/routing-24/udp", pkt: ip6(protoRouting, extHdr(ProtoUDP, 2), udpHdr(1, 2)), need: 68, want: key6(ProtoUDP, 1, 2)},
		{name: "ipv6/destination/tcp", pkt: ip6(protoDstOpts, extHdr(ProtoTCP, 1), tcpHdr(3, 4)), need: 60, want: key6(ProtoTCP, 3, 4)},
		{name: "ipv6/mobility/no-next", pkt: ip6(protoMobile, extHdr(protoNoNext, 1)), need: 56, want: key6(protoNoNext, 0, 0)},
		{name: "ipv6/hip/udp", pkt: ip6(protoHIP, extHdr(ProtoUDP, 0), udpHdr(10500, 10500)), need: 52, want: key6(ProtoUDP, 10500, 10500)},
		{name: "ipv6/shim6/tcp", pkt: ip6(protoShim6, extHdr(ProtoTCP, 0), tcpHdr(5, 6)), need: 52, want: key6(ProtoTCP, 5, 6)},
		{name: "ipv6/exp-253/udp", pkt: ip6(253, extHdr(ProtoUDP, 0), udpHdr(7, 8)), need: 52, want: key6(ProtoUDP, 7, 8)},
		{name: "ipv6/exp-254/sctp", pkt: ip6(254, extHdr(ProtoSCTP, 3), sctpHdr(9, 10)), need: 76, want: key6(ProtoSCTP, 9, 10)},
		{name: "ipv6/destination-2048/tcp", pkt: ip6(protoDstOpts, extHdr(ProtoTCP, 255), tcpHdr(11, 12)), need: 40 + 2048 + 4, want: key6(ProtoTCP, 11, 12)},
		{name: "ipv6/ah-24/tcp", pkt: ip6(protoAH, ahHdr(ProtoTCP, 4), tcpHdr(1, 2)), need: 68, want: key6(ProtoTCP, 1, 2)},
		{name: "ipv6/ah-12/udp", pkt: ip6(protoAH, ahHdr(ProtoUDP, 1), udpHdr(500, 500)), need: 56, want: key6(ProtoUDP, 500, 500)},
		{name: "ipv6/ah-8/icmpv6-echo", pkt: ip6(protoAH, ahHdr(ProtoICMPv6, 0), icmpHdr(128, 0, 9, 9)), need: 54, want: key6(ProtoICMPv6, 9, 9)},
		{name: "ipv6/esp", pkt: ip6(protoESP, []byte{0, 0, 0x10, 0, 0, 0, 0, 1}, tcpHdr(1, 2)), need: 40, want: key6(protoESP, 0, 0)},
		{name: "ipv6/hop-by-hop/esp", pkt: ip6(protoHopOpts, extHdr(protoESP, 0), []byte{0, 0, 0x10, 0}), need: 48, want: key6(protoESP, 0, 0)},
		{name: "ipv6/no-next-header", pkt: ip6(protoNoNext, appData), need: 40, want: key6(protoNoNext, 0, 0)},
		{name: "ipv6/routing/no-next-header", pkt: ip6(protoRouting, extHdr(protoNoNext, 0)), need: 48, want: key6(protoNoNext, 0, 0)},
		{name: "ipv6/chain-6", pkt: ip6(protoHopOpts, extHdr(protoDstOpts, 0), extHdr(protoRouting, 1), extHdr(protoIPv6Frag, 0), frag6Hdr(protoAH, 0, true), ahHdr(protoDstOpts, 1), extHdr(ProtoTCP, 0), tcpHdr(13, 14)),
			need: 40 + 8 + 8 + 16 + 8 + 12 + 8 + 4, want: key6(ProtoTCP, 13, 14)},
		{name: "ipv6/ext-8", pkt: ip6(protoDstOpts, chain(8, ProtoUDP), udpHdr(15, 16)), need: 40 + 64 + 4, want: key6(ProtoUDP, 15, 16)},
		{name: "ipv6/ext-8/esp", pkt: ip6(protoDstOpts, chain(8, protoESP)), need: 40 + 64, want: key6(protoESP, 0, 0)},
		// The ninth is refused once the eighth, which names it, is whole.
		// An IPv4-mapped address in an IPv6 header would share an IPv4
		// flow's key: refused once the header is whole.
		{name: "ipv6/mapped-src", pkt: patched(ip6(ProtoTCP, tcpHdr(1, 2)), func(p []byte) { copy(p[8:24], netip.MustParseAddr("::ffff:192.0.2.1").AsSlice()) }), need: 40, err: ErrMalformed},
		{name: "ipv6/mapped-dst", pkt: patched(ip6(ProtoUDP, udpHdr(1, 2)), func(p []byte) { copy(p[24:40], netip.MustParseAddr("::ffff:198.51.100.2").AsSlice()) }), need: 40, err: ErrMalformed},
		{name: "ipv6/ext-9", pkt: ip6(protoDstOpts, chain(9, ProtoUDP), udpHdr(15, 16)), need: 40 + 64, err: ErrMalformed},
		{name: "ipv6/ext-9-hop-by-hop", pkt: ip6(protoHopOpts, chain(9, ProtoUDP), udpHdr(15, 16)), need: 40 + 64, err: ErrMalformed},
		{name: "ipv6/ext-8-then-fragment", pkt: ip6(protoDstOpts, chain(8, protoIPv6Frag), frag6Hdr(ProtoUDP, 10, false)), need: 40 + 64, err: ErrMalformed},

		// IPv6 fragments.
		{name: "ipv6/fragment-first/tcp", pkt: ip6(protoIPv6Frag, frag6Hdr(ProtoTCP, 0, true), tcpHdr(1, 2), appData), need: 52, want: key6(ProtoTCP, 1, 2)},
		{name: "ipv6/fragment-atomic/udp", pkt: ip6(protoIPv6Frag, frag6Hdr(ProtoUDP, 0, false), udpHdr(3, 4)), need: 52, want: key6(ProtoUDP, 3, 4)},
		{name: "ipv6/fragment-middle/tcp", pkt: ip6(protoIPv6Frag, frag6Hdr(ProtoTCP, 100, true), appData), need: 48, want: key6(ProtoTCP, 0, 0)},
		{name: "ipv6/fragment-last/udp", pkt: ip6(protoIPv6Frag, frag6Hdr(ProtoUDP, 8191, false), appData), need: 48, want: key6(ProtoUDP, 0, 0)},
		{name: "ipv6/fragment-offset-1/icmpv6", pkt: ip6(protoIPv6Frag, frag6Hdr(ProtoICMPv6, 1, false), icmpHdr(128, 0, 1, 1)), need: 48, want: key6(ProtoICMPv6, 0, 0)},
		// A non-first fragment ends the walk: the header after it is not looked at.
		{name: "ipv6/fragment-middle/destination", pkt: ip6(protoIPv6Frag, frag6Hdr(protoDstOpts, 100, true), extHdr(ProtoTCP, 0), tcpHdr(1, 2)), need: 48, want: key6(protoDstOpts, 0, 0)},
		{name: "ipv6/hop-by-hop/fragment-last/udp", pkt: ip6(protoHopOpts, extHdr(protoIPv6Frag, 0), frag6Hdr(ProtoUDP, 3, false), appData), need: 56, want: key6(ProtoUDP, 0, 0)},
		{name: "ipv6/fragment-first/routing/udp", pkt: ip6(protoIPv6Frag, frag6Hdr(protoRouting, 0, true), extHdr(ProtoUDP, 0), udpHdr(5, 6)), need: 60, want: key6(ProtoUDP, 5, 6)},

		// IPv6 tunnels.
		{name: "ipv6/4in6", pkt: ip6(protoIPIP, ip4(ProtoTCP, tcpHdr(1, 2))), need: 40, want: key6(protoIPIP, 0, 0)},
		{name: "ipv6/6in6", pkt: ip6(protoIPv6, ip6(ProtoTCP, tcpHdr(1, 2))), need: 40, want: key6(protoIPv6, 0, 0)},
		{name: "ipv6/gre", pkt: ip6(protoGRE, []byte{0, 0, 0x86, 0xdd}, ip6(ProtoUDP, udpHdr(1, 2))), need: 40, want: key6(protoGRE, 0, 0)},
		{name: "ipv6/hop-by-hop/6in6", pkt: ip6(protoHopOpts, extHdr(protoIPv6, 0), ip6(ProtoTCP, tcpHdr(1, 2))), need: 48, want: key6(protoIPv6, 0, 0)},
		{name: "ipv6/ospf", pkt: ip6(protoOSPF, appData), need: 40, want: key6(protoOSPF, 0, 0)},

		// Ethernet: 0, 1, 2 and 8 tags of each kind, then IP.
		{name: "eth/ipv4/tcp", frame: true, pkt: ethFrame(etherTypeIPv4, nil, ip4(ProtoTCP, tcpHdr(1234, 80), appData)), need: 14 + 24, want: key4(ProtoTCP, 1234, 80)},
		{name: "eth/ipv6/udp", frame: true, pkt: ethFrame(etherTypeIPv6, nil, ip6(ProtoUDP, udpHdr(1234, 53))), need: 14 + 44, want: key6(ProtoUDP, 1234, 53)},
		{name: "eth/802.1q/ipv4/udp", frame: true, pkt: ethFrame(etherTypeIPv4, tagged(0x8100), ip4(ProtoUDP, udpHdr(1, 2))), need: 18 + 24, want: key4(ProtoUDP, 1, 2)},
		{name: "eth/802.1ad/ipv6/tcp", frame: true, pkt: ethFrame(etherTypeIPv6, tagged(0x88a8), ip6(ProtoTCP, tcpHdr(1, 2))), need: 18 + 44, want: key6(ProtoTCP, 1, 2)},
		{name: "eth/9100/ipv4/tcp", frame: true, pkt: ethFrame(etherTypeIPv4, tagged(0x9100), ip4(ProtoTCP, tcpHdr(1, 2))), need: 18 + 24, want: key4(ProtoTCP, 1, 2)},
		{name: "eth/802.1ad+802.1q/ipv6/udp", frame: true, pkt: ethFrame(etherTypeIPv6, tagged(0x88a8, 0x8100), ip6(ProtoUDP, udpHdr(3, 4))), need: 22 + 44, want: key6(ProtoUDP, 3, 4)},
		{name: "eth/9100+802.1q/ipv4/icmp-echo", frame: true, pkt: ethFrame(etherTypeIPv4, tagged(0x9100, 0x8100), ip4(ProtoICMP, icmpHdr(8, 0, 77, 1))), need: 22 + 26, want: key4(ProtoICMP, 77, 77)},
		{name: "eth/802.1q+802.1q/ipv4/fragment-middle", frame: true, pkt: ethFrame(etherTypeIPv4, tagged(0x8100, 0x8100), frag4(ip4(ProtoUDP, appData), true, 10)), need: 22 + 20, want: key4(ProtoUDP, 0, 0)},
		{name: "eth/8-tags/ipv4/tcp", frame: true, pkt: ethFrame(etherTypeIPv4, eightTags, ip4(ProtoTCP, tcpHdr(5, 6))), need: 14 + 32 + 24, want: key4(ProtoTCP, 5, 6)},
		{name: "eth/9-tags", frame: true, pkt: ethFrame(etherTypeIPv4, append(eightTags[:8:8], 0x8100), ip4(ProtoTCP, tcpHdr(5, 6))), need: 14 + 32, err: ErrMalformed},
		{name: "eth/ipv4/padded", frame: true, pkt: concat(ethFrame(etherTypeIPv4, nil, ip4(ProtoUDP, udpHdr(67, 68))), make([]byte, 18)), need: 14 + 24, want: key4(ProtoUDP, 67, 68)},

		// Ethernet: not IP, from the EtherType (after the tags).
		{name: "eth/arp", frame: true, pkt: ethFrame(0x0806, nil, make([]byte, 28)), need: 14, err: ErrNotIP},
		{name: "eth/802.1q/arp", frame: true, pkt: ethFrame(0x0806, tagged(0x8100), make([]byte, 28)), need: 18, err: ErrNotIP},
		{name: "eth/mpls/ipv4", frame: true, pkt: ethFrame(0x8847, nil, concat([]byte{0, 0x01, 0x01, 0x40}, ip4(ProtoTCP, tcpHdr(1, 2)))), need: 14, err: ErrNotIP},
		{name: "eth/mpls-multicast/ipv6", frame: true, pkt: ethFrame(0x8848, nil, concat([]byte{0, 0x01, 0x01, 0x40}, ip6(ProtoTCP, tcpHdr(1, 2)))), need: 14, err: ErrNotIP},
		{name: "eth/802.1q/mpls/ipv4", frame: true, pkt: ethFrame(0x8847, tagged(0x8100), concat([]byte{0, 0x01, 0x01, 0x40}, ip4(ProtoTCP, tcpHdr(1, 2)))), need: 18, err: ErrNotIP},
		{name: "eth/pppoe-session/ipv4", frame: true, pkt: ethFrame(0x8864, nil, concat([]byte{0x11, 0, 0, 1, 0, 0x2a, 0, 0x21}, ip4(ProtoUDP, udpHdr(1, 2)))), need: 14, err: ErrNotIP},
		{name: "eth/pppoe-discovery", frame: true, pkt: ethFrame(0x8863, nil, []byte{0x11, 0x09, 0, 0, 0, 0}), need: 14, err: ErrNotIP},
		{name: "eth/lldp", frame: true, pkt: ethFrame(0x88cc, nil, []byte{0x02, 0x07, 0x04}), need: 14, err: ErrNotIP},
		{name: "eth/802.3-length", frame: true, pkt: ethFrame(0x002e, nil, []byte{0xaa, 0xaa, 0x03}), need: 14, err: ErrNotIP},
		{name: "eth/ethertype-0", frame: true, pkt: ethFrame(0, nil, ip4(ProtoTCP, tcpHdr(1, 2))), need: 14, err: ErrNotIP},

		// Ethernet: the IP version nibble must agree with the EtherType.
		{name: "eth/0800-version-6", frame: true, pkt: ethFrame(etherTypeIPv4, nil, ip6(ProtoTCP, tcpHdr(1, 2))), need: 15, err: ErrMalformed},
		{name: "eth/86dd-version-4", frame: true, pkt: ethFrame(etherTypeIPv6, nil, ip4(ProtoTCP, tcpHdr(1, 2))), need: 15, err: ErrMalformed},
		{name: "eth/0800-version-5", frame: true, pkt: ethFrame(etherTypeIPv4, nil, patched(ip4(ProtoTCP, tcpHdr(1, 2)), func(p []byte) { p[0] = 0x55 })), need: 15, err: ErrNotIP},
		{name: "eth/86dd-version-0", frame: true, pkt: ethFrame(etherTypeIPv6, tagged(0x8100), patched(ip6(ProtoTCP, tcpHdr(1, 2)), func(p []byte) { p[0] = 0x00 })), need: 19, err: ErrNotIP},
	}
}

// parser returns the parser a case is for and, for an IP packet case,
// the framed variant that ParseFrame must agree with.
type parserVariant struct {
	name  string
	parse func([]byte) (FlowKey, error)
	pkt   []byte
	need  int
}

func variants(c parseCase) []parserVariant {
	if c.frame {
		return []parserVariant{{"ParseFrame", ParseFrame, c.pkt, c.need}}
	}
	return []parserVariant{
		{"ParseFlowKey", ParseFlowKey, c.pkt, c.need},
		{"ParseFrame(ethIP)", ParseFrame, ethIP(c.pkt), 14 + c.need},
	}
}

func TestParse(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range parseCases() {
		if seen[c.name] {
			t.Fatalf("duplicate case %s", c.name)
		}
		seen[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			if c.need > len(c.pkt) {
				t.Fatalf("need %d > packet length %d", c.need, len(c.pkt))
			}
			for _, v := range variants(c) {
				k, err := v.parse(v.pkt)
				if c.err != nil {
					if !errors.Is(err, c.err) {
						t.Errorf("%s = %v, %v; want %v", v.name, k, err, c.err)
					}
					if k != (FlowKey{}) {
						t.Errorf("%s: error %v with non-zero key %v", v.name, err, k)
					}
					continue
				}
				if err != nil || k != c.want {
					t.Errorf("%s = %v, %v; want %v", v.name, k, err, c.want)
				}
			}
		})
	}
}

// TestParseTruncations cuts every case at every length: a prefix shorter
// than need is ErrTruncated; from need on, it parses as the whole packet
// (the same key, or the same error). So the key reads no byte past need
// and needs every byte before it.
func TestParseTruncations(t *testing.T) {
	for _, c := range parseCases() {
		t.Run(c.name, func(t *testing.T) {
			for _, v := range variants(c) {
				for n := 0; n <= len(v.pkt); n++ {
					// No spare capacity: a read past n panics instead
					// of seeing the rest of the packet.
					k, err := v.parse(v.pkt[:n:n])
					switch {
					case n < v.need:
						if !errors.Is(err, ErrTruncated) {
							t.Errorf("%s(packet[:%d]) = %v, %v; want ErrTruncated (need %d)", v.name, n, k, err, v.need)
						}
					case c.err != nil:
						if !errors.Is(err, c.err) {
							t.Errorf("%s(packet[:%d]) = %v, %v; want %v", v.name, n, k, err, c.err)
						}
					default:
						if err != nil || k != c.want {
							t.Errorf("%s(packet[:%d]) = %v, %v; want %v", v.name, n, k, err, c.want)
						}
					}
				}
			}
		})
	}
}

// TestParseErrors checks that every error is exactly one of the three
// sentinels and reads "flowcache: …".
func TestParseErrors(t *testing.T) {
	sentinels := []error{ErrTruncated, ErrNotIP, ErrMalformed}
	for _, c := range parseCases() {
		for _, v := range variants(c) {
			for n := 0; n <= len(v.pkt); n++ {
				_, err := v.parse(v.pkt[:n])
				if err == nil {
					continue
				}
				matched := 0
				for _, s := range sentinels {
					if errors.Is(err, s) {
						matched++
					}
				}
				if matched != 1 {
					t.Errorf("%s %s[:%d]: %v matches %d sentinels", c.name, v.name, n, err, matched)
				}
				if !strings.HasPrefix(err.Error(), "flowcache: ") {
					t.Errorf("%s %s[:%d]: error %q does not start with \"flowcache: \"", c.name, v.name, n, err)
				}
			}
		}
	}
}

// TestParseEchoReverse: a reply's key is its request's Reverse, for ICMP
// and ICMPv6, bare and in a frame.
func TestParseEchoReverse(t *testing.T) {
	swap4 := func(p []byte) {
		var a [4]byte
		copy(a[:], p[12:16])
		copy(p[12:16], p[16:20])
		copy(p[16:20], a[:])
	}
	swap6 := func(p []byte) {
		var a [16]byte
		copy(a[:], p[8:24])
		copy(p[8:24], p[24:40])
		copy(p[24:40], a[:])
	}
	for _, tc := range []struct {
		name           string
		request, reply []byte
	}{
		{"icmp", ip4(ProtoICMP, icmpHdr(8, 0, 0x1234, 1), appData), patched(ip4(ProtoICMP, icmpHdr(0, 0, 0x1234, 1), appData), swap4)},
		{"icmpv6", ip6(ProtoICMPv6, icmpHdr(128, 0, 0xabcd, 9)), patched(ip6(ProtoICMPv6, icmpHdr(129, 0, 0xabcd, 9)), swap6)},
		{"icmpv6/hop-by-hop", ip6(protoHopOpts, extHdr(ProtoICMPv6, 0), icmpHdr(128, 0, 7, 1)), patched(ip6(ProtoICMPv6, icmpHdr(129, 0, 7, 1)), swap6)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, parse := range []struct {
				name string
				fn   func([]byte) (FlowKey, error)
			}{
				{"ParseFlowKey", ParseFlowKey},
				{"ParseFrame", func(p []byte) (FlowKey, error) { return ParseFrame(ethIP(p)) }},
			} {
				req, err := parse.fn(tc.request)
				if err != nil {
					t.Fatal(err)
				}
				rep, err := parse.fn(tc.reply)
				if err != nil {
					t.Fatal(err)
				}
				if rep != req.Reverse() || req != rep.Reverse() {
					t.Errorf("%s: request %v, reply %v: not each other's Reverse", parse.name, req, rep)
				}
				if req.SrcPort() == 0 || req.SrcPort() != req.DstPort() {
					t.Errorf("%s: request %v: want the identifier in both ports", parse.name, req)
				}
			}
		})
	}
}

// checkParsed checks what the parsers promise of any input: an error is
// one of the three sentinels and comes with the zero key; a key is
// well-formed (padding zero, Reverse an involution).
func checkParsed(tb testing.TB, what string, in []byte, k FlowKey, err error) {
	tb.Helper()
	if err != nil {
		if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrNotIP) && !errors.Is(err, ErrMalformed) {
			tb.Fatalf("%s(% x): error %v is none of the sentinels", what, in, err)
		}
		if k != (FlowKey{}) {
			tb.Fatalf("%s(% x): error %v with key %v", what, in, err, k)
		}
		return
	}
	if b := k.bytes(); b[37] != 0 || b[38] != 0 || b[39] != 0 {
		tb.Fatalf("%s(% x): key %v has non-zero padding % x", what, in, k, b[37:])
	}
	if k.Reverse().Reverse() != k {
		tb.Fatalf("%s(% x): Reverse is not an involution for %v", what, in, k)
	}
}

// TestParseGarbage feeds both parsers random bytes and mangled copies of
// the hand-built packets (seeded, so a failure reproduces): they must not
// panic, and each result must be a sentinel error or a well-formed key.
// A packet and its framing must also parse the same.
func TestParseGarbage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cases := parseCases()
	buf := make([]byte, 0, 4096)
	for i := range 50_000 {
		buf = buf[:0]
		switch i % 3 {
		case 0: // random bytes, often starting like IPv4 or IPv6
			n := rng.IntN(160)
			for range n {
				buf = append(buf, byte(rng.Uint32()))
			}
			if n > 0 && rng.IntN(2) == 0 {
				buf[0] = buf[0]&0x0f | byte(4+2*rng.IntN(2))<<4
			}
		default: // a hand-built packet with a few bytes changed, maybe cut
			c := cases[rng.IntN(len(cases))]
			buf = append(buf, c.pkt...)
			for range 1 + rng.IntN(4) {
				if len(buf) > 0 {
					buf[rng.IntN(len(buf))] = byte(rng.Uint32())
				}
			}
			buf = buf[:rng.IntN(len(buf)+1)]
		}
		k, err := ParseFlowKey(buf)
		checkParsed(t, "ParseFlowKey", buf, k, err)
		fk, ferr := ParseFrame(ethIP(buf))
		checkParsed(t, "ParseFrame", buf, fk, ferr)
		if fk != k || ferr != err {
			t.Fatalf("% x: ParseFlowKey %v, %v; ParseFrame of it framed %v, %v", buf, k, err, fk, ferr)
		}
		k, err = ParseFrame(buf)
		checkParsed(t, "ParseFrame", buf, k, err)
	}
}

// TestParseAllocs: the parsers allocate nothing, on success and on error.
func TestParseAllocs(t *testing.T) {
	for _, c := range parseCases() {
		for _, v := range variants(c) {
			for _, n := range []int{len(v.pkt), v.need, v.need - 1} {
				if n < 0 {
					continue
				}
				p := v.pkt[:n]
				var sink FlowKey
				allocs := testing.AllocsPerRun(100, func() {
					k, _ := v.parse(p)
					sink = k
				})
				_ = sink
				if allocs != 0 {
					t.Errorf("%s %s[:%d]: %v allocations", c.name, v.name, n, allocs)
				}
			}
		}
	}
}

// benchCases are the cases the parse benchmarks run: common packets, and
// the long walks (a chain of extension headers, two tags).
var benchCases = map[string]bool{
	"ipv4/tcp": true, "ipv6/udp": true, "ipv4/icmp-echo-request": true, "ipv4/fragment-middle": true, "ipv6/chain-6": true,
	"eth/ipv4/tcp": true, "eth/ipv6/udp": true, "eth/802.1ad+802.1q/ipv6/udp": true, "eth/arp": true,
}

func BenchmarkParseFlowKey(b *testing.B) {
	for _, c := range parseCases() {
		if c.frame || !benchCases[c.name] {
			continue
		}
		b.Run(fmt.Sprintf("pkt=%s", strings.ReplaceAll(c.name, "/", "-")), func(b *testing.B) {
			b.ReportAllocs()
			var sink FlowKey
			for b.Loop() {
				sink, _ = ParseFlowKey(c.pkt)
			}
			_ = sink
		})
	}
}

func BenchmarkParseFrame(b *testing.B) {
	for _, c := range parseCases() {
		switch c.name {
		case "eth/ipv4/tcp", "eth/ipv6/udp", "eth/802.1ad+802.1q/ipv6/udp", "eth/arp":
		default:
			continue
		}
		b.Run(fmt.Sprintf("pkt=%s", strings.ReplaceAll(c.name, "/", "-")), func(b *testing.B) {
			b.ReportAllocs()
			var sink FlowKey
			for b.Loop() {
				sink, _ = ParseFrame(c.pkt)
			}
			_ = sink
		})
	}
}
