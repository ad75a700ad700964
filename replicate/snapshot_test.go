package replicate

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
)

// Flow is the tests' value: fixed-size, so Binary encodes it.
type Flow struct {
	Port   uint16
	Action uint8
	Mark   uint32
}

func key(i int) flowcache.FlowKey {
	if i%3 == 2 {
		var a [16]byte
		a[0], a[1], a[13], a[14], a[15] = 0xfd, 0, byte(i>>16), byte(i>>8), byte(i)
		return flowcache.NewFlowKey(netip.AddrFrom16(a), netip.MustParseAddr("fd00::1"), uint16(i), 443, flowcache.ProtoTCP)
	}
	return flowcache.NewFlowKey(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
		netip.AddrFrom4([4]byte{192, 0, 2, 1}), uint16(i), 80, []uint8{flowcache.ProtoTCP, flowcache.ProtoUDP}[i%2])
}

func codec(t testing.TB) Codec[Flow] {
	c, err := Binary[Flow](1)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// clock is a fake clock that tests move by hand.
type clock struct{ now time.Time }

func newClock() *clock               { return &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }
func (c *clock) Now() time.Time      { return c.now }
func (c *clock) Add(d time.Duration) { c.now = c.now.Add(d) }

func newTable(t testing.TB, limit int, clk *clock) *flowcache.Table[Flow] {
	t.Helper()
	tb, err := flowcache.New(flowcache.Config[Flow]{Limit: limit, Clock: clk.Now, Domain: reclaim.NewDomain(),
		Timeouts: []time.Duration{5 * time.Second, 300 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	return tb
}

// fill stores n flows of every kind: pairs and one-key flows, IPv4 and
// IPv6, in three classes, with states and counters, idle 0..n ms.
func fill(t testing.TB, tb *flowcache.Table[Flow], clk *clock, n int) {
	t.Helper()
	for i := range n {
		row := flowcache.DumpRow[Flow]{Key: key(i), Class: i % 3, Value: Flow{Port: uint16(i), Action: uint8(i % 5), Mark: uint32(i * 7)},
			LastSeen: clk.Now().Add(-time.Duration(i%1000) * time.Millisecond), Packets: uint64(i), Bytes: uint64(i * 100), Hits: uint64(i%10) * 64, State: uint32(i * 13)}
		if i%4 == 0 {
			row.Reply, row.Paired = key(i).Reverse(), true
		}
		if _, _, err := tb.Restore(row); err != nil {
			t.Fatal(err)
		}
	}
}

// sameFlows compares two dumps, with b's last-seen times shifted by d.
func sameFlows(a, b []flowcache.DumpRow[Flow], d time.Duration) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d flows, want %d", len(b), len(a))
	}
	for i := range a {
		x, y := a[i], b[i]
		y.LastSeen = y.LastSeen.Add(-d)
		if !x.LastSeen.Equal(y.LastSeen) {
			return fmt.Errorf("flow %v: last seen %v, want %v", x.Key, y.LastSeen, x.LastSeen)
		}
		x.LastSeen, y.LastSeen = time.Time{}, time.Time{}
		if x != y {
			return fmt.Errorf("flow %d:\n got %+v\nwant %+v", i, y, x)
		}
	}
	return nil
}

func TestSnapshotRoundTrip(t *testing.T) {
	clk := newClock()
	src := newTable(t, 5000, clk)
	fill(t, src, clk, 3000)
	var buf bytes.Buffer
	info, err := WriteSnapshot(&buf, src, codec(t), clk.Now())
	if err != nil || info.Flows != 3000 || info.Bytes != int64(buf.Len()) {
		t.Fatalf("WriteSnapshot: %+v, %v (wrote %d bytes)", info, err, buf.Len())
	}
	// Restored an hour later, on a host whose clock says so.
	clk2 := newClock()
	clk2.Add(time.Hour)
	dst := newTable(t, 5000, clk2)
	rinfo, err := RestoreSnapshot(bytes.NewReader(buf.Bytes()), dst, codec(t), clk2.Now())
	if err != nil || rinfo.Flows != 3000 || rinfo.Bytes != info.Bytes || !rinfo.Written.Equal(clk.Now()) {
		t.Fatalf("RestoreSnapshot: %+v, %v; wrote %+v", rinfo, err, info)
	}
	if err := sameFlows(src.Dump(), dst.Dump(), time.Hour); err != nil {
		t.Fatal(err)
	}
	if st := dst.Stats(); st.Pairs != src.Stats().Pairs {
		t.Errorf("%d pairs restored, want %d", st.Pairs, src.Stats().Pairs)
	}
}

// TestSnapshotKeepsIdleTime: the example: a flow idle 50 s of its
// 60 s when the snapshot is written expires 10 s after the restore,
// however long the restart took.
func TestSnapshotKeepsIdleTime(t *testing.T) {
	clk := newClock()
	src := newTable(t, 10, clk)
	if _, err := src.Insert(key(1), Flow{Port: 1}); err != nil {
		t.Fatal(err)
	}
	clk.Add(50 * time.Second)
	src.Expire(clk.Now())
	var buf bytes.Buffer
	if _, err := WriteSnapshot(&buf, src, codec(t), clk.Now()); err != nil {
		t.Fatal(err)
	}
	clk.Add(7 * time.Minute) // the restart
	dst := newTable(t, 10, clk)
	if _, err := RestoreSnapshot(&buf, dst, codec(t), clk.Now()); err != nil {
		t.Fatal(err)
	}
	if r := dst.Expire(clk.Now().Add(9900 * time.Millisecond)); r.Expired != 0 {
		t.Fatalf("expired 9.9 s after the restore")
	}
	if r := dst.Expire(clk.Now().Add(10 * time.Second)); r.Expired != 1 {
		t.Fatalf("not expired 10 s after the restore")
	}
}

// TestSnapshotDamageRestoresNothing: a snapshot cut at any byte, or with
// any one byte changed, is refused with a typed error and restores no flow.
func TestSnapshotDamageRestoresNothing(t *testing.T) {
	clk := newClock()
	src := newTable(t, 100, clk)
	fill(t, src, clk, 20)
	var buf bytes.Buffer
	if _, err := WriteSnapshot(&buf, src, codec(t), clk.Now()); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	dst := newTable(t, 100, clk)
	for n := range len(good) {
		if _, err := RestoreSnapshot(bytes.NewReader(good[:n]), dst, codec(t), clk.Now()); !errors.Is(err, ErrTruncated) && !(n > 0 && errors.Is(err, ErrCorrupt)) {
			t.Fatalf("cut at %d of %d bytes: %v, want ErrTruncated", n, len(good), err)
		}
	}
	bad := make([]byte, len(good))
	for i := range good {
		copy(bad, good)
		bad[i] ^= 0x20
		_, err := RestoreSnapshot(bytes.NewReader(bad), dst, codec(t), clk.Now())
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) && !errors.Is(err, ErrValue) {
			t.Fatalf("byte %d changed: %v, want ErrCorrupt, ErrVersion or ErrValue", i, err)
		}
	}
	if _, err := RestoreSnapshot(bytes.NewReader(append(good, 0)), dst, codec(t), clk.Now()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a byte after the end: %v, want ErrCorrupt", err)
	}
	if dst.Len() != 0 || dst.Stats().Inserts != 0 {
		t.Fatalf("damaged snapshots restored %d flows", dst.Len())
	}
}

// TestSnapshotVersionMismatch: a reader whose codec has another value
// version refuses the snapshot with a *VersionError, touching nothing.
func TestSnapshotVersionMismatch(t *testing.T) {
	clk := newClock()
	src := newTable(t, 100, clk)
	fill(t, src, clk, 5)
	var buf bytes.Buffer
	if _, err := WriteSnapshot(&buf, src, codec(t), clk.Now()); err != nil {
		t.Fatal(err)
	}
	v2, _ := Binary[Flow](2)
	dst := newTable(t, 100, clk)
	_, err := RestoreSnapshot(&buf, dst, v2, clk.Now())
	var ve *VersionError
	if !errors.As(err, &ve) || ve.What != "value" || ve.Got != 1 || ve.Want != 2 || !errors.Is(err, ErrVersion) {
		t.Fatalf("%v, want a value VersionError 1 vs 2", err)
	}
	if dst.Len() != 0 {
		t.Fatal("restored flows")
	}
}

// TestSnapshotFullRollsBack: a table that cannot hold the snapshot ends
// as it was, and the error says why.
func TestSnapshotFullRollsBack(t *testing.T) {
	clk := newClock()
	src := newTable(t, 100, clk)
	fill(t, src, clk, 50)
	var buf bytes.Buffer
	if _, err := WriteSnapshot(&buf, src, codec(t), clk.Now()); err != nil {
		t.Fatal(err)
	}
	dst := newTable(t, 30, clk)
	if _, err := RestoreSnapshot(&buf, dst, codec(t), clk.Now()); !errors.Is(err, flowcache.ErrFull) {
		t.Fatalf("%v, want ErrFull", err)
	}
	if dst.Len() != 0 {
		t.Fatalf("%d flows left after a failed restore", dst.Len())
	}
}

// failingWriter fails after n bytes.
type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		k := w.n
		w.n = 0
		return k, errors.New("disk full")
	}
	w.n -= len(p)
	return len(p), nil
}

func TestWriteSnapshotReportsWriteErrors(t *testing.T) {
	clk := newClock()
	src := newTable(t, 100, clk)
	fill(t, src, clk, 50)
	for _, n := range []int{0, 10, 1000} {
		if _, err := WriteSnapshot(&failingWriter{n: n}, src, codec(t), clk.Now()); err == nil {
			t.Errorf("a writer failing after %d bytes: no error", n)
		}
	}
}
