package flowcache

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// drained is what one Drain reported, by first key.
func drained[V any](c *Changes[V]) map[FlowKey]Change[V] {
	m := map[FlowKey]Change[V]{}
	c.Drain(func(ch Change[V]) {
		if _, dup := m[ch.Key]; dup {
			panic("a key reported twice in one Drain")
		}
		m[ch.Key] = ch
	})
	return m
}

// TestChangesReportsEveryKind: stored flows, pairs, state swaps, class
// moves, in-place restores, and flows that leave for each cause are all
// reported, each once, with the table's view now.
func TestChangesReportsEveryKind(t *testing.T) {
	clk := newFakeClock()
	tb := newTable(t, Config[int]{Limit: 100, Timeouts: []time.Duration{time.Second}, Clock: clk.Now})
	e1, _ := tb.Insert(testKey(1), 1)
	e2, _ := tb.InsertPair(testKey(2), testKey(3), 2)
	tb.Insert(testKey(4), 4)
	tb.Insert(testKey(5), 5)
	c, err := tb.Changes(0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := c.Resync(func(Change[int]) {}); n != 4 {
		t.Fatalf("Resync reported %d flows, want 4", n)
	}
	if got := drained(c); len(got) != 0 {
		t.Fatalf("nothing changed, Drain reported %v", got)
	}
	e1.CompareAndSwapState(0, 7)
	tb.SetClass(e2, 1)
	tb.Remove(testKey(4))
	tb.Insert(testKey(6), 6)
	tb.Insert(testKey(5), 55) // replaces 5: reported as the new flow
	got := drained(c)
	want := map[FlowKey]func(Change[int]) bool{
		testKey(1): func(ch Change[int]) bool { return ch.Flow != nil && ch.Flow.State() == 7 },
		testKey(2): func(ch Change[int]) bool { return ch.Flow != nil && ch.Flow.Class() == 1 },
		testKey(4): func(ch Change[int]) bool { return ch.Flow == nil && ch.Cause == Removed },
		testKey(6): func(ch Change[int]) bool { return ch.Flow != nil && *ch.Flow.Value() == 6 },
		testKey(5): func(ch Change[int]) bool { return ch.Flow != nil && *ch.Flow.Value() == 55 },
	}
	if len(got) != len(want) {
		t.Errorf("Drain reported %d changes, want %d: %v", len(got), len(want), got)
	}
	for k, ok := range want {
		if ch, found := got[k]; !found || !ok(ch) {
			t.Errorf("%v: reported %v (found %v)", k, ch, found)
		}
	}
	// Expiry, Restore in place, eviction and Clear.
	clk.Advance(2 * time.Second)
	tb.Expire(clk.Now()) // class 1 (1 s): the pair expires
	tb.Restore(DumpRow[int]{Key: testKey(1), State: 9, LastSeen: clk.Now()})
	got = drained(c)
	if ch := got[testKey(2)]; ch.Flow != nil || ch.Cause != Expired {
		t.Errorf("expired pair: %v", ch)
	}
	if ch := got[testKey(1)]; ch.Flow == nil || ch.Flow.State() != 9 {
		t.Errorf("restored in place: %v", ch)
	}
	tb.Clear()
	got = drained(c)
	if len(got) != 3 { // 1, 5 and 6
		t.Errorf("Clear: %d changes reported, want 3", len(got))
	}
	for k, ch := range got {
		if ch.Flow != nil || ch.Cause != Cleared {
			t.Errorf("%v after Clear: %v", k, ch)
		}
	}
}

// TestChangesSetValue: a flow's new value (SetValue) is a change, reported
// by the next Drain with the value, whether or not a note of the flow is
// queued already, and coalesced with the flow's other changes.
func TestChangesSetValue(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 10})
	e1, _ := tb.Insert(testKey(1), 1)
	c, _ := tb.Changes(0)
	defer c.Close()
	c.Resync(func(Change[int]) {})
	if _, ok := tb.SetValue(e1, 10); !ok {
		t.Fatal("SetValue failed")
	}
	got := drained(c)
	if ch := got[testKey(1)]; len(got) != 1 || ch.Flow == nil || *ch.Flow.Value() != 10 {
		t.Fatalf("after SetValue, Drain reported %v, want key 1 with value 10", got)
	}
	// Stored, swapped and given a value between two drains: one change.
	e2, _ := tb.Insert(testKey(2), 2)
	e2.CompareAndSwapState(0, 3)
	tb.SetValue(e2, 20)
	got = drained(c)
	if ch := got[testKey(2)]; len(got) != 1 || ch.Flow == nil || *ch.Flow.Value() != 20 || ch.Flow.State() != 3 {
		t.Fatalf("Drain reported %v, want key 2 once with value 20 and state 3", got)
	}
}

