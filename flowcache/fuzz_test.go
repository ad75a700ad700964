package flowcache

import (
	"encoding/binary"
	"errors"
	"testing"
)

// The fuzz targets check what holds for every input, not a particular
// key: no panic; an error is one of the three sentinels with the zero key;
// a key is well-formed and holds the header's addresses; a framed packet
// parses as the bare one; and cutting an input never turns it into a
// different key or a different error, only into ErrTruncated — the
// parsers decide from bytes they have, and a missing byte they need is
// always ErrTruncated.
//
// The seed corpus is the hand-built packets of parse_test.go plus the
// files in testdata/fuzz/<target>/.

func FuzzParseFlowKey(f *testing.F) {
	for _, c := range parseCases() {
		if !c.frame {
			f.Add(c.pkt)
		}
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		k, err := ParseFlowKey(p)
		checkParsed(t, "ParseFlowKey", p, k, err)
		checkPrefixes(t, "ParseFlowKey", ParseFlowKey, p, k, err)
		if err == nil {
			checkAddrs(t, p, k)
		}
		// Framed with the EtherType its version asks for, it parses the same.
		fk, ferr := ParseFrame(ethIP(p))
		if fk != k || ferr != err {
			t.Fatalf("% x: ParseFlowKey %v, %v; ParseFrame framed %v, %v", p, k, err, fk, ferr)
		}
	})
}

func FuzzParseFrame(f *testing.F) {
	for _, c := range parseCases() {
		if c.frame {
			f.Add(c.pkt)
		} else {
			f.Add(ethIP(c.pkt))
		}
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		k, err := ParseFrame(frame)
		checkParsed(t, "ParseFrame", frame, k, err)
		checkPrefixes(t, "ParseFrame", ParseFrame, frame, k, err)
		if len(frame) < ethHeaderLen {
			if !errors.Is(err, ErrTruncated) {
				t.Fatalf("% x: %d bytes: %v, %v; want ErrTruncated", frame, len(frame), k, err)
			}
			return
		}
		// An untagged IP frame whose version agrees with its EtherType
		// parses as its payload does.
		etype := binary.BigEndian.Uint16(frame[12:14])
		p := frame[ethHeaderLen:]
		if len(p) > 0 && (etype == etherTypeIPv4 && p[0]>>4 == 4 || etype == etherTypeIPv6 && p[0]>>4 == 6) {
			pk, perr := ParseFlowKey(p)
			if pk != k || perr != err {
				t.Fatalf("% x: ParseFrame %v, %v; ParseFlowKey of the payload %v, %v", frame, k, err, pk, perr)
			}
			return
		}
		if err == nil && etype != etherTypeDot1Q && etype != etherTypeQinQ && etype != etherType9100 {
			t.Fatalf("% x: EtherType %#04x keyed as %v", frame, etype, k)
		}
	})
}

// checkPrefixes parses every prefix of in (a sample when in is long) and
// requires ErrTruncated or what in itself gave.
func checkPrefixes(t *testing.T, what string, parse func([]byte) (FlowKey, error), in []byte, k FlowKey, err error) {
	t.Helper()
	step := 1
	if len(in) > 512 {
		step = len(in) / 256
	}
	for n := len(in) - 1; n >= 0; n -= step {
		// No spare capacity: a read past n panics instead of seeing in[n:].
		pk, perr := parse(in[:n:n])
		if errors.Is(perr, ErrTruncated) {
			continue
		}
		if pk != k || perr != err {
			t.Fatalf("%s(% x) = %v, %v; its prefix [:%d] = %v, %v; want the same or ErrTruncated", what, in, k, err, n, pk, perr)
		}
	}
}

// checkAddrs checks a key holds the outer header's addresses.
func checkAddrs(t *testing.T, p []byte, k FlowKey) {
	t.Helper()
	switch p[0] >> 4 {
	case 4:
		if !k.Is4() || k.Src().As4() != [4]byte(p[12:16]) || k.Dst().As4() != [4]byte(p[16:20]) {
			t.Fatalf("% x: key %v does not hold the IPv4 header's addresses", p, k)
		}
	case 6:
		if k.src != [16]byte(p[8:24]) || k.dst != [16]byte(p[24:40]) {
			t.Fatalf("% x: key %v does not hold the IPv6 header's addresses", p, k)
		}
	default:
		t.Fatalf("% x: version %d keyed as %v", p, p[0]>>4, k)
	}
}

// FuzzParseHeaders reads each input three ways — as an IP packet, as an
// Ethernet frame, and as an IP packet in an untagged frame — and checks
// that the header parsers fail exactly where the key parsers fail, with
// the very same error, and otherwise give the same key; that what they
// fill holds what checkHeaders requires of any parse (offsets in order
// and in the buffer, flags and ICMP fields only from a whole header and
// equal to its bytes, the payload ending where the length field says);
// that a framed packet gives the bare packet's Headers 14 bytes further
// on; and that every prefix of an input gives ErrTruncated, or the
// input's own error, or the Headers cutHeaders derives from the input's.
func FuzzParseHeaders(f *testing.F) {
	for _, c := range headersCases() {
		// Not the 70,000-byte TSO packet: the fuzzer spends its time
		// minimizing mutations of an input that long.
		if len(c.pkt) <= 4096 {
			f.Add(c.pkt)
		}
	}
	for _, c := range parseCases() {
		f.Add(c.pkt)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var h, fh Headers
		err := ParseHeaders(b, &h)
		k, kerr := ParseFlowKey(b)
		if err != kerr || h.Key != k {
			t.Fatalf("% x: ParseHeaders %v, %v; ParseFlowKey %v, %v", b, h.Key, err, k, kerr)
		}
		checkHeaders(t, "ParseHeaders", b, h, err)
		checkHeaderPrefixes(t, "ParseHeaders", ParseHeaders, b, h, err)

		ferr := ParseFrameHeaders(ethIP(b), &fh)
		if ferr != err || err == nil && fh != framed(h, ethHeaderLen) {
			t.Fatalf("% x: ParseHeaders %+v, %v; framed %+v, %v", b, h, err, fh, ferr)
		}

		err = ParseFrameHeaders(b, &fh)
		k, kerr = ParseFrame(b)
		if err != kerr || fh.Key != k {
			t.Fatalf("% x: ParseFrameHeaders %v, %v; ParseFrame %v, %v", b, fh.Key, err, k, kerr)
		}
		checkHeaders(t, "ParseFrameHeaders", b, fh, err)
		checkHeaderPrefixes(t, "ParseFrameHeaders", ParseFrameHeaders, b, fh, err)
	})
}

// checkHeaderPrefixes parses every prefix of in (a sample when in is
// long): each is ErrTruncated, or fails as in did, or gives what
// cutHeaders says in's Headers become when cut there.
func checkHeaderPrefixes(t *testing.T, what string, parse func([]byte, *Headers) error, in []byte, h Headers, err error) {
	t.Helper()
	step := 1
	if len(in) > 512 {
		step = len(in) / 256
	}
	for n := len(in) - 1; n >= 0; n -= step {
		var ph Headers
		// No spare capacity: a read past n panics instead of seeing in[n:].
		perr := parse(in[:n:n], &ph)
		switch {
		case errors.Is(perr, ErrTruncated):
		case perr != err:
			t.Fatalf("%s(% x) = %v; its prefix [:%d] = %v; want the same or ErrTruncated", what, in, err, n, perr)
		case err == nil && ph != cutHeaders(h, n):
			t.Fatalf("%s(% x) = %+v; its prefix [:%d] = %+v, want %+v", what, in, h, n, ph, cutHeaders(h, n))
		}
	}
}
