package replicate

import (
	"errors"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
)

func TestBinaryRefusesUnsizedValues(t *testing.T) {
	if _, err := Binary[string](1); err == nil {
		t.Error("Binary[string]: no error")
	}
	if _, err := Binary[struct{ B []byte }](1); err == nil {
		t.Error("Binary of a struct with a slice: no error")
	}
	if _, err := Binary[[4]uint32](1); err != nil {
		t.Errorf("Binary[[4]uint32]: %v", err)
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	c := codec(t)
	v := Flow{Port: 9, Action: 2, Mark: 0xfeedface}
	b := c.Append([]byte{1, 2}, &v)
	var got Flow
	if err := c.Decode(b[2:], &got); err != nil || got != v {
		t.Fatalf("Decode: %+v, %v; want %+v", got, err, v)
	}
	got = Flow{Port: 77}
	if err := c.Decode(b[3:], &got); !errors.Is(err, ErrValue) || got.Port != 77 {
		t.Fatalf("short value: %v, value %+v: want ErrValue and the value untouched", err, got)
	}
}

// refusing is a codec whose Decode refuses or panics on some values.
type refusing struct{ panics bool }

func (refusing) Version() uint8                  { return 1 }
func (refusing) Append(b []byte, v *Flow) []byte { return append(b, byte(v.Port)) }
func (c refusing) Decode(b []byte, v *Flow) error {
	if c.panics {
		panic("bad value")
	}
	return errors.New("no")
}

func TestRecordRoundTrip(t *testing.T) {
	c := codec(t)
	cases := map[string]record[Flow]{
		"pair": {op: opFlow, epoch: 3, seq: 1 << 40, key: key(2), reply: key(2).Reverse(), paired: true, class: 15, state: 1<<32 - 1,
			pkts: 1 << 60, bytes: 5, hits: 64, idle: 1234 * time.Millisecond, value: Flow{Port: 1, Mark: 2}},
		"one key": {op: opFlow, key: key(1), value: Flow{Port: 3}},
		"gone":    {op: opGone, cause: flowcache.Evicted, epoch: 1, seq: 2, key: key(5), reply: key(6), paired: true},
	}
	for name, r := range cases {
		b := appendRecord(nil, c, &r)
		var got record[Flow]
		if err := decodeRecord(b, c, &got); err != nil || got != r {
			t.Errorf("%s: %+v, %v; want %+v", name, got, err, r)
		}
	}
	r := cases["pair"]
	b := appendRecord(nil, refusing{}, &r)
	for _, dec := range []refusing{{}, {panics: true}} {
		var got record[Flow]
		if err := decodeRecord(b, dec, &got); !errors.Is(err, ErrValue) {
			t.Errorf("refusing codec (panics %v): %v, want ErrValue", dec.panics, err)
		}
	}
	b[0] = 9
	if err := decodeRecord(b, refusing{}, new(record[Flow])); !errors.Is(err, ErrVersion) {
		t.Errorf("record version 9: %v, want ErrVersion", err)
	}
}

// A long value's length takes more than one byte.
type bigCodec struct{}

func (bigCodec) Version() uint8 { return 7 }
func (bigCodec) Append(b []byte, v *Flow) []byte {
	for range 300 {
		b = append(b, byte(v.Port))
	}
	return b
}
func (bigCodec) Decode(b []byte, v *Flow) error {
	if len(b) != 300 {
		return ErrValue
	}
	v.Port = uint16(b[299])
	return nil
}

func TestRecordLongValue(t *testing.T) {
	r := record[Flow]{op: opFlow, key: key(1), value: Flow{Port: 42}}
	b := appendRecord(nil, bigCodec{}, &r)
	var got record[Flow]
	if err := decodeRecord(b, bigCodec{}, &got); err != nil || got.value.Port != 42 {
		t.Fatalf("%+v, %v", got, err)
	}
}

// FuzzDecodeRecord: any bytes decode to a record or a typed error, never
// a panic, and a record that decodes encodes back to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	c, _ := Binary[Flow](1)
	for _, r := range []record[Flow]{
		{op: opFlow, epoch: 1, seq: 9, key: key(2), reply: key(3), paired: true, class: 2, state: 7, pkts: 1, idle: time.Second},
		{op: opGone, cause: flowcache.Expired, key: key(4)},
	} {
		f.Add(appendRecord(nil, c, &r))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var r record[Flow]
		err := decodeRecord(b, c, &r)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) && !errors.Is(err, ErrValue) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		var again record[Flow]
		if err := decodeRecord(appendRecord(nil, c, &r), c, &again); err != nil || again != r {
			t.Fatalf("re-encoded: %+v, %v; want %+v", again, err, r)
		}
	})
}
