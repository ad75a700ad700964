package flowcache

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowcache/flowcache/reclaim"
)

// The table runs the program's make, Config.Evict and Config.Class with
// shards locked. A panic in any of them, at any point of any insert path,
// must leave the table exactly as it was, and usable; a call back into the
// table from inside them must panic with the rule instead of waiting for
// itself.

// insertPath is one way to insert a flow, with a make where it has one.
type insertPath struct {
	name    string
	pair    bool
	hasMake bool
	do      func(tb *Table[int], k, r FlowKey, mk func() int)
}

var insertPaths = []insertPath{
	{name: "Insert", do: func(tb *Table[int], k, _ FlowKey, mk func() int) { tb.Insert(k, mk()) }},
	{name: "InsertPair", pair: true, do: func(tb *Table[int], k, r FlowKey, mk func() int) { tb.InsertPair(k, r, mk()) }},
	{name: "GetOrInsert", hasMake: true, do: func(tb *Table[int], k, _ FlowKey, mk func() int) { tb.GetOrInsert(k, mk) }},
	{name: "GetOrInsertPair", pair: true, hasMake: true, do: func(tb *Table[int], k, r FlowKey, mk func() int) {
		tb.GetOrInsertPair(k, r, mk)
	}},
	{name: "GetOrInsertBatch", hasMake: true, do: func(tb *Table[int], k, _ FlowKey, mk func() int) {
		tb.GetOrInsertBatch([]FlowKey{testKey(0), k}, func(int) int { return mk() }, make([]*Entry[int], 2))
	}},
	{name: "GetOrInsertPairBatch", pair: true, hasMake: true, do: func(tb *Table[int], k, r FlowKey, mk func() int) {
		tb.GetOrInsertPairBatch([]FlowKey{testKey(0), k}, func(int) (FlowKey, int, bool) { return r, mk(), true },
			make([]*Entry[int], 2), make([]Outcome, 2))
	}},
	{name: "GetOrInsertPairBatch/one key", hasMake: true, do: func(tb *Table[int], k, _ FlowKey, mk func() int) {
		tb.GetOrInsertPairBatch([]FlowKey{k}, func(int) (FlowKey, int, bool) { return k, mk(), true },
			make([]*Entry[int], 1), nil)
	}},
}

// tableSnapshot is everything about a table a panicking insert must not
// change: every flow (Dump), and the counts of flows, causes and records.
type tableSnapshot struct {
	rows   []DumpRow[int]
	counts tableCounts
}

type tableCounts struct {
	live, pairs                               int
	inserts, replaced, removed, evicted, full uint64
	recordsLive                               int64
}

func snapshotOf(tb *Table[int]) tableSnapshot {
	st := tb.Stats()
	return tableSnapshot{tb.Dump(), tableCounts{st.Live, st.Pairs, st.Inserts, st.Replaced, st.Removed, st.Evicted, st.FullRejections, st.RecordsLive}}
}

func (a tableSnapshot) diff(b tableSnapshot) string {
	if !slices.Equal(a.rows, b.rows) {
		return fmt.Sprintf("flows before %v, after %v", a.rows, b.rows)
	}
	if a.counts != b.counts {
		return fmt.Sprintf("before %+v, after %+v", a.counts, b.counts)
	}
	return ""
}

// checkUnchanged checks that tb is as before was taken: the same flows and
// counts, every record named by a slot (no orphan), no shard left locked
// or marked busy, and no OnRemove run.
func checkUnchanged(t *testing.T, tb *Table[int], before tableSnapshot, d *reclaim.Domain, log *causeLog) {
	t.Helper()
	after := snapshotOf(tb)
	if d := before.diff(after); d != "" {
		t.Fatalf("the table changed: %s", d)
	}
	// A pair holds two records, a one-key flow one: more would be a
	// record no slot names, which a later evacuation trips on.
	if want := int64(after.counts.live + after.counts.pairs); after.counts.recordsLive != want {
		t.Fatalf("%d live records for %d flows (%d pairs): an orphan record", after.counts.recordsLive, after.counts.live, after.counts.pairs)
	}
	for i := range tb.shards {
		s := &tb.shards[i]
		if !s.TryLock() {
			t.Fatalf("shard %d left locked", i)
		}
		s.Unlock()
	}
	d.Synchronize()
	if n := log.total(); n != 0 {
		t.Fatalf("%d OnRemove calls: a flow left", n)
	}
}