// TestChangesCoalesce: a flow swapped ten times between two Drains is
// noted once and reported once, with its last state; it is noted again
// after the Drain.
func TestChangesCoalesce(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 10})
	e, _ := tb.Insert(testKey(1), 1)
	c, _ := tb.Changes(0)
	defer c.Close()
	c.Resync(func(Change[int]) {})
	for i := range uint32(10) {
		e.CompareAndSwapState(i, i+1)
	}
	got := drained(c)
	if ch := got[testKey(1)]; len(got) != 1 || ch.Flow.State() != 10 {
		t.Fatalf("reported %v, want one change with state 10", got)
	}
	if st := c.Stats(); st.Noted != 1 || st.Reported != 1 {
		t.Errorf("stats %+v: want 1 noted, 1 reported", st)
	}
	e.CompareAndSwapState(10, 11)
	if got := drained(c); len(got) != 1 {
		t.Errorf("a swap after the Drain: %v", got)
	}
}

// TestChangesNotedBitIsInvisible: the noted bit changes nothing a program
// sees: State, Class, swaps and Dump read as before, with or without a
// feed, and across a move.
func TestChangesNotedBitIsInvisible(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 10, Timeouts: []time.Duration{time.Minute}})
	e, _ := tb.Insert(testKey(1), 1)
	tb.SetClass(e, 1)
	if !e.CompareAndSwapState(0, 0xffffffff) || e.State() != 0xffffffff || e.Class() != 1 {
		t.Fatalf("state %x class %d", e.State(), e.Class())
	}
	if !e.CompareAndSwapState(0xffffffff, 3) || e.State() != 3 {
		t.Fatalf("second swap: state %x", e.State())
	}
	if e.state.Load()&noted == 0 {
		t.Fatal("a swap did not set the noted bit")
	}
	// Attached after the swaps: the bit is set, so only Resync clears it
	// and a swap after that is noted.
	c, _ := tb.Changes(0)
	defer c.Close()
	tb.CompactAll() // the flow moves; its noted bit with it
	if e.home() == e || e.home().state.Load()&noted == 0 {
		t.Fatal("the move lost the noted bit (or did not move the flow)")
	}
	e.CompareAndSwapState(3, 4)
	if got := drained(c); len(got) != 0 {
		t.Errorf("noted before the Resync: %v", got)
	}
	c.Resync(func(Change[int]) {})
	e.CompareAndSwapState(4, 5) // on the old copy: lands on the home
	if got := drained(c); len(got) != 1 || got[testKey(1)].Flow.State() != 5 {
		t.Errorf("after Resync: %v", got)
	}
	if r := tb.Dump()[0]; r.State != 5 || r.Class != 1 {
		t.Errorf("Dump: %+v", r)
	}
}

// TestChangesOnlyItsTable: every feed hears every state swap; Drain keeps
// only its own table's.
func TestChangesOnlyItsTable(t *testing.T) {
	a := newTable(t, Config[int]{Limit: 10})
	b := newTable(t, Config[int]{Limit: 10})
	ea, _ := a.Insert(testKey(1), 1)
	eb, _ := b.Insert(testKey(1), 2) // the same key in the other table
	ca, _ := a.Changes(0)
	defer ca.Close()
	cb, _ := b.Changes(0)
	ca.Resync(func(Change[int]) {})
	cb.Resync(func(Change[int]) {})
	eb.CompareAndSwapState(0, 1)
	if got := drained(ca); len(got) != 0 {
		t.Errorf("a's feed reported b's swap: %v", got)
	}
	if got := drained(cb); len(got) != 1 {
		t.Errorf("b's feed: %v", got)
	}
	// Both flows under the key swap between two drains, in both orders:
	// each feed reports its own table's.
	for i, first := range []*Entry[int]{ea, eb, ea} {
		other := map[*Entry[int]]*Entry[int]{ea: eb, eb: ea}[first]
		for _, e := range []*Entry[int]{first, other} {
			s := e.State()
			e.CompareAndSwapState(s, s+1)
		}
		ga, gb := drained(ca), drained(cb)
		if len(ga) != 1 || *ga[testKey(1)].Flow.Value() != 1 || len(gb) != 1 || *gb[testKey(1)].Flow.Value() != 2 {
			t.Errorf("round %d: a's feed %v, b's %v", i, ga, gb)
		}
	}
	cb.Close()
	ea.CompareAndSwapState(ea.State(), ea.State()+1)
	if got := drained(ca); len(got) != 1 || *got[testKey(1)].Flow.Value() != 1 {
		t.Errorf("a's feed after b's closed: %v", got)
	}
}

