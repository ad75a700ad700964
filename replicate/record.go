package replicate

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/flowcache/flowcache/flowcache"
)

// recordVersion is the format of one record, in snapshots and on the
// stream alike. A reader refuses any other with a *VersionError.
const recordVersion = 1

// op is what a record says of its flow.
type op uint8

const (
	opFlow op = 1 // the flow as it is now: new, or changed
	opGone op = 2 // the flow left the table, for its cause
	opSync op = 3 // a resync's end: its epoch and first sequence (stream.go)
)

// record is one flow's record. A snapshot's records are opFlow with
// epoch and seq 0; the stream's carry the publisher's epoch and sequence.
//
//	byte 0  record format version (recordVersion)
//	byte 1  value format version (Codec.Version)
//	byte 2  op << 4 | paired
//	byte 3  cause (opGone), else 0
//	uvarint epoch, uvarint seq
//	key, and reply if paired: family (4 or 6), src, dst, sport, dport (big-endian), proto
//	opFlow only:
//	  class (1 byte), state (4 bytes, little-endian),
//	  uvarint packets, bytes, hits, idle (ms before the record's time)
//	  uvarint len(value), value (Codec.Append)
type record[V any] struct {
	op     op
	cause  flowcache.Cause
	epoch  uint64
	seq    uint64
	key    flowcache.FlowKey
	reply  flowcache.FlowKey
	paired bool
	class  uint8
	state  uint32
	pkts   uint64
	bytes  uint64
	hits   uint64
	idle   time.Duration // ms resolution
	value  V
}

// fromEntry fills r from a live flow, its idle time taken at now. Its
// value is copied: an entry's value is fixed, so the copy is the flow's.
func (r *record[V]) fromEntry(e *flowcache.Entry[V], now time.Time) {
	r.op = opFlow
	r.key = e.Key()
	r.reply, r.paired = e.Reply()
	r.class = uint8(e.Class())
	r.state = e.State()
	r.pkts, r.bytes, r.hits = e.Packets(), e.Bytes(), e.Hits()
	r.idle = max(now.Sub(e.LastSeen()), 0)
	r.value = *e.Value()
}

// row is r as Table.Restore takes it, last seen idle before now.
func (r *record[V]) row(now time.Time) flowcache.DumpRow[V] {
	return flowcache.DumpRow[V]{
		Key: r.key, Reply: r.reply, Paired: r.paired, Class: int(r.class), Value: r.value,
		Hits: r.hits, LastSeen: now.Add(-r.idle).Truncate(time.Millisecond), Packets: r.pkts, Bytes: r.bytes, State: r.state,
	}
}

func appendRecord[V any](b []byte, c Codec[V], r *record[V]) []byte {
	flags := byte(r.op) << 4
	if r.paired {
		flags |= 1
	}
	var cause byte
	if r.op == opGone {
		cause = byte(r.cause)
	}
	b = append(b, recordVersion, c.Version(), flags, cause)
	b = binary.AppendUvarint(b, r.epoch)
	b = binary.AppendUvarint(b, r.seq)
	b = appendKey(b, &r.key)
	if r.paired {
		b = appendKey(b, &r.reply)
	}
	if r.op != opFlow {
		return b
	}
	b = append(b, r.class)
	b = binary.LittleEndian.AppendUint32(b, r.state)
	b = binary.AppendUvarint(b, r.pkts)
	b = binary.AppendUvarint(b, r.bytes)
	b = binary.AppendUvarint(b, r.hits)
	b = binary.AppendUvarint(b, uint64(r.idle.Milliseconds()))
	// The value's length first, so a reader can skip a value it cannot
	// decode and say which flow it was.
	at := len(b)
	b = append(b, 0) // the length, in one byte while the value is short
	b = c.Append(b, &r.value)
	n := uint64(len(b) - at - 1)
	if n < 0x80 {
		b[at] = byte(n)
		return b
	}
	var lb [binary.MaxVarintLen64]byte
	ln := binary.PutUvarint(lb[:], n)
	b = append(b, lb[1:ln]...) // grow by the extra length bytes
	copy(b[at+ln:], b[at+1:len(b)-(ln-1)])
	copy(b[at:], lb[:ln])
	return b
}

func appendKey(b []byte, k *flowcache.FlowKey) []byte {
	src, dst := k.Src(), k.Dst()
	if k.Is4() {
		b = append(b, 4)
		s, d := src.As4(), dst.As4()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	} else {
		b = append(b, 6)
		s, d := src.As16(), dst.As16()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, k.SrcPort())
	b = binary.BigEndian.AppendUint16(b, k.DstPort())
	return append(b, k.Proto())
}

