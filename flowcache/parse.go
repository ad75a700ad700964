package flowcache

// The parsers turn the first bytes of a packet into its FlowKey, and
// ParseHeaders and ParseFrameHeaders (headers.go) into the key plus what a
// state machine reads. All four share one walk: walkFrame (Ethernet and
// tags), walkIP (the version), parse4 and parse6 (the IP headers) and
// transport (the ports), which fill the key in place and report where the
// headers end; the key parsers drop that report, the header parsers read
// the transport header from it. So the four agree on every input: the
// same key, the same error. They run once per packet on every core,
// before the table lookup, so they are written like the lookup: no
// allocation on any path (the errors they return are built once, below),
// no reflection, no calls through an interface or a closure, one key
// filled in place rather than copied out of each level, and each header
// length-checked once so that the compiler drops the bounds checks on the
// fixed-offset reads after it.
//
// What the walk reads, in order, and where it stops:
//
//	Ethernet (14) → 0..8 tags (4 each) → IPv4 (IHL×4) | IPv6 (40) → 0..8 extension headers → 0, 1, 4 or 6 bytes of the next header
//
// Nothing past what the key needs is read, so a capture cut at its snap
// length keys as long as those headers are whole, and the length fields
// (IPv4 total length, IPv6 payload length) are never compared with the
// buffer: frames captured with segmentation offload carry 0 there. (The
// header parsers read on past the walk, but never fail for it.)

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The errors the parsers return wrap one of these; match them with
// errors.Is.
var (
	// ErrTruncated: a header the key needs runs past the end of the buffer.
	ErrTruncated = errors.New("flowcache: truncated packet")
	// ErrNotIP: the frame's EtherType is not IPv4 or IPv6 (ARP, MPLS,
	// PPPoE, LLDP, …), or the packet's IP version is neither 4 nor 6.
	ErrNotIP = errors.New("flowcache: not an IP packet")
	// ErrMalformed: the headers are impossible in some other way, such as
	// an IPv4 header length under 20 bytes or more than 8 IPv6 extension
	// headers in a row.
	ErrMalformed = errors.New("flowcache: malformed packet")
)

// The wrapped errors are built once, here, so that a parse error costs no
// allocation either: a flood of garbage must not turn into garbage for the
// collector. The price is that they name the header, not the offset.
var (
	errTruncVersion = fmt.Errorf("%w: empty IP packet", ErrTruncated)
	errTruncEth     = fmt.Errorf("%w: Ethernet header shorter than 14 bytes", ErrTruncated)
	errTruncTag     = fmt.Errorf("%w: VLAN tag shorter than 4 bytes", ErrTruncated)
	errTrunc4       = fmt.Errorf("%w: IPv4 header shorter than 20 bytes", ErrTruncated)
	errTrunc4Opts   = fmt.Errorf("%w: IPv4 options run past the buffer", ErrTruncated)
	errTrunc6       = fmt.Errorf("%w: IPv6 header shorter than 40 bytes", ErrTruncated)
	errTrunc6Ext    = fmt.Errorf("%w: IPv6 extension header runs past the buffer", ErrTruncated)
	errTruncPorts   = fmt.Errorf("%w: transport header shorter than its 4 bytes of ports", ErrTruncated)
	errTruncICMP    = fmt.Errorf("%w: ICMP header without its type byte", ErrTruncated)
	errTruncEcho    = fmt.Errorf("%w: ICMP echo header shorter than 6 bytes", ErrTruncated)

	errNotIPVersion   = fmt.Errorf("%w: IP version is neither 4 nor 6", ErrNotIP)
	errNotIPEtherType = fmt.Errorf("%w: EtherType is not IPv4 or IPv6", ErrNotIP)

	errMalIHL     = fmt.Errorf("%w: IPv4 header length under 20 bytes", ErrMalformed)
	errMalExt     = fmt.Errorf("%w: more than 8 IPv6 extension headers", ErrMalformed)
	errMalTags    = fmt.Errorf("%w: more than 8 VLAN tags", ErrMalformed)
	errMalVersion = fmt.Errorf("%w: IP version contradicts the EtherType", ErrMalformed)
	errMalMapped  = fmt.Errorf("%w: IPv4-mapped address in an IPv6 header", ErrMalformed)
)

