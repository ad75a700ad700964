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
		if k.fields().src != [16]byte(p[8:24]) || k.fields().dst != [16]byte(p[24:40]) {
			t.Fatalf("% x: key %v does not hold the IPv6 header's addresses", p, k)
		}
	default:
		t.Fatalf("% x: version %d keyed as %v", p, p[0]>>4, k)
	}
}
