package flowcache

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"unsafe"
)

func TestNewFlowKey(t *testing.T) {
	v4a, v4b := netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("10.4.5.6")
	v6a, v6b := netip.MustParseAddr("2001:db8::a"), netip.MustParseAddr("fe80::1")
	for _, tc := range []struct {
		name             string
		src, dst         netip.Addr
		sport, dport     uint16
		proto            uint8
		wantSrc, wantDst netip.Addr
		want4            bool
	}{
		{"v4", v4a, v4b, 1234, 80, ProtoTCP, v4a, v4b, true},
		{"v6", v6a, v6b, 53, 5353, ProtoUDP, v6a, v6b, false},
		{"v4-mapped", netip.MustParseAddr("::ffff:10.1.2.3"), netip.MustParseAddr("::ffff:10.4.5.6"), 1, 2, ProtoSCTP, v4a, v4b, true},
		{"v6-zone-dropped", netip.MustParseAddr("fe80::1%eth0"), v6a, 0, 0, ProtoICMPv6, v6b, v6a, false},
		{"invalid", netip.Addr{}, netip.Addr{}, 0, 0, 0, netip.IPv6Unspecified(), netip.IPv6Unspecified(), false},
		{"invalid-src", netip.Addr{}, v4b, 7, 7, ProtoICMP, netip.IPv6Unspecified(), v4b, false},
		{"v4-zero", netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"), 65535, 0, 255, netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := NewFlowKey(tc.src, tc.dst, tc.sport, tc.dport, tc.proto)
			if k.Src() != tc.wantSrc || k.Dst() != tc.wantDst {
				t.Errorf("Src, Dst = %v, %v; want %v, %v", k.Src(), k.Dst(), tc.wantSrc, tc.wantDst)
			}
			if k.SrcPort() != tc.sport || k.DstPort() != tc.dport || k.Proto() != tc.proto {
				t.Errorf("ports, proto = %d, %d, %d; want %d, %d, %d", k.SrcPort(), k.DstPort(), k.Proto(), tc.sport, tc.dport, tc.proto)
			}
			if k.Is4() != tc.want4 {
				t.Errorf("Is4 = %v, want %v", k.Is4(), tc.want4)
			}
			// Rebuilding from the accessors gives the same key.
			if k2 := NewFlowKey(k.Src(), k.Dst(), k.SrcPort(), k.DstPort(), k.Proto()); k2 != k {
				t.Errorf("rebuilt %v != %v", k2, k)
			}
		})
	}

	// An IPv4 address and its IPv4-mapped form make the same key, the
	// one the parsers make.
	plain := NewFlowKey(v4a, v4b, 1, 2, ProtoTCP)
	mapped := NewFlowKey(netip.AddrFrom16(v4a.As16()), netip.AddrFrom16(v4b.As16()), 1, 2, ProtoTCP)
	if plain != mapped {
		t.Errorf("v4 %v != v4-mapped %v", plain, mapped)
	}
	want := [16]byte{10: 0xff, 11: 0xff, 12: 10, 13: 1, 14: 2, 15: 3}
	if plain.fields().src != want {
		t.Errorf("stored source % x, want % x", plain.fields().src, want)
	}
	// An invalid address is stored as ::, the same as the zero key.
	if k := NewFlowKey(netip.Addr{}, netip.Addr{}, 0, 0, 0); k != (FlowKey{}) {
		t.Errorf("invalid addresses: %v, want the zero key", k)
	}
}

func TestFlowKeyReverse(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	for _, k := range []FlowKey{
		NewFlowKey(a, netip.MustParseAddr("192.0.2.2"), 1000, 80, ProtoTCP),
		NewFlowKey(b, netip.MustParseAddr("2001:db8::2"), 53, 40000, ProtoUDP),
		NewFlowKey(a, a, 5, 5, ProtoUDP),
		{},
	} {
		r := k.Reverse()
		if r.Src() != k.Dst() || r.Dst() != k.Src() || r.SrcPort() != k.DstPort() || r.DstPort() != k.SrcPort() || r.Proto() != k.Proto() {
			t.Errorf("%v.Reverse() = %v: want addresses and ports swapped, protocol kept", k, r)
		}
		if r.Reverse() != k {
			t.Errorf("%v.Reverse().Reverse() = %v", k, r.Reverse())
		}
		if r.Is4() != k.Is4() {
			t.Errorf("%v.Reverse() changed the family", k)
		}
	}

	// Echo: both ports hold the identifier, so the reply's key (addresses
	// swapped, same identifier) is the request's Reverse.
	req := NewFlowKey(a, netip.MustParseAddr("192.0.2.9"), 0x1234, 0x1234, ProtoICMP)
	rep := NewFlowKey(netip.MustParseAddr("192.0.2.9"), a, 0x1234, 0x1234, ProtoICMP)
	if req.Reverse() != rep {
		t.Errorf("echo request %v, reply %v: reply is not the request's Reverse", req, rep)
	}
}

