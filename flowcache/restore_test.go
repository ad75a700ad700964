package flowcache

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// TestRestoreKeepsAge: a flow restored 50 s idle in a class of 60 s
// expires at the pass 10 s later, not before; one restored in class 1
// expires by that class's timeout (the pass reads the slot's class byte).
func TestRestoreKeepsAge(t *testing.T) {
	clk := newFakeClock()
	tb := newTable(t, Config[int]{Limit: 100, TTL: 60 * time.Second, Timeouts: []time.Duration{20 * time.Second}, Clock: clk.Now})
	now := clk.Now()
	tb.Expire(now)
	for i, c := range []int{0, 1} {
		row := DumpRow[int]{Key: testKey(i), Class: c, Value: i, LastSeen: now.Add(-50 * time.Second)}
		if c == 1 {
			row.LastSeen = now.Add(-10 * time.Second)
		}
		if _, fresh, err := tb.Restore(row); err != nil || !fresh {
			t.Fatalf("Restore(%d): fresh %v, %v", i, fresh, err)
		}
	}
	if r := tb.Expire(now.Add(9999 * time.Millisecond)); r.Expired != 0 {
		t.Fatalf("expired %d flows 9.999 s after the restore, want 0", r.Expired)
	}
	if r := tb.Expire(now.Add(10 * time.Second)); r.Expired != 2 {
		t.Fatalf("expired %d flows 10 s after the restore, want 2 (one per class)", r.Expired)
	}
}

