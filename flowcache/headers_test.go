package flowcache

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
)

// The header parsers' tests. The packets are built by hand with the
// helpers of parse_test.go, and each case states every field of the
// Headers it must give, so what is expected does not come from a decoder
// (pcap_test.go checks the same fields against gopacket on real traffic).
// Each IP packet case is also parsed framed, untagged, by
// ParseFrameHeaders, whose offsets are then 14 further on.

// tcpSeg is a TCP header with the given flags and optLen bytes of NOP
// options (a multiple of 4), its data offset saying so.
func tcpSeg(sport, dport uint16, flags TCPFlags, optLen int) []byte {
	h := portHeader(sport, dport, 20+optLen)
	binary.BigEndian.PutUint32(h[4:8], 0x01020304) // sequence number
	h[12] = byte((20+optLen)/4) << 4
	h[13] = byte(flags)
	binary.BigEndian.PutUint16(h[14:16], 65535) // window
	for i := 20; i < len(h); i++ {
		h[i] = 1 // NOP
	}
	return h
}

// withDataOffset sets the DCCP data offset (byte 4, in 4-byte words).
func withDataOffset(h []byte, words byte) []byte {
	h = append([]byte(nil), h...)
	h[4] = words
	return h
}

// setLen sets the IP length field of p: IPv4 total length or IPv6
// payload length.
func setLen(p []byte, n uint16) []byte {
	return patched(p, func(p []byte) {
		if p[0]>>4 == 4 {
			binary.BigEndian.PutUint16(p[2:4], n)
		} else {
			binary.BigEndian.PutUint16(p[4:6], n)
		}
	})
}

// framed is what ParseFrameHeaders gives for an IP packet whose Headers
// are h, in a frame with its IP header at l3: every offset moves by l3.
func framed(h Headers, l3 int) Headers {
	h.L3 += l3
	if h.L4 >= 0 {
		h.L4 += l3
	}
	h.Payload += l3
	return h
}

type headersCase struct {
	name  string
	frame bool // ParseFrameHeaders; else ParseHeaders, and ParseFrameHeaders on ethIP of it
	pkt   []byte
	want  Headers
}

