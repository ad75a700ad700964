package flowcache

import (
	"encoding/binary"
	"strings"
)

// Headers is what a per-packet state machine reads from a packet's
// headers, besides its key: where the IP and transport headers and the
// payload are, how long the payload is, TCP's flags, ICMP's type and
// code, and whether the packet is a fragment. ParseHeaders and
// ParseFrameHeaders fill it in the same walk that keys the packet, so a
// conntrack-style forwarder parses each packet once: the Ethernet header,
// the tags, IHL and the extension headers are not walked a second time
// to reach the flags.
//
// Offsets are from the start of the buffer that was parsed, so
// buf[h.L4:] is the transport header and
// buf[h.Payload:h.Payload+h.PayloadLen] the payload; after a successful
// parse the payload's slice expression cannot panic, nor the transport
// header's unless L4 is -1, which only a non-first fragment has:
//
//	0 ≤ L3,  L3+20 ≤ L4 ≤ Payload ≤ len(buf),  Payload+PayloadLen ≤ len(buf)
//
// (IPv6 has L3+40 ≤ L4; a non-first fragment has L4 = -1 and its data at
// Payload ≥ L3+20.)
//
// What is read, from where:
//
//   - Headers are read from the buffer, as the key parsers read them: the
//     IP length fields are not trusted to say where a header is.
//   - The IP length field (IPv4 total length, IPv6 payload length) is
//     read only to find where the datagram ends, and so PayloadLen, which
//     excludes Ethernet padding after it. When it is 0 — segmentation
//     offload (TSO/GSO) leaves 0 in frames the kernel has not split yet,
//     and an IPv6 jumbogram has 0 — the datagram ends with the buffer.
//     When it says more than the buffer holds (a capture cut at its snap
//     length, a lying header), the datagram is taken to end with the
//     buffer: PayloadLen counts bytes that are there to read, never bytes
//     that are not. When it ends the datagram before the payload starts
//     (a length under the headers' own), PayloadLen is 0.
//   - The transport header is whole (L4Whole) when its fixed part and,
//     for TCP and DCCP, the options its data offset announces are in the
//     buffer: TCP data offset×4, at least 20 bytes; UDP and UDP-Lite 8;
//     SCTP 12 (the common header; the chunks are the payload); DCCP data
//     offset×4, at least 12; ICMP and ICMPv6 8 (type, code, checksum and
//     the 4 bytes every message has before its body). Flags, ICMPType and
//     ICMPCode are set only when it is whole.
//
// A transport header cut short keys all the same — the key needs 4 bytes
// of it for ports, 1 for an ICMP type, 6 for an echo — so a parse never
// fails where ParseFlowKey or ParseFrame succeeds: it reports L4Whole
// false instead, with Flags, ICMPType and ICMPCode 0, Payload at the end
// of the buffer and PayloadLen 0. That is the choice for a TCP header cut
// between 4 and 14 bytes (the flags are its 14th byte) and for one cut
// between 14 and 20: the flags are not reported from a header whose other
// fixed fields (window, and the options the data offset counts) are
// missing, so that a state machine that checks L4Whole can read any of
// them without a bounds check failing; Linux's conntrack also finds such
// a segment invalid ("truncated packet"). So a
// packet's key and error never depend on which parser read it, and a
// forwarder can switch from ParseFrame to ParseFrameHeaders without
// forwarding different packets.
type Headers struct {
	// Key is the packet's flow key, exactly as ParseFlowKey (for
	// ParseHeaders) or ParseFrame (for ParseFrameHeaders) gives it.
	Key FlowKey

	// L3 is the offset of the IP header: 0 for ParseHeaders, 14 plus 4
	// per VLAN tag for ParseFrameHeaders.
	L3 int
	// L4 is the offset of the transport header: after IPv4's IHL×4
	// bytes, or after IPv6's 40 bytes and its extension headers (of the
	// Fragment header, too, in a first fragment). It is -1 for a
	// non-first fragment, which carries no transport header. For a
	// protocol the key gives no ports (GRE, ESP, IPIP, OSPF, …) it is
	// where that protocol's header starts.
	L4 int
	// Payload is the offset of what follows the transport header when
	// L4Whole; L4 itself for a protocol whose header this parse does not
	// read (GRE, ESP, …: their payload is the whole IP payload); the
	// fragment's data, right after the IP headers, for a non-first
	// fragment; and len(buf) when the transport header is cut short.
	Payload int
	// PayloadLen is the length of the payload at Payload, up to where the
	// IP length field ends the datagram, within the buffer; see Headers
	// for a length field of 0 or one that disagrees with the buffer. The
	// UDP length field is not read.
	PayloadLen int

	// Version is the IP version, 4 or 6.
	Version uint8
	// L4Whole reports that the transport header is whole in the buffer
	// (see Headers for the length of each), or that the protocol has no
	// header this parse reads. It is false for a non-first fragment and
	// for a transport header cut short.
	L4Whole bool
	// Flags are a TCP segment's eight flag bits (byte 13 of its header),
	// when the key's protocol is TCP and L4Whole; otherwise 0.
	Flags TCPFlags
	// ICMPType and ICMPCode are the first two bytes of an ICMP message
	// (protocol 1) or an ICMPv6 message (protocol 58, under either IP
	// version, as the key decides echo), when L4Whole; otherwise 0.
	ICMPType, ICMPCode uint8
	// Fragment reports that the packet is one fragment of a larger
	// datagram: IPv4 with More Fragments set or a fragment offset ≠ 0, or
	// IPv6 with a Fragment header whose M flag is set or whose offset ≠
	// 0. An IPv6 atomic fragment (offset 0, M clear; RFC 6946) and an
	// IPv4 packet with only Don't Fragment are not fragments.
	Fragment bool
	// NonFirstFragment reports a fragment with offset ≠ 0: it carries no
	// transport header, so its key has ports 0/0 and L4 is -1. The first
	// fragment has Fragment true, NonFirstFragment false and its
	// transport header at L4.
	NonFirstFragment bool
}