// TestRestoreCarriesEverything: what Dump shows of a restored flow is
// what was restored, pairs and one-key flows alike.
func TestRestoreCarriesEverything(t *testing.T) {
	clk := newFakeClock()
	tb := newTable(t, Config[int]{Limit: 100, Timeouts: []time.Duration{time.Second, 2 * time.Second}, Clock: clk.Now})
	seen := clk.Now().Add(-3 * time.Second).Truncate(time.Millisecond)
	want := []DumpRow[int]{
		{Key: testKey(1), Class: 2, Value: 11, Hits: 640, LastSeen: seen, Packets: 7, Bytes: 700, State: 0xdeadbeef},
		{Key: testKey(2), Reply: testKey(2).Reverse(), Paired: true, Class: 1, Value: 22, Hits: 64, LastSeen: seen.Add(time.Second), Packets: 1, Bytes: 60, State: 3},
	}
	for _, r := range want {
		if _, _, err := tb.Restore(r); err != nil {
			t.Fatal(err)
		}
	}
	slices.SortFunc(want, func(a, b DumpRow[int]) int { return a.Key.Compare(b.Key) })
	got := tb.Dump()
	if len(got) != len(want) {
		t.Fatalf("Dump has %d rows, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("row %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	if e, ok := tb.Get(testKey(2).Reverse()); !ok || *e.Value() != 22 {
		t.Errorf("the pair's reply key does not find it")
	}
	if st := tb.Stats(); st.Live != 2 || st.Pairs != 1 || st.Inserts != 2 {
		t.Errorf("stats %v: want 2 live, 1 pair, 2 inserts", st)
	}
}

// TestRestoreUpdatesInPlace: restoring a flow with the same keys updates
// it (state, class, age, counters) and keeps its value and its identity:
// no flow leaves, nothing is inserted.
func TestRestoreUpdatesInPlace(t *testing.T) {
	clk := newFakeClock()
	var causes causeLog
	tb := newTable(t, Config[int]{Limit: 10, Timeouts: []time.Duration{time.Second}, Clock: clk.Now, OnRemove: causes.fn})
	now := clk.Now()
	e, fresh, err := tb.Restore(DumpRow[int]{Key: testKey(1), Reply: testKey(3), Paired: true, Value: 1, LastSeen: now, State: 1})
	if err != nil || !fresh {
		t.Fatal(fresh, err)
	}
	e2, fresh, err := tb.Restore(DumpRow[int]{Key: testKey(1), Reply: testKey(3), Paired: true, Value: 99, Class: 1, LastSeen: now.Add(-time.Second), State: 2, Packets: 5})
	if err != nil || fresh || e2 != e {
		t.Fatalf("second Restore: entry %p (first %p), fresh %v, %v: want the same flow, updated", e2, e, fresh, err)
	}
	if *e.Value() != 1 || e.State() != 2 || e.Class() != 1 || e.Packets() != 5 || !e.LastSeen().Equal(now.Add(-time.Second)) {
		t.Errorf("after the update: value %d state %d class %d packets %d last seen %v", *e.Value(), e.State(), e.Class(), e.Packets(), e.LastSeen())
	}
	st := tb.Stats()
	if st.Inserts != 1 || st.Replaced != 0 || st.Live != 1 {
		t.Errorf("stats %v: want 1 insert, none replaced", st)
	}
	// The class moved the slot's class byte too: class 1's timeout (1 s)
	// expires it at the next pass.
	if r := tb.Expire(now); r.Expired != 1 {
		t.Errorf("pass expired %d, want the flow in class 1", r.Expired)
	}
}

// TestRestoreReplacesOtherFlows: a flow stored under one of the keys with
// other keys leaves whole, with cause Replaced.
func TestRestoreReplacesOtherFlows(t *testing.T) {
	clk := newFakeClock()
	var causes causeLog
	d := newTable(t, Config[int]{Limit: 10, Clock: clk.Now, OnRemove: causes.fn})
	if _, err := d.InsertPair(testKey(1), testKey(2), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Insert(testKey(3), 3); err != nil {
		t.Fatal(err)
	}
	if _, fresh, err := d.Restore(DumpRow[int]{Key: testKey(1), Reply: testKey(3), Paired: true, Value: 13, LastSeen: clk.Now()}); err != nil || !fresh {
		t.Fatal(fresh, err)
	}
	if _, ok := d.Get(testKey(2)); ok {
		t.Errorf("the replaced pair's other key is still found")
	}
	st := d.Stats()
	if st.Live != 1 || st.Replaced != 2 || st.Pairs != 1 {
		t.Errorf("stats %v: want 1 live pair, 2 replaced", st)
	}
}

// TestRestoreErrorsChangeNothing: full, closed, a class the table lacks
// and a zero last-seen time are typed errors, and the table is as before.
func TestRestoreErrorsChangeNothing(t *testing.T) {
	clk := newFakeClock()
	tb := newTable(t, Config[int]{Limit: 1, Clock: clk.Now, Evict: func(*Entry[int]) bool { return true }})
	if _, err := tb.Insert(testKey(1), 1); err != nil {
		t.Fatal(err)
	}
	before := tb.Dump()
	ok := DumpRow[int]{Key: testKey(2), Value: 2, LastSeen: clk.Now()}
	bad := ok
	bad.Class = 1
	noTime := ok
	noTime.LastSeen = time.Time{}
	for _, c := range []struct {
		name string
		row  DumpRow[int]
		want error
	}{
		{"full, never evicts", ok, ErrFull},
		{"no such class", bad, ErrInvalidFlow},
		{"negative class", DumpRow[int]{Key: testKey(2), Class: -1, LastSeen: clk.Now()}, ErrInvalidFlow},
		{"no last seen", noTime, ErrInvalidFlow},
	} {
		if _, _, err := tb.Restore(c.row); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	after := tb.Dump()
	if len(after) != 1 || after[0] != before[0] {
		t.Errorf("the table changed: %+v, was %+v", after, before)
	}
	if st := tb.Stats(); st.Inserts != 1 || st.Evicted != 0 || st.FullRejections != 1 {
		t.Errorf("stats %v: want 1 insert, 0 evicted, 1 full rejection", st)
	}
	tb.Close()
	if _, _, err := tb.Restore(ok); !errors.Is(err, ErrClosed) {
		t.Errorf("closed: %v, want ErrClosed", err)
	}
}