func headersCases() []headersCase {
	esp := []byte{0, 0, 0x10, 0, 0, 0, 0, 1}
	nops8 := []byte{1, 1, 1, 1, 1, 1, 1, 0}
	big := make([]byte, 70_000)
	return []headersCase{
		// IPv4 TCP: the flags, the data offset, IPv4 options.
		{name: "ipv4/tcp/syn", pkt: ip4(ProtoTCP, tcpSeg(49152, 443, SYN, 0), appData),
			want: Headers{Key: key4(ProtoTCP, 49152, 443), L4: 20, Payload: 40, PayloadLen: 16, Version: 4, L4Whole: true, Flags: SYN}},
		{name: "ipv4/tcp/all-flags", pkt: ip4(ProtoTCP, tcpSeg(1, 2, 0xff, 0)),
			want: Headers{Key: key4(ProtoTCP, 1, 2), L4: 20, Payload: 40, Version: 4, L4Whole: true, Flags: FIN | SYN | RST | PSH | ACK | URG | ECE | CWR}},
		{name: "ipv4/tcp/ece-cwr", pkt: ip4(ProtoTCP, tcpSeg(1, 2, 0xc2, 0)),
			want: Headers{Key: key4(ProtoTCP, 1, 2), L4: 20, Payload: 40, Version: 4, L4Whole: true, Flags: SYN | ECE | CWR}},
		{name: "ipv4/tcp/no-flags", pkt: ip4(ProtoTCP, tcpSeg(1, 2, 0, 0)),
			want: Headers{Key: key4(ProtoTCP, 1, 2), L4: 20, Payload: 40, Version: 4, L4Whole: true}},
		{name: "ipv4/tcp/syn-ack-options-12", pkt: ip4(ProtoTCP, tcpSeg(443, 49152, SYN|ACK, 12), appData),
			want: Headers{Key: key4(ProtoTCP, 443, 49152), L4: 20, Payload: 52, PayloadLen: 16, Version: 4, L4Whole: true, Flags: SYN | ACK}},
		{name: "ipv4/tcp/fin-ack-no-payload", pkt: ip4(ProtoTCP, tcpSeg(80, 1024, FIN|ACK, 0)),
			want: Headers{Key: key4(ProtoTCP, 80, 1024), L4: 20, Payload: 40, Version: 4, L4Whole: true, Flags: FIN | ACK}},
		{name: "ipv4/options-8/tcp/psh-ack", pkt: ip4opts(ProtoTCP, nops8, tcpSeg(1, 2, PSH|ACK, 0), appData),
			want: Headers{Key: key4(ProtoTCP, 1, 2), L4: 28, Payload: 48, PayloadLen: 16, Version: 4, L4Whole: true, Flags: PSH | ACK}},
		{name: "ipv4/tcp/rst-urg", pkt: ip4(ProtoTCP, tcpSeg(1, 2, RST|URG, 0), appData),
			want: Headers{Key: key4(ProtoTCP, 1, 2), L4: 20, Payload: 40, PayloadLen: 16, Version: 4, L4Whole: true, Flags: RST | URG}},
		// A data offset under 5 or past the buffer: keyed, the header not whole.
		{name: "ipv4/tcp/data-offset-4", pkt: patched(ip4(ProtoTCP, tcpSeg(1, 2, SYN, 0), appData), func(p []byte) { p[32] = 4 << 4 }),
			want: Headers{Key: key4(ProtoTCP, 1, 2), L4: 20, Payload: 56, Version: 4}},
		{name: "ipv4/tcp/data-offset-15-past-buffer", pkt: patched(ip4(ProtoTCP, tcpSeg(1, 2, SYN, 0), appData), func(p []byte) { p[32] = 15 << 4 }),
			want: Headers{Key: key4(ProtoTCP, 1, 2), L4: 20, Payload: 56, Version: 4}},

		// IPv4, the other transports with ports.
		{name: "ipv4/udp", pkt: ip4(ProtoUDP, udpHdr(5353, 53), appData),
			want: Headers{Key: key4(ProtoUDP, 5353, 53), L4: 20, Payload: 28, PayloadLen: 16, Version: 4, L4Whole: true}},
		{name: "ipv4/udp/empty", pkt: ip4(ProtoUDP, udpHdr(5353, 53)),
			want: Headers{Key: key4(ProtoUDP, 5353, 53), L4: 20, Payload: 28, Version: 4, L4Whole: true}},
		{name: "ipv4/udplite", pkt: ip4(protoUDPLite, udpLiteHdr(1000, 2000), appData),
			want: Headers{Key: key4(protoUDPLite, 1000, 2000), L4: 20, Payload: 28, PayloadLen: 16, Version: 4, L4Whole: true}},
		{name: "ipv4/sctp", pkt: ip4(ProtoSCTP, sctpHdr(2905, 2905), appData),
			want: Headers{Key: key4(ProtoSCTP, 2905, 2905), L4: 20, Payload: 32, PayloadLen: 16, Version: 4, L4Whole: true}},
		{name: "ipv4/dccp", pkt: ip4(ProtoDCCP, withDataOffset(dccpHdr(5004, 5005), 4), appData),
			want: Headers{Key: key4(ProtoDCCP, 5004, 5005), L4: 20, Payload: 36, PayloadLen: 16, Version: 4, L4Whole: true}},
		{name: "ipv4/dccp/data-offset-2", pkt: ip4(ProtoDCCP, withDataOffset(dccpHdr(5004, 5005), 2), appData),
			want: Headers{Key: key4(ProtoDCCP, 5004, 5005), L4: 20, Payload: 52, Version: 4}},

		// ICMP: type and code from an 8-byte header, echo or not.
		{name: "ipv4/icmp-echo-request", pkt: ip4(ProtoICMP, icmpHdr(8, 0, 0x1234, 1), appData),
			want: Headers{Key: key4(ProtoICMP, 0x1234, 0x1234), L4: 20, Payload: 28, PayloadLen: 16, Version: 4, L4Whole: true, ICMPType: 8}},
		{name: "ipv4/icmp-echo-reply", pkt: ip4(ProtoICMP, icmpHdr(0, 0, 0xbeef, 7)),
			want: Headers{Key: key4(ProtoICMP, 0xbeef, 0xbeef), L4: 20, Payload: 28, Version: 4, L4Whole: true}},
		{name: "ipv4/icmp-dest-unreachable", pkt: ip4(ProtoICMP, icmpHdr(3, 3, 0, 0), ip4(ProtoUDP, udpHdr(1, 2))),
			want: Headers{Key: key4(ProtoICMP, 0, 0), L4: 20, Payload: 28, PayloadLen: 28, Version: 4, L4Whole: true, ICMPType: 3, ICMPCode: 3}},
		{name: "ipv4/icmp-time-exceeded-1", pkt: ip4(ProtoICMP, icmpHdr(11, 1, 0, 0)),
			want: Headers{Key: key4(ProtoICMP, 0, 0), L4: 20, Payload: 28, Version: 4, L4Whole: true, ICMPType: 11, ICMPCode: 1}},
		{name: "ipv4/icmpv6-type-128", pkt: ip4(ProtoICMPv6, icmpHdr(128, 0, 0x1234, 1)),
			want: Headers{Key: key4(ProtoICMPv6, 0x1234, 0x1234), L4: 20, Payload: 28, Version: 4, L4Whole: true, ICMPType: 128}},

		// Protocols whose header is not read: the payload is the IP payload.
		{name: "ipv4/gre", pkt: ip4(protoGRE, []byte{0, 0, 0x08, 0x00}, ip4(ProtoTCP, tcpSeg(1, 2, SYN, 0))),
			want: Headers{Key: key4(protoGRE, 0, 0), L4: 20, Payload: 20, PayloadLen: 44, Version: 4, L4Whole: true}},
		{name: "ipv4/esp", pkt: ip4(protoESP, esp, appData),
			want: Headers{Key: key4(protoESP, 0, 0), L4: 20, Payload: 20, PayloadLen: 24, Version: 4, L4Whole: true}},
		{name: "ipv4/ah-not-skipped", pkt: ip4(protoAH, ahHdr(ProtoTCP, 4), tcpSeg(1, 2, SYN, 0)),
			want: Headers{Key: key4(protoAH, 0, 0), L4: 20, Payload: 20, PayloadLen: 44, Version: 4, L4Whole: true}},
		{name: "ipv4/proto-255-empty", pkt: ip4(255),
			want: Headers{Key: key4(255, 0, 0), L4: 20, Payload: 20, Version: 4, L4Whole: true}},

		// IPv4 fragments.
		{name: "ipv4/fragment-first/udp", pkt: frag4(ip4(ProtoUDP, udpHdr(4500, 4500), appData), true, 0),
			want: Headers{Key: key4(ProtoUDP, 4500, 4500), L4: 20, Payload: 28, PayloadLen: 16, Version: 4, L4Whole: true, Fragment: true}},
		{name: "ipv4/fragment-first/tcp-16", pkt: frag4(ip4(ProtoTCP, tcpSeg(1, 2, SYN, 0)[:16]), true, 0),
			want: Headers{Key: key4(ProtoTCP, 1, 2), L4: 20, Payload: 36, Version: 4, Fragment: true}},
		{name: "ipv4/fragment-middle/udp", pkt: frag4(ip4(ProtoUDP, appData), true, 185),
			want: Headers{Key: key4(ProtoUDP, 0, 0), L4: -1, Payload: 20, PayloadLen: 16, Version: 4, Fragment: true, NonFirstFragment: true}},
		{name: "ipv4/fragment-last/tcp", pkt: frag4(ip4(ProtoTCP, appData), false, 370),
			want: Headers{Key: key4(ProtoTCP, 0, 0), L4: -1, Payload: 20, PayloadLen: 16, Version: 4, Fragment: true, NonFirstFragment: true}},
		{name: "ipv4/fragment-last/options", pkt: frag4(ip4opts(ProtoICMP, nops8, appData), false, 8),
			want: Headers{Key: key4(ProtoICMP, 0, 0), L4: -1, Payload: 28, PayloadLen: 16, Version: 4, Fragment: true, NonFirstFragment: true}},
		{name: "ipv4/dont-fragment/tcp", pkt: patched(ip4(ProtoTCP, tcpSeg(1, 2, ACK, 0)), func(p []byte) { p[6] = 0x40 }),
			want: Headers{Key: key4(ProtoTCP, 1, 2), L4: 20, Payload: 40, Version: 4, L4Whole: true, Flags: ACK}},

		// IPv4 length fields.
		{name: "ipv4/total-length-0/tso", pkt: setLen(ip4(ProtoTCP, tcpSeg(1, 2, ACK, 0), appData), 0),
			want: Headers{Key: key4(ProtoTCP, 1, 2), L4: 20, Payload: 40, PayloadLen: 16, Version: 4, L4Whole: true, Flags: ACK}},
		{name: "ipv4/total-length-0/tso-70000", pkt: setLen(ip4(ProtoTCP, tcpSeg(1, 2, ACK, 0), big), 0),
			want: Headers{Key: key4(ProtoTCP, 1, 2), L4: 20, Payload: 40, PayloadLen: 70_000, Version: 4, L4Whole: true, Flags: ACK}},
		{name: "ipv4/total-length-1500/cut", pkt: setLen(ip4(ProtoUDP, udpHdr(1, 2), appData), 1500),
			want: Headers{Key: key4(ProtoUDP, 1, 2), L4: 20, Payload: 28, PayloadLen: 16, Version: 4, L4Whole: true}},
		{name: "ipv4/total-length-30/under-headers", pkt: setLen(ip4(ProtoTCP, tcpSeg(1, 2, SYN, 0), appData), 30),
			want: Headers{Key: key4(ProtoTCP, 1, 2), L4: 20, Payload: 40, Version: 4, L4Whole: true, Flags: SYN}},
		{name: "ipv4/total-length-10", pkt: setLen(ip4(ProtoUDP, udpHdr(1, 2), appData), 10),
			want: Headers{Key: key4(ProtoUDP, 1, 2), L4: 20, Payload: 28, Version: 4, L4Whole: true}},
		{name: "ipv4/trailer-12", pkt: concat(ip4(ProtoUDP, udpHdr(1, 2), appData), make([]byte, 12)),
			want: Headers{Key: key4(ProtoUDP, 1, 2), L4: 20, Payload: 28, PayloadLen: 16, Version: 4, L4Whole: true}},

		// IPv6.
		{name: "ipv6/tcp/syn", pkt: ip6(ProtoTCP, tcpSeg(49152, 443, SYN, 0), appData),
			want: Headers{Key: key6(ProtoTCP, 49152, 443), L4: 40, Payload: 60, PayloadLen: 16, Version: 6, L4Whole: true, Flags: SYN}},
		{name: "ipv6/tcp/syn-ack-options-20", pkt: ip6(ProtoTCP, tcpSeg(443, 49152, SYN|ACK, 20)),
			want: Headers{Key: key6(ProtoTCP, 443, 49152), L4: 40, Payload: 80, Version: 6, L4Whole: true, Flags: SYN | ACK}},
		{name: "ipv6/udp", pkt: ip6(ProtoUDP, udpHdr(546, 547), appData),
			want: Headers{Key: key6(ProtoUDP, 546, 547), L4: 40, Payload: 48, PayloadLen: 16, Version: 6, L4Whole: true}},
		{name: "ipv6/sctp", pkt: ip6(ProtoSCTP, sctpHdr(36412, 36412), appData),
			want: Headers{Key: key6(ProtoSCTP, 36412, 36412), L4: 40, Payload: 52, PayloadLen: 16, Version: 6, L4Whole: true}},
		{name: "ipv6/icmpv6-echo-request", pkt: ip6(ProtoICMPv6, icmpHdr(128, 0, 0x4242, 1), appData),
			want: Headers{Key: key6(ProtoICMPv6, 0x4242, 0x4242), L4: 40, Payload: 48, PayloadLen: 16, Version: 6, L4Whole: true, ICMPType: 128}},
		{name: "ipv6/icmpv6-echo-reply", pkt: ip6(ProtoICMPv6, icmpHdr(129, 0, 0x4242, 1)),
			want: Headers{Key: key6(ProtoICMPv6, 0x4242, 0x4242), L4: 40, Payload: 48, Version: 6, L4Whole: true, ICMPType: 129}},
		{name: "ipv6/icmpv6-neighbor-solicitation", pkt: ip6(ProtoICMPv6, icmpHdr(135, 0, 0, 0), srcV6.AsSlice()),
			want: Headers{Key: key6(ProtoICMPv6, 0, 0), L4: 40, Payload: 48, PayloadLen: 16, Version: 6, L4Whole: true, ICMPType: 135}},
		{name: "ipv6/icmpv6-unreachable-4", pkt: ip6(ProtoICMPv6, icmpHdr(1, 4, 0, 0), ip6(ProtoUDP, udpHdr(1, 2))),
			want: Headers{Key: key6(ProtoICMPv6, 0, 0), L4: 40, Payload: 48, PayloadLen: 48, Version: 6, L4Whole: true, ICMPType: 1, ICMPCode: 4}},
		{name: "ipv6/icmp-type-8", pkt: ip6(ProtoICMP, icmpHdr(8, 0, 0x1234, 1)),
			want: Headers{Key: key6(ProtoICMP, 0x1234, 0x1234), L4: 40, Payload: 48, Version: 6, L4Whole: true, ICMPType: 8}},

		// IPv6 extension headers: L4 after them.
		{name: "ipv6/hop-by-hop/routing-16/tcp", pkt: ip6(protoHopOpts, extHdr(protoRouting, 0), extHdr(ProtoTCP, 1), tcpSeg(1, 2, ACK, 0), appData),
			want: Headers{Key: key6(ProtoTCP, 1, 2), L4: 64, Payload: 84, PayloadLen: 16, Version: 6, L4Whole: true, Flags: ACK}},
		{name: "ipv6/ah-24/udp", pkt: ip6(protoAH, ahHdr(ProtoUDP, 4), udpHdr(500, 500), appData),
			want: Headers{Key: key6(ProtoUDP, 500, 500), L4: 64, Payload: 72, PayloadLen: 16, Version: 6, L4Whole: true}},
		{name: "ipv6/destination-2048/icmpv6-echo", pkt: ip6(protoDstOpts, extHdr(ProtoICMPv6, 255), icmpHdr(128, 0, 7, 1)),
			want: Headers{Key: key6(ProtoICMPv6, 7, 7), L4: 40 + 2048, Payload: 40 + 2048 + 8, Version: 6, L4Whole: true, ICMPType: 128}},
		{name: "ipv6/esp", pkt: ip6(protoESP, esp, appData),
			want: Headers{Key: key6(protoESP, 0, 0), L4: 40, Payload: 40, PayloadLen: 24, Version: 6, L4Whole: true}},
		{name: "ipv6/hop-by-hop/no-next-header", pkt: ip6(protoHopOpts, extHdr(protoNoNext, 0), appData),
			want: Headers{Key: key6(protoNoNext, 0, 0), L4: 48, Payload: 48, PayloadLen: 16, Version: 6, L4Whole: true}},

		// IPv6 fragments.
		{name: "ipv6/fragment-first/tcp", pkt: ip6(protoIPv6Frag, frag6Hdr(ProtoTCP, 0, true), tcpSeg(1, 2, SYN, 0), appData),
			want: Headers{Key: key6(ProtoTCP, 1, 2), L4: 48, Payload: 68, PayloadLen: 16, Version: 6, L4Whole: true, Flags: SYN, Fragment: true}},
		{name: "ipv6/fragment-first/routing/udp", pkt: ip6(protoIPv6Frag, frag6Hdr(protoRouting, 0, true), extHdr(ProtoUDP, 0), udpHdr(5, 6)),
			want: Headers{Key: key6(ProtoUDP, 5, 6), L4: 56, Payload: 64, Version: 6, L4Whole: true, Fragment: true}},
		{name: "ipv6/fragment-atomic/udp", pkt: ip6(protoIPv6Frag, frag6Hdr(ProtoUDP, 0, false), udpHdr(3, 4), appData),
			want: Headers{Key: key6(ProtoUDP, 3, 4), L4: 48, Payload: 56, PayloadLen: 16, Version: 6, L4Whole: true}},
		{name: "ipv6/fragment-middle/udp", pkt: ip6(protoIPv6Frag, frag6Hdr(ProtoUDP, 100, true), appData),
			want: Headers{Key: key6(ProtoUDP, 0, 0), L4: -1, Payload: 48, PayloadLen: 16, Version: 6, Fragment: true, NonFirstFragment: true}},
		{name: "ipv6/fragment-last/icmpv6", pkt: ip6(protoIPv6Frag, frag6Hdr(ProtoICMPv6, 8191, false), appData),
			want: Headers{Key: key6(ProtoICMPv6, 0, 0), L4: -1, Payload: 48, PayloadLen: 16, Version: 6, Fragment: true, NonFirstFragment: true}},
		{name: "ipv6/hop-by-hop/fragment-last/udp", pkt: ip6(protoHopOpts, extHdr(protoIPv6Frag, 0), frag6Hdr(ProtoUDP, 3, false), appData),
			want: Headers{Key: key6(ProtoUDP, 0, 0), L4: -1, Payload: 56, PayloadLen: 16, Version: 6, Fragment: true, NonFirstFragment: true}},

		// IPv6 length fields.
		{name: "ipv6/payload-length-0/tso", pkt: setLen(ip6(ProtoTCP, tcpSeg(1, 2, ACK, 0), appData), 0),
			want: Headers{Key: key6(ProtoTCP, 1, 2), L4: 40, Payload: 60, PayloadLen: 16, Version: 6, L4Whole: true, Flags: ACK}},
		{name: "ipv6/payload-length-1000/cut", pkt: setLen(ip6(ProtoUDP, udpHdr(1, 2), appData), 1000),
			want: Headers{Key: key6(ProtoUDP, 1, 2), L4: 40, Payload: 48, PayloadLen: 16, Version: 6, L4Whole: true}},
		{name: "ipv6/payload-length-4/hop-by-hop/tcp", pkt: setLen(ip6(protoHopOpts, extHdr(ProtoTCP, 0), tcpSeg(1, 2, SYN, 0)), 4),
			want: Headers{Key: key6(ProtoTCP, 1, 2), L4: 48, Payload: 68, Version: 6, L4Whole: true, Flags: SYN}},
		{name: "ipv6/trailer-7", pkt: concat(ip6(ProtoUDP, udpHdr(1, 2), appData), make([]byte, 7)),
			want: Headers{Key: key6(ProtoUDP, 1, 2), L4: 40, Payload: 48, PayloadLen: 16, Version: 6, L4Whole: true}},

		// Frames: L3 after the tags; Ethernet padding is not payload.
		{name: "eth/ipv4/tcp/syn", frame: true, pkt: ethFrame(etherTypeIPv4, nil, ip4(ProtoTCP, tcpSeg(1234, 80, SYN, 0), appData)),
			want: Headers{Key: key4(ProtoTCP, 1234, 80), L3: 14, L4: 34, Payload: 54, PayloadLen: 16, Version: 4, L4Whole: true, Flags: SYN}},
		{name: "eth/ipv4/tcp-ack/padded-to-60", frame: true, pkt: concat(ethFrame(etherTypeIPv4, nil, ip4(ProtoTCP, tcpSeg(1234, 80, ACK, 0))), make([]byte, 6)),
			want: Headers{Key: key4(ProtoTCP, 1234, 80), L3: 14, L4: 34, Payload: 54, Version: 4, L4Whole: true, Flags: ACK}},
		{name: "eth/802.1q/ipv4/udp", frame: true, pkt: ethFrame(etherTypeIPv4, []uint16{0x8100}, ip4(ProtoUDP, udpHdr(1, 2), appData)),
			want: Headers{Key: key4(ProtoUDP, 1, 2), L3: 18, L4: 38, Payload: 46, PayloadLen: 16, Version: 4, L4Whole: true}},
		{name: "eth/802.1ad+802.1q/ipv6/tcp/rst", frame: true, pkt: ethFrame(etherTypeIPv6, []uint16{0x88a8, 0x8100}, ip6(ProtoTCP, tcpSeg(1, 2, RST, 0))),
			want: Headers{Key: key6(ProtoTCP, 1, 2), L3: 22, L4: 62, Payload: 82, Version: 6, L4Whole: true, Flags: RST}},
		{name: "eth/9100+802.1q/ipv4/icmp-echo", frame: true, pkt: ethFrame(etherTypeIPv4, []uint16{0x9100, 0x8100}, ip4(ProtoICMP, icmpHdr(8, 0, 77, 1), appData)),
			want: Headers{Key: key4(ProtoICMP, 77, 77), L3: 22, L4: 42, Payload: 50, PayloadLen: 16, Version: 4, L4Whole: true, ICMPType: 8}},
		{name: "eth/802.1q/ipv6/fragment-middle", frame: true, pkt: ethFrame(etherTypeIPv6, []uint16{0x8100}, ip6(protoIPv6Frag, frag6Hdr(ProtoTCP, 100, true), appData)),
			want: Headers{Key: key6(ProtoTCP, 0, 0), L3: 18, L4: -1, Payload: 66, PayloadLen: 16, Version: 6, Fragment: true, NonFirstFragment: true}},
		{name: "eth/8-tags/ipv4/udp", frame: true, pkt: ethFrame(etherTypeIPv4, []uint16{0x8100, 0x88a8, 0x9100, 0x8100, 0x88a8, 0x9100, 0x8100, 0x8100}, ip4(ProtoUDP, udpHdr(5, 6), appData)),
			want: Headers{Key: key4(ProtoUDP, 5, 6), L3: 46, L4: 66, Payload: 74, PayloadLen: 16, Version: 4, L4Whole: true}},
	}
}