// TestChangesFullQueue: past its size the queue drops notes, counts them
// and says Lost; Resync reports every flow and clears Lost.
func TestChangesFullQueue(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 10000})
	c, _ := tb.Changes(64)
	defer c.Close()
	for i := range 5000 {
		tb.Insert(testKey(i), i)
	}
	st := c.Stats()
	if !c.Lost() || st.Dropped == 0 || st.Noted+st.Dropped != 5000 || st.Noted > uint64(st.QueueSize) {
		t.Fatalf("lost %v, stats %+v: want drops counted, noted at most the queue", c.Lost(), st)
	}
	if n := c.Resync(func(Change[int]) {}); n != 5000 || c.Lost() {
		t.Fatalf("Resync reported %d, lost %v", n, c.Lost())
	}
}

func TestChangesAttachErrors(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 10})
	c, err := tb.Changes(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Changes(0); !errors.Is(err, ErrAttached) {
		t.Errorf("second feed: %v, want ErrAttached", err)
	}
	c.Close()
	c.Close()
	c2, err := tb.Changes(0)
	if err != nil {
		t.Fatalf("after Close: %v", err)
	}
	c2.Close()
	tb.Close()
	if _, err := tb.Changes(0); !errors.Is(err, ErrClosed) {
		t.Errorf("closed table: %v, want ErrClosed", err)
	}
}

// TestChangesConcurrent: workers insert, swap, move and remove flows
// while passes move records and a consumer drains. Once they stop and a
// last Drain runs, what the consumer last heard of every key is what the
// table holds: its state and class, or its absence.
func TestChangesConcurrent(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 1 << 14, Timeouts: []time.Duration{time.Hour}})
	c, _ := tb.Changes(1 << 16)
	defer c.Close()
	c.Resync(func(Change[int]) {})
	type seen struct {
		live         bool
		state, class uint32
	}
	heard := map[FlowKey]seen{}
	record := func(ch Change[int]) {
		if ch.Flow == nil {
			heard[ch.Key] = seen{}
			return
		}
		// The whole flow, as a publisher reads it: a record a move is
		// still writing would be a race.
		if r, ok := ch.Flow.Reply(); ok && r != ch.Key.Reverse() || ch.Flow.Key() != ch.Key || *ch.Flow.Value() < 0 {
			panic("a flow reported with another's keys")
		}
		heard[ch.Key] = seen{true, ch.Flow.State(), uint32(ch.Flow.Class())}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := testKey(rng.IntN(2000))
				switch rng.IntN(6) {
				case 0:
					tb.Insert(k, i)
				case 1:
					tb.InsertPair(k, k.Reverse(), i)
				case 2:
					tb.Remove(k)
				case 3:
					if e, ok := tb.Get(k); ok {
						tb.SetClass(e, rng.IntN(2))
					}
				default:
					if e, ok := tb.Get(k); ok {
						s := e.State()
						e.CompareAndSwapState(s, s+1)
					}
				}
			}
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			tb.CompactAll()
			time.Sleep(time.Millisecond)
		}
	})
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		c.Drain(record)
	}
	close(stop)
	wg.Wait()
	if c.Lost() {
		t.Fatal("the queue overflowed: make it larger for this test")
	}
	c.Drain(record)
	live := 0
	for e := range tb.All() {
		live++
		h := heard[e.Key()]
		if !h.live || h.state != e.State() || h.class != uint32(e.Class()) {
			t.Errorf("%v: table has state %d class %d, the feed last said %+v", e.Key(), e.State(), e.Class(), h)
		}
	}
	for k, h := range heard {
		if h.live {
			live--
			if e := tb.peek(&k); e == nil || e.Key() != k {
				t.Errorf("%v: the feed says live, the table has no flow under it", k)
			}
		}
	}
	if live != 0 {
		t.Errorf("the feed and the table disagree on %d flows", live)
	}
}