func TestFlowKeyCompare(t *testing.T) {
	k := func(src, dst string, sport, dport uint16, proto uint8) FlowKey {
		return NewFlowKey(netip.MustParseAddr(src), netip.MustParseAddr(dst), sport, dport, proto)
	}
	for _, tc := range []struct {
		name string
		a, b FlowKey // a < b
	}{
		{"proto before family", k("2001:db8::1", "2001:db8::2", 0, 0, ProtoTCP), k("10.0.0.1", "10.0.0.2", 0, 0, ProtoUDP)},
		{"proto before addresses", k("10.0.0.9", "10.0.0.9", 9, 9, ProtoICMP), k("10.0.0.1", "10.0.0.1", 1, 1, ProtoTCP)},
		{"proto numeric", k("10.0.0.1", "10.0.0.2", 1, 2, 17), k("10.0.0.1", "10.0.0.2", 1, 2, 132)},
		{"v4 before v6", k("255.255.255.255", "255.255.255.255", 65535, 65535, ProtoTCP), k("::", "::", 0, 0, ProtoTCP)},
		{"v4 before v6 below the mapped prefix", k("10.0.0.1", "10.0.0.1", 0, 0, ProtoTCP), k("::1", "::1", 0, 0, ProtoTCP)},
		{"src before dst", k("10.0.0.1", "10.0.0.9", 0, 0, ProtoTCP), k("10.0.0.2", "10.0.0.1", 0, 0, ProtoTCP)},
		{"src numeric, not text", k("10.0.0.2", "10.0.0.1", 0, 0, ProtoTCP), k("10.0.0.10", "10.0.0.1", 0, 0, ProtoTCP)},
		{"src v6 numeric", k("2001:db8::ff", "::", 0, 0, ProtoUDP), k("2001:db8::100", "::", 0, 0, ProtoUDP)},
		{"dst before ports", k("10.0.0.1", "10.0.0.2", 9, 9, ProtoTCP), k("10.0.0.1", "10.0.0.3", 1, 1, ProtoTCP)},
		{"dst numeric", k("10.0.0.1", "9.255.255.255", 0, 0, ProtoTCP), k("10.0.0.1", "10.0.0.0", 0, 0, ProtoTCP)},
		{"sport before dport", k("10.0.0.1", "10.0.0.2", 1, 9, ProtoTCP), k("10.0.0.1", "10.0.0.2", 2, 1, ProtoTCP)},
		{"sport numeric", k("10.0.0.1", "10.0.0.2", 0x00ff, 0, ProtoTCP), k("10.0.0.1", "10.0.0.2", 0x0100, 0, ProtoTCP)},
		{"dport numeric", k("10.0.0.1", "10.0.0.2", 1, 0x00ff, ProtoTCP), k("10.0.0.1", "10.0.0.2", 1, 0x0100, ProtoTCP)},
		{"dport last", k("10.0.0.1", "10.0.0.2", 1, 2, ProtoTCP), k("10.0.0.1", "10.0.0.2", 1, 3, ProtoTCP)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if c := tc.a.Compare(tc.b); c != -1 {
				t.Errorf("%v.Compare(%v) = %d, want -1", tc.a, tc.b, c)
			}
			if c := tc.b.Compare(tc.a); c != 1 {
				t.Errorf("%v.Compare(%v) = %d, want 1", tc.b, tc.a, c)
			}
			if tc.a.Compare(tc.a) != 0 || tc.b.Compare(tc.b) != 0 {
				t.Errorf("a key does not compare equal to itself")
			}
		})
	}
}

// TestFlowKeyCompareOrder checks Compare is a total order that agrees
// with == and sorts consistently, over random keys with many ties.
func TestFlowKeyCompareOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	pick := func(vals ...string) netip.Addr { return netip.MustParseAddr(vals[rng.IntN(len(vals))]) }
	addrs := []string{"10.0.0.1", "10.0.0.2", "10.0.0.10", "192.0.2.1", "::1", "2001:db8::1", "2001:db8::10", "fe80::1"}
	protos := []uint8{ProtoICMP, ProtoTCP, ProtoUDP, ProtoSCTP}
	portVals := []uint16{0, 1, 255, 256, 65535}
	keys := make([]FlowKey, 400)
	for i := range keys {
		src := pick(addrs...)
		dst := pick(addrs...)
		if src.Is4() != dst.Is4() { // the parsers never mix families
			dst = src
		}
		keys[i] = NewFlowKey(src, dst, portVals[rng.IntN(len(portVals))], portVals[rng.IntN(len(portVals))], protos[rng.IntN(len(protos))])
	}
	for _, a := range keys {
		for _, b := range keys {
			ab, ba := a.Compare(b), b.Compare(a)
			if ab != -ba || ab < -1 || ab > 1 {
				t.Fatalf("Compare(%v, %v) = %d, reverse %d", a, b, ab, ba)
			}
			if (ab == 0) != (a == b) {
				t.Fatalf("Compare(%v, %v) = %d but == is %v", a, b, ab, a == b)
			}
		}
	}
	sorted := slices.Clone(keys)
	slices.SortFunc(sorted, FlowKey.Compare)
	for i := 1; i < len(sorted); i++ {
		a, b := sorted[i-1], sorted[i]
		if a.Compare(b) > 0 {
			t.Fatalf("sorted[%d] %v > sorted[%d] %v", i-1, a, i, b)
		}
		// Spot-check the sort against the order spelled out field by field.
		if a.Proto() > b.Proto() || a.Proto() == b.Proto() && !a.Is4() && b.Is4() {
			t.Fatalf("sorted[%d] %v before %v: protocol or family out of order", i-1, a, b)
		}
	}
	// Sorting again from another permutation gives the same order.
	shuffled := slices.Clone(keys)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	slices.SortStableFunc(shuffled, FlowKey.Compare)
	if !slices.Equal(sorted, shuffled) {
		t.Fatal("two sorts of the same keys differ")
	}
}