// checkUsable shows the table still works: a full pass, a compaction that
// moves every flow, an insert that evicts, and Close, within 5 s.
func checkUsable(t *testing.T, tb *Table[int]) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		tb.Expire(time.Now())
		tb.CompactAll()
		if _, err := tb.Insert(testKey(1000), 1000); err != nil {
			done <- err
			return
		}
		done <- tb.Close()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the table blocked after the panic: a shard was left locked")
	}
}

// TestPanickingCallbackChangesNothing: make, Config.Class and
// Config.Evict, panicking on every insert path, with room and at the
// limit (where the insert has chosen a victim to evict), leave the table
// exactly as it was. It used not to for Config.Class: it ran after the
// unit of the limit was reserved (lost for good) or after the victim was
// unlinked (its OnRemove lost), and could leave an orphan record.
func TestPanickingCallbackChangesNothing(t *testing.T) {
	const limit = 16
	for _, path := range insertPaths {
		for _, cb := range []string{"make", "Class", "Evict"} {
			if cb == "make" && !path.hasMake {
				continue
			}
			for _, full := range []bool{false, true} {
				if cb == "Evict" && !full {
					continue // Evict runs only at the limit
				}
				name := fmt.Sprintf("%s/%s/full=%v", path.name, cb, full)
				t.Run(name, func(t *testing.T) {
					var boom atomic.Bool
					var log causeLog
					d := reclaim.NewDomain()
					tb := newTable(t, Config[int]{
						Limit: limit, Shards: 2, Seed: 7, Domain: d, OnRemove: log.fn,
						Timeouts: []time.Duration{time.Hour},
						Class: func(v *int) int {
							if cb == "Class" && boom.Load() {
								panic("class")
							}
							return 1
						},
						Evict: func(*Entry[int]) bool {
							if cb == "Evict" && boom.Load() {
								panic("evict")
							}
							return true
						},
					})
					n := limit / 2
					if full {
						n = limit
					}
					for i := range n { // pairs, many across shards
						if _, err := tb.InsertPair(testKey(2*i+2), testKey(2*i+3), i); err != nil {
							t.Fatal(err)
						}
					}
					before := snapshotOf(tb)
					boom.Store(true)
					var got any
					func() {
						defer func() { got = recover() }()
						path.do(tb, testKey(500), testKey(501), func() int {
							if cb == "make" {
								panic("make")
							}
							return 99
						})
					}()
					if got == nil {
						t.Fatalf("the %s panic did not reach the caller", cb)
					}
					checkUnchanged(t, tb, before, d, &log)
					boom.Store(false)
					checkUsable(t, tb)
				})
			}
		}
	}
}

// TestPanickingEvictWithAVictimsLockHeld: Evict may approve a pair whose
// reply key lies in another shard (whose lock the insert then holds) and
// panic on a later, idler candidate: that lock must go too.
func TestPanickingEvictWithAVictimsLockHeld(t *testing.T) {
	const limit = 32
	seen := 0
	for attempt := 0; attempt < 50 && seen < 3; attempt++ {
		var calls atomic.Int64
		var log causeLog
		d := reclaim.NewDomain()
		clk := newFakeClock()
		tb := newTable(t, Config[int]{
			Limit: limit, Shards: 2, Domain: d, OnRemove: log.fn, Clock: clk.Now,
			Evict: func(e *Entry[int]) bool {
				if calls.Add(1) >= 2 {
					panic("evict")
				}
				_, paired := e.Reply()
				return paired
			},
		})
		base := 1000 * attempt
		for i := range limit {
			if _, err := tb.InsertPair(testKey(base+2*i), testKey(base+2*i+1), i); err != nil {
				t.Fatal(err)
			}
			tb.Expire(clk.Advance(time.Second)) // each flow a second younger than the one before
		}
		before := snapshotOf(tb)
		var got any
		func() {
			defer func() { got = recover() }()
			tb.Insert(testKey(base+900), 99)
		}()
		if got == nil {
			continue // Evict ran once: the first candidate was the idlest
		}
		seen++
		checkUnchanged(t, tb, before, d, &log)
		calls.Store(-1 << 30)
		checkUsable(t, tb)
	}
	if seen == 0 {
		t.Fatal("Evict never ran on a second candidate")
	}
}