// headersVariant is one parser applied to one case's bytes.
type headersVariant struct {
	name  string
	parse func([]byte, *Headers) error
	key   func([]byte) (FlowKey, error) // the key parser it must agree with
	pkt   []byte
	want  Headers
}

func (c headersCase) variants() []headersVariant {
	if c.frame {
		return []headersVariant{{"ParseFrameHeaders", ParseFrameHeaders, ParseFrame, c.pkt, c.want}}
	}
	return []headersVariant{
		{"ParseHeaders", ParseHeaders, ParseFlowKey, c.pkt, c.want},
		{"ParseFrameHeaders(ethIP)", ParseFrameHeaders, ParseFrame, ethIP(c.pkt), framed(c.want, ethHeaderLen)},
	}
}

// dirty is a Headers full of values no parse gives, to show that a parse
// overwrites every field of a Headers reused from an earlier packet.
var dirty = Headers{Key: key6(99, 9, 9), L3: 999, L4: 999, Payload: 999, PayloadLen: 999, Version: 9,
	L4Whole: true, Flags: 0xff, ICMPType: 0xff, ICMPCode: 0xff, Fragment: true, NonFirstFragment: true}

func TestParseHeaders(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range headersCases() {
		if seen[c.name] {
			t.Fatalf("duplicate case %s", c.name)
		}
		seen[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			for _, v := range c.variants() {
				h := dirty
				if err := v.parse(v.pkt, &h); err != nil || h != v.want {
					t.Errorf("%s:\n got %+v, %v\nwant %+v", v.name, h, err, v.want)
				}
				checkHeaders(t, v.name, v.pkt, h, nil)
			}
		})
	}
}