// TCPFlags are the eight flag bits of a TCP header, byte 13, in their
// wire order (RFC 9293, and RFC 3168 for ECE and CWR). The ninth, NS
// (RFC 3540, historic since RFC 8311), is not among them.
type TCPFlags uint8

// The TCP flags, for testing Headers.Flags: h.Flags&SYN != 0.
const (
	FIN TCPFlags = 1 << iota // no more data from the sender
	SYN                      // synchronize sequence numbers: a connection opens
	RST                      // reset the connection
	PSH                      // push the data to the application
	ACK                      // the acknowledgment number is significant
	URG                      // the urgent pointer is significant
	ECE                      // ECN echo
	CWR                      // congestion window reduced
)

var tcpFlagNames = [8]string{"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"}

// String names the flags that are set, in wire order, joined by "|":
// "SYN|ACK". No flag set is "0".
func (f TCPFlags) String() string {
	if f == 0 {
		return "0"
	}
	var b strings.Builder
	for i, name := range tcpFlagNames {
		if f&(1<<i) == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('|')
		}
		b.WriteString(name)
	}
	return b.String()
}

// ParseHeaders fills h from an IP packet that starts at its IPv4 or IPv6
// header, as ParseFlowKey reads one (AF_PACKET SOCK_DGRAM, TUN): h.Key is
// ParseFlowKey's key and the other fields say where the headers are and
// what the transport header holds (see Headers). It returns the error
// ParseFlowKey returns for the same bytes — ErrTruncated, ErrNotIP or
// ErrMalformed, the very same error value — and then leaves h zero; it
// fails on no packet that ParseFlowKey keys.
//
// h is filled in place rather than returned, so that a forwarder can
// parse a batch into a slice it reuses, and the 80 bytes are not copied
// out. ParseHeaders does not allocate.
func ParseHeaders(packet []byte, h *Headers) error {
	*h = Headers{}
	next, frag, err := walkIP(&h.Key, packet)
	if err != nil {
		// The walk may have filled the addresses before it failed.
		*h = Headers{}
		return err
	}
	h.fill(packet, 0, next, frag)
	return nil
}

// ParseFrameHeaders fills h from an Ethernet II frame, as ParseFrame reads
// one (AF_PACKET SOCK_RAW, pcap link type 1): up to 8 VLAN tags are
// skipped, and h.L3 is where the IP header starts after them. h.Key is
// ParseFrame's key and the error is ParseFrame's, with h left zero; see
// ParseHeaders and Headers for the rest. ParseFrameHeaders does not
// allocate.
func ParseFrameHeaders(frame []byte, h *Headers) error {
	*h = Headers{}
	l3, next, frag, err := walkFrame(&h.Key, frame)
	if err != nil {
		*h = Headers{}
		return err
	}
	h.fill(frame, l3, next, frag)
	return nil
}

// fill sets the fields past the key, once the walk has keyed b: the IP
// header is at l3, its headers end at l3+next, frag is the walk's
// fragment kind. Everything the walk promised is in the buffer (the IP
// header, and for a first fragment or a whole datagram the bytes of the
// transport header the key read); everything past that is checked here.
func (h *Headers) fill(b []byte, l3, next int, frag fragKind) {
	ip := b[l3:]
	h.L3 = l3
	// Where the datagram ends: the IP length field, unless it is 0 or
	// says more than the buffer holds.
	end := len(b)
	if ip[0]>>4 == 4 {
		h.Version = 4
		if n := int(binary.BigEndian.Uint16(ip[2:4])); n != 0 {
			end = min(end, l3+n)
		}
	} else {
		h.Version = 6
		if n := int(binary.BigEndian.Uint16(ip[4:6])); n != 0 {
			end = min(end, l3+ipv6HeaderLen+n)
		}
	}
	h.Fragment = frag != notFragment
	start := l3 + next
	if frag == laterFragment {
		h.NonFirstFragment = true
		h.L4 = -1
		h.Payload = start
		h.PayloadLen = max(0, end-start)
		return
	}
	h.L4 = start
	l := b[start:]
	// hlen is the transport header's length, 0 for a protocol whose
	// header is not read; whole is false when it cannot be read.
	hlen, whole := 0, true
	switch proto := h.Key.Proto(); proto {
	case ProtoTCP:
		whole = len(l) >= 20
		if whole {
			hlen = int(l[12]>>4) * 4
			whole = hlen >= 20 && hlen <= len(l)
		}
		if whole {
			h.Flags = TCPFlags(l[13])
		}
	case ProtoUDP, protoUDPLite:
		hlen = 8
		whole = len(l) >= hlen
	case ProtoSCTP:
		hlen = 12
		whole = len(l) >= hlen
	case ProtoDCCP:
		whole = len(l) >= 12
		if whole {
			hlen = int(l[4]) * 4
			whole = hlen >= 12 && hlen <= len(l)
		}
	case ProtoICMP, ProtoICMPv6:
		hlen = 8
		whole = len(l) >= hlen
		if whole {
			h.ICMPType, h.ICMPCode = l[0], l[1]
		}
	}
	if !whole {
		h.Payload = len(b)
		return
	}
	h.L4Whole = true
	h.Payload = start + hlen
	h.PayloadLen = max(0, end-h.Payload)
}