const (
	ethHeaderLen  = 14
	tagLen        = 4
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40

	// maxTags bounds the VLAN tags ParseFrame skips; real networks stack
	// two (QinQ), and a bound keeps a frame of nothing but tags from
	// costing more than a few loads.
	maxTags = 8
	// maxExtHeaders bounds the IPv6 extension headers skipped in a row.
	// RFC 8200 allows each kind once (Destination Options twice), so 8 is
	// more than any legitimate packet carries.
	maxExtHeaders = 8

	etherTypeIPv4  = 0x0800
	etherTypeIPv6  = 0x86DD
	etherTypeDot1Q = 0x8100 // 802.1Q VLAN tag
	etherTypeQinQ  = 0x88A8 // 802.1ad service tag
	etherType9100  = 0x9100 // pre-standard QinQ tag, still sent by some switches

	protoIPv6Frag = 44
	protoAH       = 51
	protoUDPLite  = 136

	icmpEchoReply     = 0
	icmpEchoRequest   = 8
	icmpv6EchoRequest = 128
	icmpv6EchoReply   = 129
)

// ipv6Ext marks the IPv6 extension headers the walk skips. ESP (50) is not
// one: what follows it is encrypted, so ESP is the protocol; neither is No
// Next Header (59), which ends the chain. A table indexed by a byte needs
// no bounds check and no branch tree.
var ipv6Ext = [256]bool{
	0:             true, // Hop-by-Hop Options
	43:            true, // Routing
	protoIPv6Frag: true, // Fragment: fixed 8 bytes
	protoAH:       true, // Authentication Header: (length+2)×4 bytes
	60:            true, // Destination Options
	135:           true, // Mobility
	139:           true, // HIP
	140:           true, // Shim6
	253:           true, // experimental (RFC 3692)
	254:           true, // experimental (RFC 3692)
}

// ParseFlowKey returns the flow key of an IP packet that starts at its
// IPv4 or IPv6 header (what an AF_PACKET SOCK_DGRAM socket or a TUN device
// delivers); the version nibble decides which. The key holds:
//
//   - the outer IP header's addresses (IPv4 stored IPv4-mapped) and
//     protocol, after skipping IPv6 extension headers (Hop-by-Hop, Routing,
//     Fragment, Destination Options, AH, Mobility, HIP, Shim6, 253, 254; at
//     most 8 in a row). ESP and No Next Header end the walk as the
//     protocol. A tunnel (IPIP, 6in4, GRE, …) is keyed on its outer header
//     with the tunnel's protocol;
//   - for TCP, UDP, SCTP, DCCP and UDP-Lite, the ports: the first 4 bytes of
//     the transport header, which is all of it the key reads;
//   - for ICMP echo request and reply (types 8 and 0 under protocol 1,
//     128 and 129 under protocol 58), the echo identifier as both ports, so
//     a reply's key is its request's Reverse; this reads the first 6 bytes
//     of the ICMP header. Any other ICMP message reads only its type byte
//     and has ports 0/0. Which types are echo follows the protocol number,
//     not the IP version;
//   - ports 0/0 for every other protocol, and for a non-first fragment
//     (IPv4 fragment offset ≠ 0, or an IPv6 Fragment header with offset ≠
//     0, which also ends the extension header walk), whose protocol is the
//     one its IPv4 header or IPv6 Fragment header names. A first fragment
//     carries the transport header and is keyed like an unfragmented
//     packet.
//
// AH is skipped only as an IPv6 extension header; under IPv4 it is the
// protocol, like ESP.
//
// Errors wrap ErrTruncated, ErrNotIP or ErrMalformed, and come with the
// zero key. Headers are read in order and the first problem wins; each
// header is judged in three steps:
//
//  1. its fixed part (Ethernet 14 bytes; a tag 4; for IP the version byte,
//     then IPv4 20 or IPv6 40; an extension header's next-header and
//     length bytes, a Fragment header's 8) must be in the buffer, or
//     ErrTruncated;
//  2. its type and length fields must make sense, or ErrNotIP (an
//     EtherType that is not IP, an IP version that is neither 4 nor 6) or
//     ErrMalformed (an IPv4 header length under 20 bytes, an IP version
//     that contradicts the EtherType; a ninth extension header or tag in a
//     row, refused as soon as the eighth, which names it, is whole);
//  3. the rest of the header (IPv4 options, the whole extension header,
//     the 4, 1 or 6 bytes of the transport header above) must be in the
//     buffer, or ErrTruncated.
//
// So a prefix of a packet parses to the packet's own key or error, or to
// ErrTruncated. ParseFlowKey does not allocate.
func ParseFlowKey(packet []byte) (k FlowKey, err error) {
	// The helpers fill one key in place rather than return it, because
	// copying a 40-byte key out of each level costs more than the parse;
	// so on an error the key is zeroed here, since a walk that failed at
	// the transport header has filled in the addresses already. Written
	// to inline (the named results keep it under the budget), so that the
	// caller pays two calls, walkIP then parse4 or parse6, as it did when
	// ParseFlowKey walked the headers itself.
	if _, _, err = walkIP(&k, packet); err != nil {
		return FlowKey{}, err
	}
	return k, nil
}