// cutHeaders is what a parse of want's packet cut to its first n bytes
// gives, when the key parser still keys it: the walk's fields stay; the
// transport header is whole from want.Payload on (never, if it is not
// whole in the whole packet), and before that the fields past the key are
// not reported; the payload is what is left of it.
func cutHeaders(want Headers, n int) Headers {
	h := want
	switch {
	case want.L4 < 0:
		h.PayloadLen = min(want.PayloadLen, max(0, n-want.Payload))
	case !want.L4Whole || n < want.Payload:
		h.L4Whole, h.Flags, h.ICMPType, h.ICMPCode = false, 0, 0, 0
		h.Payload, h.PayloadLen = n, 0
	default:
		h.PayloadLen = min(want.PayloadLen, n-want.Payload)
	}
	return h
}

// TestParseHeadersTruncations cuts every case at every length: the parse
// fails exactly where the key parser fails, with the same error; where the
// key parser keys the prefix, the fields are the whole packet's as
// cutHeaders says: in particular a TCP header cut between the 4 bytes of
// its ports and its whole length keys, with L4Whole false and no flags.
func TestParseHeadersTruncations(t *testing.T) {
	for _, c := range headersCases() {
		t.Run(c.name, func(t *testing.T) {
			for _, v := range c.variants() {
				for n := 0; n <= len(v.pkt); n++ {
					p := v.pkt[:n:n]
					k, kerr := v.key(p)
					h := dirty
					err := v.parse(p, &h)
					if err != kerr {
						t.Fatalf("%s(packet[:%d]) = %v; key parser %v", v.name, n, err, kerr)
					}
					checkHeaders(t, v.name, p, h, err)
					if err != nil {
						continue
					}
					if want := cutHeaders(v.want, n); h != want || h.Key != k {
						t.Fatalf("%s(packet[:%d]):\n got %+v\nwant %+v", v.name, n, h, want)
					}
				}
			}
		})
	}
}