// TestFlowKeyLayout pins what the table relies on to hash and compare
// keys as memory: 40 bytes, 8-byte aligned, no pointers (five words and
// nothing else, so a key travels in registers), the fields where the
// layout comment draws them, and padding that is always zero, so equal
// keys are equal bytes.
func TestFlowKeyLayout(t *testing.T) {
	if s := unsafe.Sizeof(FlowKey{}); s != 40 {
		t.Errorf("Sizeof(FlowKey) = %d, want 40", s)
	}
	if a := unsafe.Alignof(FlowKey{}); a != 8 {
		t.Errorf("Alignof(FlowKey) = %d, want 8", a)
	}
	kt := reflect.TypeFor[FlowKey]()
	if kt.NumField() != 5 {
		t.Errorf("FlowKey has %d fields, want five words", kt.NumField())
	}
	for i := range kt.NumField() {
		if f := kt.Field(i); f.Type.Kind() != reflect.Uint64 || f.Offset != uintptr(8*i) {
			t.Errorf("FlowKey field %d: %s %v at %d, want uint64 at %d", i, f.Name, f.Type, f.Offset, 8*i)
		}
	}
	var f keyFields
	for _, f := range []struct {
		name   string
		offset uintptr
	}{
		{"src", unsafe.Offsetof(f.src)},
		{"dst", unsafe.Offsetof(f.dst) - 16},
		{"srcPort", unsafe.Offsetof(f.srcPort) - 32},
		{"dstPort", unsafe.Offsetof(f.dstPort) - 34},
		{"proto", unsafe.Offsetof(f.proto) - 36},
	} {
		if f.offset != 0 {
			t.Errorf("%s is %d bytes from where the layout comment puts it", f.name, f.offset)
		}
	}

	build := []func() FlowKey{
		func() FlowKey {
			return NewFlowKey(netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), 1, 2, ProtoTCP)
		},
		func() FlowKey {
			return NewFlowKey(netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"), 65535, 65535, 255)
		},
		func() FlowKey {
			k, err := ParseFlowKey(ip4(ProtoUDP, udpHdr(53, 53)))
			if err != nil {
				t.Fatal(err)
			}
			return k
		},
		func() FlowKey {
			k, err := ParseFrame(ethFrame(etherTypeIPv6, nil, ip6(ProtoICMPv6, icmpHdr(128, 0, 0xffff, 0))))
			if err != nil {
				t.Fatal(err)
			}
			return k
		},
	}
	for i, fn := range build {
		a, b := fn(), fn()
		if a != b || !bytes.Equal(a.bytes(), b.bytes()) {
			t.Errorf("key %d: built twice, %v and %v differ", i, a, b)
		}
		if pad := a.bytes()[37:]; !bytes.Equal(pad, []byte{0, 0, 0}) {
			t.Errorf("key %d %v: padding % x, want zero", i, a, pad)
		}
		if *a.words() != *b.words() {
			t.Errorf("key %d: words differ", i)
		}
		// A key copied through its bytes is the same key.
		var c FlowKey
		copy(c.bytes(), a.bytes())
		if c != a {
			t.Errorf("key %d: copy through bytes %v != %v", i, c, a)
		}
		// Reverse keeps the padding zero too.
		if r := a.Reverse(); !bytes.Equal(r.bytes()[37:], []byte{0, 0, 0}) {
			t.Errorf("key %d: Reverse has padding % x", i, r.bytes()[37:])
		}
	}
	// The parser and NewFlowKey agree byte for byte.
	parsed, err := ParseFlowKey(ip4(ProtoTCP, tcpHdr(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	built := NewFlowKey(srcV4, dstV4, 1, 2, ProtoTCP)
	if !bytes.Equal(parsed.bytes(), built.bytes()) {
		t.Errorf("parsed % x\nbuilt  % x", parsed.bytes(), built.bytes())
	}
	// Keys work as map keys (comparable, no pointers to chase).
	m := map[FlowKey]int{built: 1}
	if m[parsed] != 1 {
		t.Error("parsed key does not find the built key in a map")
	}
}