// TestCallbackCallingTablePanics: make, Config.Evict and Config.Class
// calling the table on a shard their step holds panic with the rule
// instead of deadlocking, and the table is left as it was and usable.
// Without the check each case waits for itself forever.
func TestCallbackCallingTablePanics(t *testing.T) {
	calls := []struct {
		name string
		call func(tb *Table[int], k FlowKey)
	}{
		{"Insert", func(tb *Table[int], k FlowKey) { tb.Insert(k, 7) }},
		{"Remove", func(tb *Table[int], k FlowKey) { tb.Remove(k) }},
		{"Range", func(tb *Table[int], _ FlowKey) { tb.Range(func(*Entry[int]) bool { return true }) }},
	}
	for _, path := range insertPaths {
		for _, cb := range []string{"make", "Class", "Evict"} {
			if cb == "make" && !path.hasMake {
				continue
			}
			for _, c := range calls {
				t.Run(path.name+"/"+cb+"/"+c.name, func(t *testing.T) {
					var armed atomic.Bool
					var log causeLog
					d := reclaim.NewDomain()
					var tb *Table[int]
					k := testKey(500)
					reenter := func() {
						if armed.Load() {
							c.call(tb, k) // k's shard is held by the step
						}
					}
					tb = newTable(t, Config[int]{
						Limit: 8, Shards: 1, Domain: d, OnRemove: log.fn,
						Class: func(*int) int {
							if cb == "Class" {
								reenter()
							}
							return 0
						},
						Evict: func(*Entry[int]) bool {
							if cb == "Evict" {
								reenter()
							}
							return true
						},
					})
					n := 4
					if cb == "Evict" {
						n = 8
					}
					for i := range n {
						tb.Insert(testKey(i+1), i)
					}
					before := snapshotOf(tb)
					armed.Store(true)
					var got any
					done := make(chan struct{})
					go func() {
						defer close(done)
						defer func() { got = recover() }()
						path.do(tb, k, testKey(501), func() int { reenter(); return 99 })
					}()
					select {
					case <-done:
					case <-time.After(5 * time.Second):
						t.Fatal("deadlock: the re-entrant call waited for itself")
					}
					if s, _ := got.(string); s != reentryRule {
						t.Fatalf("panic %v, want %q", got, reentryRule)
					}
					armed.Store(false)
					checkUnchanged(t, tb, before, d, &log)
					checkUsable(t, tb)
				})
			}
		}
	}
}

// A writer on another goroutine that needs a shard while a callback runs
// under it waits for it, as before: only the callback's own goroutine
// panics.
func TestWriterWaitsForAnothersCallback(t *testing.T) {
	inMake := make(chan struct{})
	release := make(chan struct{})
	tb := newTable(t, Config[int]{Limit: 100, Shards: 1})
	done := make(chan error, 1)
	go func() {
		_, _, err := tb.GetOrInsert(testKey(1), func() int {
			close(inMake)
			<-release
			return 1
		})
		done <- err
	}()
	<-inMake
	inserted := make(chan error, 1)
	go func() {
		_, err := tb.Insert(testKey(2), 2) // the same (only) shard: waits for make
		inserted <- err
	}()
	time.Sleep(20 * time.Millisecond)
	close(release)
	for _, ch := range []chan error{done, inserted} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	if tb.Len() != 2 {
		t.Fatalf("Len %d, want 2", tb.Len())
	}
}

// An OnRemove that calls Synchronize would wait for the drain that runs
// it: it panics with the rule instead; the domain recovers and shows it,
// and the flows after it are still called back.
func TestOnRemoveCallingSynchronizePanics(t *testing.T) {
	d := reclaim.NewDomain()
	var calls atomic.Int64
	tb := newTable(t, Config[int]{Limit: 10, Domain: d, OnRemove: func(e *Entry[int], _ Cause) {
		calls.Add(1)
		if *e.Value() == 1 {
			d.Synchronize()
		}
	}})
	tb.Insert(testKey(1), 1)
	tb.Insert(testKey(2), 2)
	tb.Clear()
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Synchronize()
		d.Synchronize() // the flows after the panicking one, deferred again
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("OnRemove's Synchronize waited for itself")
	}
	if s := d.Stats(); s.Panics != 1 || !strings.Contains(s.LastPanic, "inside deferred work") || calls.Load() != 2 {
		t.Fatalf("Stats %v, %d callbacks: want the rule's panic counted and both callbacks run", s, calls.Load())
	}
}