// TestChangesStoredThenGone: a flow stored and gone between two Drains is
// noted once (its leaving finds its store's note queued and reads its
// cause into its record) and reported once, gone, with its cause; a flow
// drained before it leaves is noted again when it leaves; a key stored,
// gone and stored again is reported as its last flow.
func TestChangesStoredThenGone(t *testing.T) {
	clk := newFakeClock()
	tb := newTable(t, Config[int]{Limit: 100, Clock: clk.Now, TTL: time.Second})
	c, _ := tb.Changes(0)
	defer c.Close()
	c.Resync(func(Change[int]) {})
	tb.Insert(testKey(1), 1)
	tb.Remove(testKey(1))
	tb.Insert(testKey(2), 2)
	tb.Insert(testKey(3), 3)
	tb.Remove(testKey(3))
	tb.Insert(testKey(3), 33)
	if st := c.Stats(); st.Noted != 4 {
		t.Errorf("stats %+v: want 4 noted (the stores)", st)
	}
	got := drained(c)
	if ch := got[testKey(1)]; len(got) != 3 || ch.Flow != nil || ch.Cause != Removed {
		t.Fatalf("reported %v: want 1 gone (removed), 2 and 3 live", got)
	}
	if ch := got[testKey(3)]; ch.Flow == nil || *ch.Flow.Value() != 33 {
		t.Errorf("3 stored again: %v", ch)
	}
	clk.Advance(2 * time.Second)
	tb.Expire(clk.Now())
	got = drained(c)
	if len(got) != 2 || got[testKey(2)].Cause != Expired || got[testKey(3)].Cause != Expired {
		t.Errorf("after expiry: %v, want 2 and 3 expired", got)
	}
	if st := c.Stats(); st.Noted != 6 {
		t.Errorf("stats %+v: want 6 noted", st)
	}
}

// TestChangesLeavingNotedAtUnlink: a flow's leaving is on its record
// from the moment its keys stop naming it (markLeft, under the lock), not
// from the hand-off to OnRemove after the unlock: a Drain between the two
// reports it gone with its cause, and nothing more is noted after.
func TestChangesLeavingNotedAtUnlink(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 100})
	c, _ := tb.Changes(0)
	defer c.Close()
	c.Resync(func(Change[int]) {})
	e, _ := tb.Insert(testKey(1), 1)
	var ks keySet
	tb.oneKey(&ks, testKey(1))
	l := &ks.locks
	tb.lockFor(&ks, l)
	tb.unlink(e, Removed)
	tb.unlockAll(l)
	if got := drained(c); len(got) != 1 || got[testKey(1)].Flow != nil || got[testKey(1)].Cause != Removed {
		t.Fatalf("after the unlink: %v, want 1 gone (removed)", got)
	}
	tb.retireOne(e, Removed)
	if got := drained(c); len(got) != 0 {
		t.Errorf("after the hand-off: %v", got)
	}
}

// TestChangesReplacedBeforeDrain: a flow replaced before its store was
// drained is reported once, as the flow that replaced it; one replaced
// after it was drained, the same.
func TestChangesReplacedBeforeDrain(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 100})
	c, _ := tb.Changes(0)
	defer c.Close()
	c.Resync(func(Change[int]) {})
	tb.Insert(testKey(1), 1)
	tb.Insert(testKey(1), 11)
	tb.Insert(testKey(2), 2)
	if got := drained(c); len(got) != 2 || *got[testKey(1)].Flow.Value() != 11 {
		t.Fatalf("reported %v, want 1 as 11, and 2", got)
	}
	tb.Insert(testKey(2), 22)
	tb.InsertPair(testKey(3), testKey(1), 3) // takes 1's key as its reply
	got := drained(c)
	if ch := got[testKey(2)]; len(got) != 3 || ch.Flow == nil || *ch.Flow.Value() != 22 {
		t.Errorf("2 replaced: %v", got)
	}
	if ch := got[testKey(1)]; ch.Flow != nil || ch.Cause != Replaced {
		t.Errorf("1, now 3's reply key: %v, want gone (replaced)", ch)
	}
}
