package flowcache

import (
	"testing"
	"time"

	"github.com/flowcache/flowcache/shard"
)

// A stamp may be early, never late (invariant 12 in docs/DESIGN.md): a
// lookup that found its flow, then stalled while the flow was removed and
// another flow took the same slot, and the clock stepped on, must not
// stamp the newcomer with its late refresh. Forced here: the lookup's two halves are run by hand
// around the remove, the insert and the clock step.
func TestStampNeverLate(t *testing.T) {
	clk := newFakeClock()
	t0 := clk.Now()
	tb := newTable(t, Config[int]{Limit: 100, Shards: 1, TTL: 10 * time.Second, Clock: clk.Now})
	a := testKey(1)
	tb.Insert(a, 1)
	s := &tb.shards[0]
	ha := tb.hash(&a)
	// b lands in a's bucket, so once a is gone it takes a's slot.
	var b FlowKey
	for i := 2; ; i++ {
		b = testKey(i)
		if s.BucketOf(tb.hash(&b)) == s.BucketOf(ha) {
			break
		}
	}
	// The lookup's first half: a found, with its slot and the slot word.
	e, slot, w := s.Lookup(ha, skey(&a))
	if e == nil {
		t.Fatal("a not found")
	}
	// Meanwhile: a leaves, b arrives in the same slot, time moves on.
	tb.Remove(a)
	tb.Insert(b, 2)
	_, bslot, bw := s.Lookup(tb.hash(&b), skey(&b))
	if bslot != slot {
		t.Fatal("b did not take a's slot; the test needs it to")
	}
	tb.Expire(t0.Add(8 * time.Second))
	// The lookup's second half: the refresh.
	tb.touch(e, slot, w)
	if got := shard.StampOf(slot.Load()); got != shard.StampOf(bw) {
		t.Fatalf("b's stamp moved from %d to %d by a stale lookup of a", shard.StampOf(bw), got)
	}
	// So b expires a TTL after its own insert, not after a's refresh.
	if res := tb.Expire(t0.Add(10 * time.Second)); res.Expired != 1 {
		t.Fatalf("b did not expire at its TTL: %+v", res)
	}
}

// The same stall on Get's path: Get's lookup (Find) returns the record
// alone, and its refresh (refreshKey) looks the slot up again, and by then
// the key may name another flow: the flow was removed and the key stored
// again. The newcomer keeps its own stamp. Get's two halves are run by
// hand around the remove, the insert and the clock step.
func TestStampNeverLateThroughGet(t *testing.T) {
	clk := newFakeClock()
	t0 := clk.Now()
	tb := newTable(t, Config[int]{Limit: 100, Shards: 1, TTL: 10 * time.Second, Clock: clk.Now})
	a := testKey(1)
	tb.Insert(a, 1)
	s := &tb.shards[0]
	ha := tb.hash(&a)
	// Get's first half: a found, without its slot.
	p, sure := s.Find(ha, skey(&a))
	e := (*Entry[int])(p)
	if e == nil || !sure {
		t.Fatal("a not found")
	}
	// Meanwhile: a leaves, a new flow under the same key arrives, time
	// moves on.
	tb.Remove(a)
	tb.Insert(a, 2)
	f, slot, w := s.Lookup(ha, skey(&a))
	if f == e {
		t.Fatal("the new flow reused the old record")
	}
	tb.Expire(t0.Add(8 * time.Second))
	// Get's second half: the refresh of the old flow.
	tb.refreshKey(e, &a, tb.now.Load())
	if got := shard.StampOf(slot.Load()); got != shard.StampOf(w) {
		t.Fatalf("the new flow's stamp moved from %d to %d by a stale lookup", shard.StampOf(w), got)
	}
	// So the new flow expires a TTL after its own insert.
	if res := tb.Expire(t0.Add(10 * time.Second)); res.Expired != 1 {
		t.Fatalf("the new flow did not expire at its TTL: %+v", res)
	}
}

// Get refreshes the stamp of the slot it found, although its lookup
// returns no slot: refreshKey looks it up again.
func TestGetRefreshesStamp(t *testing.T) {
	clk := newFakeClock()
	t0 := clk.Now()
	tb := newTable(t, Config[int]{Limit: 100, Shards: 1, TTL: 10 * time.Second, Clock: clk.Now})
	a := testKey(1)
	tb.Insert(a, 1)
	s := &tb.shards[0]
	_, slot, w0 := s.Lookup(tb.hash(&a), skey(&a))
	tb.Expire(t0.Add(8 * time.Second)) // the coarse clock moves on
	if _, ok := tb.Get(a); !ok {
		t.Fatal("a not found")
	}
	if got, want := shard.StampOf(slot.Load()), tb.stamp(tb.now.Load()); got != want || got == shard.StampOf(w0) {
		t.Fatalf("stamp %d after Get (was %d); want %d", got, shard.StampOf(w0), want)
	}
	// Seen at 8 s, a outlives the TTL from its insert.
	if res := tb.Expire(t0.Add(10 * time.Second)); res.Expired != 0 {
		t.Fatalf("a expired although Get saw it at 8 s: %+v", res)
	}
}
