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
//	        | w0 | w1 | w2 | w3 | w4                           |
//
// The bytes are held as five 64-bit words (keyFields draws what each
// holds). A struct of words, unlike one of byte arrays, is passed and
// returned in registers under Go's register ABI and copied a word at a
// time, so a key handed through any number of calls by value costs five
// register moves, not a copy through memory whose wide loads wait on
// narrower stores; and the table hashes and compares it as these words.
type FlowKey struct {
	w0, w1, w2, w3, w4 uint64
}

// keyFields is what a FlowKey's words hold, in memory order: the layout
// drawn on FlowKey. The key's accessors and the parsers read and write
// the fields through it (fields, key), so the words hold the same bytes
// on every platform, whatever its byte order. The zero-length [0]uint64
// aligns it as FlowKey is aligned.
type keyFields struct {
	_       [0]uint64
	src     [16]byte
	dst     [16]byte
	srcPort uint16
	dstPort uint16
	proto   uint8
	_       [3]byte
}

// fields views k's words as the fields they hold.
func (k *FlowKey) fields() *keyFields { return (*keyFields)(unsafe.Pointer(k)) }

// key is the FlowKey whose words hold f.
func (f *keyFields) key() FlowKey { return *(*FlowKey)(unsafe.Pointer(f)) }

var _ [unsafe.Sizeof(FlowKey{}) - unsafe.Sizeof(keyFields{})]struct{}
var _ [unsafe.Sizeof(keyFields{}) - unsafe.Sizeof(FlowKey{})]struct{}
var _ [unsafe.Alignof(FlowKey{}) - unsafe.Alignof(keyFields{})]struct{}

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
	f := keyFields{
		src:     addr16(src),
		dst:     addr16(dst),
		srcPort: srcPort,
		dstPort: dstPort,
		proto:   proto,
	}
	return f.key()
}

func addr16(a netip.Addr) [16]byte {
	if !a.IsValid() {
		return [16]byte{}
	}
	// As16 maps IPv4 into IPv6 and drops any zone: a zone is not on the wire.
	return a.As16()
}

// Src is the source address: an IPv4 address when the key is IPv4.
func (k FlowKey) Src() netip.Addr { return netip.AddrFrom16(k.fields().src).Unmap() }

// Dst is the destination address: an IPv4 address when the key is IPv4.
func (k FlowKey) Dst() netip.Addr { return netip.AddrFrom16(k.fields().dst).Unmap() }

// SrcPort is the source port (the echo identifier for ICMP echo).
func (k FlowKey) SrcPort() uint16 { return k.fields().srcPort }

// DstPort is the destination port (the echo identifier for ICMP echo).
func (k FlowKey) DstPort() uint16 { return k.fields().dstPort }

// Proto is the IP protocol number of the outer header (after IPv6
// extension headers).
func (k FlowKey) Proto() uint8 { return k.fields().proto }

// Is4 reports whether the key's addresses are IPv4 (stored mapped).
func (k FlowKey) Is4() bool { return is4(&k.fields().src) }

var v4InV6Prefix = [12]byte{10: 0xff, 11: 0xff}

func is4(a *[16]byte) bool { return [12]byte(a[:12]) == v4InV6Prefix }

// Reverse is the key of the other direction: addresses and ports swapped.
// An ICMP echo reply's key is its request's Reverse, because both ports
// hold the echo identifier.
func (k FlowKey) Reverse() FlowKey {
	f := k.fields()
	f.src, f.dst = f.dst, f.src
	f.srcPort, f.dstPort = f.dstPort, f.srcPort
	return k
}

// Compare orders keys as Dump lists them (OPTE's dump order): by protocol,
// then family (IPv4 before IPv6), then source address, destination
// address, source port and destination port, each compared numerically.
// It returns -1, 0 or +1.
func (k FlowKey) Compare(o FlowKey) int {
	kf, of := k.fields(), o.fields()
	if c := cmp.Compare(kf.proto, of.proto); c != 0 {
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
	if c := compareBytes(kf.src[:], of.src[:]); c != 0 {
		return c
	}
	if c := compareBytes(kf.dst[:], of.dst[:]); c != 0 {
		return c
	}
	if c := cmp.Compare(kf.srcPort, of.srcPort); c != 0 {
		return c
	}
	return cmp.Compare(kf.dstPort, of.dstPort)
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