// walkIP fills k from an IP packet whose version nibble decides the
// family. It returns where the IP headers end (the offset in p of the
// transport header, or of a non-first fragment's data) and the packet's
// fragment kind; only the header parsers read them.
func walkIP(k *FlowKey, p []byte) (int, fragKind, error) {
	if len(p) == 0 {
		return 0, 0, errTruncVersion
	}
	switch p[0] >> 4 {
	case 4:
		return parse4(k, p)
	case 6:
		return parse6(k, p)
	}
	return 0, 0, errNotIPVersion
}

// fragKind is what the IP headers say of fragmentation: a whole
// datagram, its first fragment (offset 0, more fragments), or a later one
// (offset ≠ 0), which carries no transport header. An IPv6 atomic
// fragment (a Fragment header with offset 0 and M clear, RFC 6946) is a
// whole datagram.
type fragKind uint8

const (
	notFragment fragKind = iota
	firstFragment
	laterFragment
)

// ParseFrame returns the flow key of an Ethernet II frame (what an
// AF_PACKET SOCK_RAW socket or a pcap with link type 1 delivers). It skips
// up to 8 VLAN tags (802.1Q 0x8100, 802.1ad 0x88A8 and 0x9100, in any mix;
// a ninth is ErrMalformed) and then keys the IPv4 (0x0800) or IPv6
// (0x86DD) packet as ParseFlowKey does. Any other EtherType (ARP, MPLS,
// PPPoE, LLDP, an 802.3 length, …) is ErrNotIP: MPLS labels are not
// popped, because what follows them is not marked. An IP version nibble
// of 4 under 0x86DD or 6 under 0x0800 is ErrMalformed, any other version
// ErrNotIP. ParseFrame does not allocate.
func ParseFrame(frame []byte) (k FlowKey, err error) {
	// Written to inline, like ParseFlowKey.
	if _, _, _, err = walkFrame(&k, frame); err != nil {
		return FlowKey{}, err
	}
	return k, nil
}

// walkFrame fills k from an Ethernet frame. It returns the offset of the
// IP header in frame (after the tags), and walkIP's offset (from the IP
// header) and fragment kind.
func walkFrame(k *FlowKey, frame []byte) (l3, next int, frag fragKind, err error) {
	if len(frame) < ethHeaderLen {
		return 0, 0, 0, errTruncEth
	}
	etype := binary.BigEndian.Uint16(frame[12:14])
	p := frame[ethHeaderLen:]
	for n := 0; etype == etherTypeDot1Q || etype == etherTypeQinQ || etype == etherType9100; n++ {
		// The limit is known before the ninth tag is read: the eighth
		// tag's inner EtherType announced it.
		if n == maxTags {
			return 0, 0, 0, errMalTags
		}
		if len(p) < tagLen {
			return 0, 0, 0, errTruncTag
		}
		etype = binary.BigEndian.Uint16(p[2:4]) // after TCI (2 bytes)
		p = p[tagLen:]
	}
	var want byte
	switch etype {
	case etherTypeIPv4:
		want = 4
	case etherTypeIPv6:
		want = 6
	default:
		return 0, 0, 0, errNotIPEtherType
	}
	if len(p) == 0 {
		return 0, 0, 0, errTruncVersion
	}
	l3 = len(frame) - len(p)
	// parse4 and parse6 are called here rather than through walkIP,
	// which would look at the version again one call deeper.
	switch v := p[0] >> 4; {
	case v == want && v == 4:
		next, frag, err = parse4(k, p)
		return l3, next, frag, err
	case v == want:
		next, frag, err = parse6(k, p)
		return l3, next, frag, err
	case v == 4 || v == 6:
		// The kernel drops these too (ip_rcv, ipv6_rcv): trusting either
		// field over the other would key the same bytes two ways.
		return 0, 0, 0, errMalVersion
	}
	return 0, 0, 0, errNotIPVersion
}