// TestParseHeadersAgreesWithKeyParsers runs the header parsers over every
// case of the key parsers' table (parse_test.go), cut at every length: the
// same error value, or the same key, as ParseFlowKey and ParseFrame, and
// Headers that hold what every parse promises.
func TestParseHeadersAgreesWithKeyParsers(t *testing.T) {
	for _, c := range parseCases() {
		for _, v := range variants(c) {
			parse := ParseHeaders
			if v.name != "ParseFlowKey" {
				parse = ParseFrameHeaders
			}
			for n := 0; n <= len(v.pkt); n++ {
				p := v.pkt[:n:n]
				k, kerr := v.parse(p)
				h := dirty
				err := parse(p, &h)
				if err != kerr || h.Key != k {
					t.Fatalf("%s: %s(packet[:%d]) = %v, %v; key parser %v, %v", c.name, v.name, n, h.Key, err, k, kerr)
				}
				checkHeaders(t, c.name+" "+v.name, p, h, err)
			}
		}
	}
}

// checkHeaders checks what every parse promises of any input, from the
// bytes themselves: an error leaves the zero Headers; otherwise the
// offsets lie in the buffer in order, the fields past the key are there
// only when the transport header is whole and agree with its bytes, and
// the payload ends where the IP length field (or the buffer) says.
func checkHeaders(tb testing.TB, what string, b []byte, h Headers, err error) {
	tb.Helper()
	fail := func(format string, args ...any) {
		tb.Helper()
		tb.Fatalf("%s(% x) = %+v: %s", what, b[:min(len(b), 96)], h, fmt.Sprintf(format, args...))
	}
	if err != nil {
		if h != (Headers{}) {
			fail("error %v with non-zero Headers", err)
		}
		return
	}
	if h.L3 < 0 || h.L3 >= len(b) || b[h.L3]>>4 != h.Version || (h.Version == 4) != h.Key.Is4() || h.Version != 4 && h.Version != 6 {
		fail("L3 or Version wrong")
	}
	ipHdr := ipv4HeaderLen
	if h.Version == 6 {
		ipHdr = ipv6HeaderLen
	}
	if h.NonFirstFragment != (h.L4 == -1) || h.NonFirstFragment && !h.Fragment {
		fail("fragment fields disagree")
	}
	if h.L4 != -1 && (h.L4 < h.L3+ipHdr || h.L4 > h.Payload) {
		fail("L4 out of order")
	}
	if h.Payload < h.L3+ipHdr || h.Payload > len(b) || h.PayloadLen < 0 || h.Payload+h.PayloadLen > len(b) {
		fail("payload outside the buffer")
	}
	if h.Version == 4 {
		frag := binary.BigEndian.Uint16(b[h.L3+6:])
		if h.Fragment != (frag&0x3fff != 0) || h.NonFirstFragment != (frag&0x1fff != 0) {
			fail("IPv4 fragment fields disagree with the header")
		}
	}
	proto := h.Key.Proto()
	if h.Flags != 0 && (proto != ProtoTCP || !h.L4Whole) || (h.ICMPType != 0 || h.ICMPCode != 0) && (proto != ProtoICMP && proto != ProtoICMPv6 || !h.L4Whole) {
		fail("flags or ICMP fields without a whole TCP or ICMP header")
	}
	if !h.L4Whole {
		if h.L4 >= 0 && (h.Payload != len(b) || h.PayloadLen != 0) {
			fail("a transport header cut short with a payload")
		}
		return
	}
	l := b[h.L4:]
	switch proto {
	case ProtoTCP:
		if hl := int(l[12]>>4) * 4; hl < 20 || h.Payload != h.L4+hl || h.Flags != TCPFlags(l[13]) {
			fail("TCP header length or flags disagree with its bytes")
		}
	case ProtoICMP, ProtoICMPv6:
		if h.Payload != h.L4+8 || h.ICMPType != l[0] || h.ICMPCode != l[1] {
			fail("ICMP header disagrees with its bytes")
		}
	case ProtoUDP, protoUDPLite:
		if h.Payload != h.L4+8 {
			fail("UDP header is not 8 bytes")
		}
	}
	end := len(b)
	if h.Version == 4 {
		if n := int(binary.BigEndian.Uint16(b[h.L3+2:])); n != 0 {
			end = min(end, h.L3+n)
		}
	} else if n := int(binary.BigEndian.Uint16(b[h.L3+4:])); n != 0 {
		end = min(end, h.L3+ipv6HeaderLen+n)
	}
	if h.PayloadLen != max(0, end-h.Payload) {
		fail("PayloadLen %d, but the datagram ends at %d", h.PayloadLen, end)
	}
}