// decoder reads a record's fields, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: record: bad %s", ErrCorrupt, what)
	}
}

func (d *decoder) take(n int, what string) []byte {
	if d.err != nil || n < 0 || len(d.b) < n {
		d.fail(what)
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) byte1(what string) byte {
	if p := d.take(1, what); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) key(what string) flowcache.FlowKey {
	var n int
	switch d.byte1(what) {
	case 4:
		n = 4
	case 6:
		n = 16
	default:
		d.fail(what)
		return flowcache.FlowKey{}
	}
	p := d.take(2*n+5, what)
	if p == nil {
		return flowcache.FlowKey{}
	}
	var src, dst netip.Addr
	if n == 4 {
		src, dst = netip.AddrFrom4([4]byte(p[:4])), netip.AddrFrom4([4]byte(p[4:8]))
	} else {
		src, dst = netip.AddrFrom16([16]byte(p[:16])), netip.AddrFrom16([16]byte(p[16:32]))
		if src.Is4In6() || dst.Is4In6() {
			// Would read back as an IPv4 key: not what a writer writes.
			d.fail(what)
		}
	}
	p = p[2*n:]
	return flowcache.NewFlowKey(src, dst, binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:]), p[4])
}

// decodeRecord parses one whole record. It never panics: a record that
// does not parse is ErrCorrupt, an unknown format or value version a
// *VersionError, and a value the codec refuses ErrValue.
func decodeRecord[V any](b []byte, c Codec[V], r *record[V]) error {
	if len(b) < 2 {
		return fmt.Errorf("%w: record of %d bytes", ErrCorrupt, len(b))
	}
	if b[0] != recordVersion {
		return &VersionError{What: "record", Got: int(b[0]), Want: recordVersion}
	}
	if len(b) >= 4 && op(b[2]>>4) == opSync {
		// No flow, no value: the marker's epoch and sequence only.
		d := decoder{b: b[4:]}
		*r = record[V]{op: opSync}
		r.epoch = d.uvarint("epoch")
		r.seq = d.uvarint("sequence")
		if b[1] != 0 || b[2] != byte(opSync)<<4 || b[3] != 0 || d.err == nil && len(d.b) != 0 {
			d.fail("sync marker")
		}
		return d.err
	}
	if b[1] != c.Version() {
		return &VersionError{What: "value", Got: int(b[1]), Want: int(c.Version())}
	}
	d := decoder{b: b[2:]}
	flags := d.byte1("flags")
	cause := d.byte1("cause")
	*r = record[V]{op: op(flags >> 4), paired: flags&1 != 0, cause: flowcache.Cause(cause)}
	if flags&0x0e != 0 || (r.op != opFlow && r.op != opGone) {
		d.fail("flags")
	}
	if r.op == opGone && (r.cause < flowcache.Expired || r.cause > flowcache.Cleared) || r.op == opFlow && r.cause != 0 {
		d.fail("cause")
	}
	r.epoch = d.uvarint("epoch")
	r.seq = d.uvarint("sequence")
	r.key = d.key("key")
	if r.paired {
		r.reply = d.key("reply key")
	}
	if r.op == opFlow && d.err == nil {
		r.class = d.byte1("class")
		if r.class >= flowcache.MaxClasses {
			d.fail("class")
		}
		if p := d.take(4, "state"); p != nil {
			r.state = binary.LittleEndian.Uint32(p)
		}
		r.pkts = d.uvarint("packets")
		r.bytes = d.uvarint("bytes")
		r.hits = d.uvarint("hits")
		idle := d.uvarint("idle time")
		if idle > uint64(100*365*24*time.Hour/time.Millisecond) {
			d.fail("idle time")
		}
		r.idle = time.Duration(idle) * time.Millisecond
		n := d.uvarint("value length")
		v := d.take(int(min(n, uint64(len(d.b)+1))), "value")
		if d.err == nil {
			if err := decodeValue(c, v, &r.value); err != nil {
				return fmt.Errorf("flow %v: %w", r.key, err)
			}
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("length")
	}
	return d.err
}

// decodeValue runs the program's codec, which must not panic; if it does,
// the record is refused like any value that does not decode.
func decodeValue[V any](c Codec[V], b []byte, v *V) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: codec panicked: %v", ErrValue, p)
		}
	}()
	if err := c.Decode(b, v); err != nil {
		if !isValueErr(err) {
			err = fmt.Errorf("%w: %w", ErrValue, err)
		}
		return err
	}
	return nil
}
