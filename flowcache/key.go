package flowcache

import (
	"cmp"
	"net/netip"
	"unsafe"
)

// FlowKey identifies one direction of a flow: the outer IP header's
// addresses and protocol and, for protocols that have them, the two ports
// (for ICMP and ICMPv6 echo, the echo identifier in both). It is 40 bytes,
// comparable with ==, holds no pointers, and its padding is always zero, so
// it can be hashed as bytes. IPv4 addresses are stored IPv4-mapped into
// IPv6 (::ffff:a.b.c.d), which gives both families one layout.
//
//	offset  0         16        32      34      36     37      40
//	        | src[16] | dst[16] | sport | dport | proto | 0 0 0 |
//
// The zero-length [0]uint64 aligns the key to 8 bytes, so the table can
// compare and hash it a 64-bit word at a time.
type FlowKey struct {
	_       [0]uint64
	src     [16]byte
	dst     [16]byte
	srcPort uint16
	dstPort uint16
	proto   uint8
	_       [3]byte
}

// Protocol numbers the key treats specially.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoDCCP   = 33
	ProtoICMPv6 = 58
	ProtoSCTP   = 132
)

// NewFlowKey builds a key from its parts. An IPv4 address (or an
// IPv4-mapped IPv6 address) is stored mapped, so NewFlowKey and the parsers
// agree on every IPv4 packet; an invalid (zero) netip.Addr is stored as ::.
// For ICMP and ICMPv6 echo the caller passes the echo identifier as both
// ports, as the parsers do.
func NewFlowKey(src, dst netip.Addr, srcPort, dstPort uint16, proto uint8) FlowKey {
	return FlowKey{
		src:     addr16(src),
		dst:     addr16(dst),
		srcPort: srcPort,
		dstPort: dstPort,
		proto:   proto,
	}
}

func addr16(a netip.Addr) [16]byte {
	if !a.IsValid() {
		return [16]byte{}
	}
	// As16 maps IPv4 into IPv6 and drops any zone: a zone is not on the wire.
	return a.As16()
}

// Src is the source address: an IPv4 address when the key is IPv4.
func (k FlowKey) Src() netip.Addr { return netip.AddrFrom16(k.src).Unmap() }

// Dst is the destination address: an IPv4 address when the key is IPv4.
func (k FlowKey) Dst() netip.Addr { return netip.AddrFrom16(k.dst).Unmap() }

// SrcPort is the source port (the echo identifier for ICMP echo).
func (k FlowKey) SrcPort() uint16 { return k.srcPort }

// DstPort is the destination port (the echo identifier for ICMP echo).
func (k FlowKey) DstPort() uint16 { return k.dstPort }

// Proto is the IP protocol number of the outer header (after IPv6
// extension headers).
func (k FlowKey) Proto() uint8 { return k.proto }

// Is4 reports whether the key's addresses are IPv4 (stored mapped).
func (k FlowKey) Is4() bool { return is4(&k.src) }

var v4InV6Prefix = [12]byte{10: 0xff, 11: 0xff}

func is4(a *[16]byte) bool { return [12]byte(a[:12]) == v4InV6Prefix }

// Reverse is the key of the other direction: addresses and ports swapped.
// An ICMP echo reply's key is its request's Reverse, because both ports
// hold the echo identifier.
func (k FlowKey) Reverse() FlowKey {
	k.src, k.dst = k.dst, k.src
	k.srcPort, k.dstPort = k.dstPort, k.srcPort
	return k
}

// Compare orders keys as Dump lists them (OPTE's dump order): by protocol,
// then family (IPv4 before IPv6), then source address, destination
// address, source port and destination port, each compared numerically.
// It returns -1, 0 or +1.
func (k FlowKey) Compare(o FlowKey) int {
	if c := cmp.Compare(k.proto, o.proto); c != 0 {
		return c
	}
	k4, o4 := k.Is4(), o.Is4()
	if k4 != o4 {
		if k4 {
			return -1
		}
		return 1
	}
	// Addresses are big-endian bytes, so byte order is numeric order.
	if c := compareBytes(k.src[:], o.src[:]); c != 0 {
		return c
	}
	if c := compareBytes(k.dst[:], o.dst[:]); c != 0 {
		return c
	}
	if c := cmp.Compare(k.srcPort, o.srcPort); c != 0 {
		return c
	}
	return cmp.Compare(k.dstPort, o.dstPort)
}

func compareBytes(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// bytes views the key as its 40 bytes, for hashing: a FlowKey has no
// pointers and its padding is always zero, so its bytes are its value.
func (k *FlowKey) bytes() []byte { return unsafe.Slice((*byte)(unsafe.Pointer(k)), unsafe.Sizeof(*k)) }

var _ [40 - unsafe.Sizeof(FlowKey{})]struct{}
var _ [unsafe.Sizeof(FlowKey{}) - 40]struct{}