// TestParseHeadersAllocs: no allocation on any path, errors included.
func TestParseHeadersAllocs(t *testing.T) {
	check := func(name string, parse func([]byte, *Headers) error, p []byte) {
		var h Headers
		if allocs := testing.AllocsPerRun(100, func() { _ = parse(p, &h) }); allocs != 0 {
			t.Errorf("%s[:%d]: %v allocations", name, len(p), allocs)
		}
	}
	for _, c := range headersCases() {
		for _, v := range c.variants() {
			for _, n := range []int{len(v.pkt), v.want.Payload, v.want.Payload - 1, v.want.L3 + 1, 0} {
				check(c.name+" "+v.name, v.parse, v.pkt[:max(0, n)])
			}
		}
	}
	for _, c := range parseCases() {
		for _, v := range variants(c) {
			parse := ParseHeaders
			if v.name != "ParseFlowKey" {
				parse = ParseFrameHeaders
			}
			for _, n := range []int{len(v.pkt), v.need, v.need - 1} {
				if n >= 0 {
					check(c.name+" "+v.name, parse, v.pkt[:n])
				}
			}
		}
	}
}

func TestTCPFlagsString(t *testing.T) {
	for _, tc := range []struct {
		f    TCPFlags
		want string
	}{
		{0, "0"},
		{SYN, "SYN"},
		{SYN | ACK, "SYN|ACK"},
		{0x11, "FIN|ACK"},
		{0xff, "FIN|SYN|RST|PSH|ACK|URG|ECE|CWR"},
		{CWR | ECE | URG | PSH | RST, "RST|PSH|URG|ECE|CWR"},
	} {
		if got := tc.f.String(); got != tc.want {
			t.Errorf("TCPFlags(%#02x).String() = %q, want %q", uint8(tc.f), got, tc.want)
		}
	}
}

func BenchmarkParseHeaders(b *testing.B) {
	for _, c := range parseCases() {
		if !benchCases[c.name] {
			continue
		}
		parse := ParseHeaders
		if c.frame {
			parse = ParseFrameHeaders
		}
		b.Run(fmt.Sprintf("pkt=%s", strings.ReplaceAll(c.name, "/", "-")), func(b *testing.B) {
			b.ReportAllocs()
			var h Headers
			for b.Loop() {
				_ = parse(c.pkt, &h)
			}
		})
	}
}