// parse4 fills k from an IPv4 packet; p[0]>>4 == 4. It returns the header
// length (where the transport header or a later fragment's data starts)
// and the fragment kind.
func parse4(k *FlowKey, p []byte) (int, fragKind, error) {
	if len(p) < ipv4HeaderLen {
		return 0, 0, errTrunc4
	}
	ihl := int(p[0]&0x0f) * 4
	if ihl < ipv4HeaderLen {
		return 0, 0, errMalIHL
	}
	if len(p) < ihl {
		return 0, 0, errTrunc4Opts
	}
	// IPv4-mapped, as NewFlowKey stores it: ::ffff:a.b.c.d.
	k.src[10], k.src[11] = 0xff, 0xff
	copy(k.src[12:], p[12:16])
	k.dst[10], k.dst[11] = 0xff, 0xff
	copy(k.dst[12:], p[16:20])
	k.proto = p[9]
	// A non-first fragment (offset ≠ 0) carries no transport header; its
	// first bytes are payload, not ports. MF alone (the first fragment)
	// does not matter to the key: that one has the header.
	frag := binary.BigEndian.Uint16(p[6:8])
	if frag&0x1fff != 0 {
		return ihl, laterFragment, nil
	}
	f := notFragment
	if frag&0x2000 != 0 {
		f = firstFragment
	}
	return ihl, f, transport(k, p[ihl:])
}

// parse6 fills k from an IPv6 packet; p[0]>>4 == 6. It returns where the
// extension headers end (the transport header, or a later fragment's
// data) and the fragment kind.
func parse6(k *FlowKey, p []byte) (int, fragKind, error) {
	if len(p) < ipv6HeaderLen {
		return 0, 0, errTrunc6
	}
	k.src = [16]byte(p[8:24])
	k.dst = [16]byte(p[24:40])
	// The key stores IPv4 mapped into IPv6, so an IPv6 packet carrying a
	// mapped address (::ffff:a.b.c.d, which RFC 4291 keeps off the wire)
	// would share the key of an IPv4 flow and ride its decision: refuse it.
	if is4(&k.src) || is4(&k.dst) {
		return 0, 0, errMalMapped
	}
	nh := p[6]
	l := p[ipv6HeaderLen:]
	f := notFragment
	for n := 0; ipv6Ext[nh]; n++ {
		// The ninth header is refused from its announcement alone, before
		// any of its bytes are read.
		if n == maxExtHeaders {
			return 0, 0, errMalExt
		}
		if len(l) < 2 {
			return 0, 0, errTrunc6Ext
		}
		var hlen int
		switch nh {
		case protoIPv6Frag:
			if len(l) < 8 {
				return 0, 0, errTrunc6Ext
			}
			// A fragment with offset ≠ 0 is the middle of the original
			// payload: the walk ends with the protocol the Fragment
			// header names, and no ports.
			frag := binary.BigEndian.Uint16(l[2:4])
			if frag&^7 != 0 {
				k.proto = l[0]
				return len(p) - len(l) + 8, laterFragment, nil
			}
			if frag&1 != 0 { // M: more fragments follow this first one
				f = firstFragment
			}
			hlen = 8 // byte 1 is reserved, not a length
		case protoAH:
			hlen = (int(l[1]) + 2) * 4 // RFC 4302: 4-byte units, minus 2
		default:
			hlen = (int(l[1]) + 1) * 8 // RFC 8200: 8-byte units, minus 1
		}
		if len(l) < hlen {
			return 0, 0, errTrunc6Ext
		}
		nh = l[0]
		l = l[hlen:]
	}
	k.proto = nh
	return len(p) - len(l), f, transport(k, l)
}

// transport fills in the ports of k from l, the bytes after the IP and
// extension headers, according to k.proto.
func transport(k *FlowKey, l []byte) error {
	switch k.proto {
	case ProtoTCP, ProtoUDP, ProtoSCTP, ProtoDCCP, protoUDPLite:
		// All five start with source and destination port; the key
		// needs nothing else, so a 4-byte stub is enough.
		if len(l) < 4 {
			return errTruncPorts
		}
		k.srcPort = binary.BigEndian.Uint16(l[0:2])
		k.dstPort = binary.BigEndian.Uint16(l[2:4])
	case ProtoICMP, ProtoICMPv6:
		if len(l) < 1 {
			return errTruncICMP
		}
		if !isEcho(k.proto, l[0]) {
			break
		}
		// type, code, checksum, then the identifier at bytes 4–5. It goes
		// in both ports so that swapping them (Reverse) leaves it in
		// place: a reply's key is its request's Reverse.
		if len(l) < 6 {
			return errTruncEcho
		}
		id := binary.BigEndian.Uint16(l[4:6])
		k.srcPort, k.dstPort = id, id
	}
	return nil
}

func isEcho(proto, typ uint8) bool {
	if proto == ProtoICMP {
		return typ == icmpEchoRequest || typ == icmpEchoReply
	}
	return typ == icmpv6EchoRequest || typ == icmpv6EchoReply
}
