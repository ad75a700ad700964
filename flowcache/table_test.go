package flowcache

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowcache/flowcache/reclaim"
)

// testKey is the i-th of a family of distinct keys: IPv4 for even i, IPv6
// for odd i, spread over protocols so Dump order is exercised.
func testKey(i int) FlowKey {
	protos := []uint8{ProtoTCP, ProtoUDP, ProtoICMP, ProtoSCTP}
	p := protos[i%len(protos)]
	if i%2 == 0 {
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		dst := netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 7)})
		return NewFlowKey(src, dst, uint16(i), 80, p)
	}
	var a [16]byte
	a[0], a[1] = 0xfd, 0x00
	a[13], a[14], a[15] = byte(i>>16), byte(i>>8), byte(i)
	return NewFlowKey(netip.AddrFrom16(a), netip.MustParseAddr("fd00::1"), uint16(i), 443, p)
}

// fakeClock is a clock tests move by hand; no test sleeps for time to pass.
type fakeClock struct{ ms atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ms.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())
	return c
}
func (c *fakeClock) Now() time.Time { return time.UnixMilli(c.ms.Load()) }
func (c *fakeClock) Advance(d time.Duration) time.Time {
	return time.UnixMilli(c.ms.Add(d.Milliseconds()))
}

func newTable[V any](t testing.TB, cfg Config[V]) *Table[V] {
	t.Helper()
	if cfg.Domain == nil {
		cfg.Domain = reclaim.NewDomain()
	}
	tb, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	return tb
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config[int]
		field string
	}{
		{"zero limit", Config[int]{}, "Limit"},
		{"negative limit", Config[int]{Limit: -1}, "Limit"},
		{"shards not a power of two", Config[int]{Limit: 10, Shards: 3}, "Shards"},
		{"negative shards", Config[int]{Limit: 10, Shards: -2}, "Shards"},
		{"too many shards", Config[int]{Limit: 10, Shards: MaxShards * 2}, "Shards"},
		{"negative TTL", Config[int]{Limit: 10, TTL: -time.Second}, "TTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, err := New(tt.cfg)
			if tb != nil || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New = %v, %v; want nil, ErrInvalidConfig", tb, err)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tt.field {
				t.Fatalf("error %v does not name field %s", err, tt.field)
			}
		})
	}
}

func TestGetAllocatesNothing(t *testing.T) {
	tb := newTable(t, Config[uint64]{Limit: 1000})
	k := testKey(1)
	if _, err := tb.Insert(k, 7); err != nil {
		t.Fatal(err)
	}
	miss := testKey(2)
	if a := testing.AllocsPerRun(1000, func() {
		if _, ok := tb.Get(k); !ok {
			t.Fatal("miss")
		}
	}); a != 0 {
		t.Fatalf("Get hit allocates %v times", a)
	}
	if a := testing.AllocsPerRun(1000, func() { tb.Get(miss) }); a != 0 {
		t.Fatalf("Get miss allocates %v times", a)
	}
}

func TestInsertGetRemove(t *testing.T) {
	var expired []FlowKey
	var mu sync.Mutex
	d := reclaim.NewDomain()
	tb := newTable(t, Config[string]{Limit: 100, Domain: d, OnRemove: func(e *Entry[string], _ Cause) {
		k := e.Key()
		mu.Lock()
		expired = append(expired, k)
		mu.Unlock()
	}})
	k := testKey(3)
	e, err := tb.Insert(k, "a")
	if err != nil || e.Key() != k || *e.Value() != "a" {
		t.Fatalf("Insert = %v, %v", e, err)
	}
	// An insert of an existing key replaces it: later lookups see the
	// new entry, the old one is retired (one callback), Len stays 1.
	e2, err := tb.Insert(k, "b")
	if err != nil || e2 == e {
		t.Fatal("replace did not make a new entry")
	}
	if got, ok := tb.Get(k); !ok || got != e2 || *got.Value() != "b" {
		t.Fatal("lookup after replace does not see the new value")
	}
	if *e.Value() != "a" {
		t.Fatal("the replaced entry's value was rewritten in place")
	}
	if tb.Len() != 1 {
		t.Fatalf("Len = %d after replace", tb.Len())
	}
	if !tb.Remove(k) || tb.Remove(k) {
		t.Fatal("Remove should succeed once")
	}
	if _, ok := tb.Get(k); ok || tb.Len() != 0 {
		t.Fatal("flow still there after Remove")
	}
	if len(expired) != 0 {
		t.Fatal("callbacks ran before a grace period")
	}
	d.Synchronize()
	if len(expired) != 2 || expired[0] != k || expired[1] != k {
		t.Fatalf("callbacks after grace period: %v, want the replaced and the removed flow", expired)
	}
	st := tb.Stats()
	// Inserts counts every flow stored, the replacing one too, so Live is
	// Inserts minus every flow that left.
	if st.Inserts != 2 || st.Replaced != 1 || st.Removed != 1 || st.Live != 0 {
		t.Fatalf("stats: %v", st)
	}
}

// N goroutines insert distinct keys into a table with limit L: exactly L
// land, and every other insert fails with ErrFull and changes nothing.
func TestLimitIsExactUnderConcurrency(t *testing.T) {
	const workers, perWorker, limit = 8, 2000, 5000
	tb := newTable(t, Config[int]{Limit: limit, Shards: 16})
	var fulls atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				_, err := tb.Insert(testKey(w*perWorker+i), i)
				switch {
				case errors.Is(err, ErrFull):
					fulls.Add(1)
				case err != nil:
					t.Error(err)
				}
				if tb.Len() > limit {
					t.Errorf("Len %d over limit", tb.Len())
				}
			}
		})
	}
	wg.Wait()
	if tb.Len() != limit {
		t.Fatalf("Len = %d, want %d", tb.Len(), limit)
	}
	if got := fulls.Load(); got != workers*perWorker-limit {
		t.Fatalf("%d ErrFull, want %d", got, workers*perWorker-limit)
	}
	if n := len(tb.Dump()); n != limit {
		t.Fatalf("Dump has %d rows, want %d", n, limit)
	}
	if st := tb.Stats(); st.FullRejections != uint64(workers*perWorker-limit) {
		t.Fatalf("Stats.FullRejections = %d", st.FullRejections)
	}
}

func TestFullInsertChangesNothing(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 2})
	tb.Insert(testKey(1), 1)
	tb.Insert(testKey(2), 2)
	before := tb.Dump()
	_, err := tb.Insert(testKey(3), 3)
	if !errors.Is(err, ErrFull) {
		t.Fatalf("insert into full table: %v", err)
	}
	if want := "limit of 2"; !contains(err.Error(), want) {
		t.Fatalf("error %q does not name the limit", err)
	}
	_, _, err = tb.GetOrInsert(testKey(4), func() int { t.Fatal("make ran on a full table"); return 0 })
	if !errors.Is(err, ErrFull) {
		t.Fatalf("GetOrInsert into full table: %v", err)
	}
	if !slices.Equal(keysOf(before), keysOf(tb.Dump())) || tb.Len() != 2 {
		t.Fatal("a failed insert changed the table")
	}
	// Replacing a present key at the limit is not an addition.
	if _, err := tb.Insert(testKey(1), 10); err != nil {
		t.Fatalf("replace at the limit: %v", err)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func keysOf[V any](rows []DumpRow[V]) []FlowKey {
	ks := make([]FlowKey, len(rows))
	for i, r := range rows {
		ks[i] = r.Key
	}
	return ks
}

func TestGetOrInsertMakesOncePerMiss(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 10000})
	const keys, workers = 500, 8
	var made atomic.Int64
	var inserted atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range keys {
				k := testKey((i*7 + w) % keys)
				e, ins, err := tb.GetOrInsert(k, func() int { made.Add(1); return i })
				if err != nil || e == nil || e.Key() != k {
					t.Errorf("GetOrInsert: %v %v", e, err)
					return
				}
				if ins {
					inserted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if made.Load() != keys || inserted.Load() != keys || tb.Len() != keys {
		t.Fatalf("make ran %d times, %d inserted, Len %d; want %d each", made.Load(), inserted.Load(), tb.Len(), keys)
	}
}

func TestGetOrInsertPanickingMakeChangesNothing(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 1})
	func() {
		defer func() { recover() }()
		tb.GetOrInsert(testKey(1), func() int { panic("boom") })
	}()
	if tb.Len() != 0 {
		t.Fatalf("Len = %d after a panicking make", tb.Len())
	}
	// The shard lock was released and the reservation returned.
	if _, ins, err := tb.GetOrInsert(testKey(1), func() int { return 1 }); err != nil || !ins {
		t.Fatalf("after panic: %v %v", ins, err)
	}
}

// Dump is sorted by key and complete after thousands of random inserts,
// removes and rebuilds, checked against a map.
func TestDumpSortedAndComplete(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 1 << 20, Shards: 8})
	model := map[FlowKey]int{}
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 20000 {
		k := testKey(r.IntN(6000))
		switch r.IntN(3) {
		case 0, 1:
			if _, err := tb.Insert(k, i); err != nil {
				t.Fatal(err)
			}
			model[k] = i
		case 2:
			_, inModel := model[k]
			if tb.Remove(k) != inModel {
				t.Fatalf("Remove(%v) disagrees with model", k)
			}
			delete(model, k)
		}
		if i%2500 == 0 {
			tb.RebuildAll()
		}
	}
	rows := tb.Dump()
	if len(rows) != len(model) || tb.Len() != len(model) {
		t.Fatalf("Dump has %d rows, Len %d, model %d", len(rows), tb.Len(), len(model))
	}
	if !slices.IsSortedFunc(rows, func(a, b DumpRow[int]) int { return a.Key.Compare(b.Key) }) {
		t.Fatal("Dump is not sorted")
	}
	for _, row := range rows {
		if v, ok := model[row.Key]; !ok || v != row.Value {
			t.Fatalf("row %v = %d, model has %d, %v", row.Key, row.Value, v, ok)
		}
	}
}

// A lookup runs while another goroutine holds the key's shard lock and
// rebuilds under it: the lookup completes, right, while the lock is held.
func TestGetDoesNotWaitForWriter(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 10000})
	for i := range 1000 {
		tb.Insert(testKey(i), i)
	}
	k := testKey(17)
	s := tb.ShardOf(k)
	s.Lock()
	s.CompactLocked(4 * s.Slots())
	done := make(chan *Entry[int])
	go func() {
		e, _ := tb.Get(k)
		done <- e
	}()
	select {
	case e := <-done:
		if e == nil || *e.Value() != 17 {
			t.Errorf("Get under a held lock = %v", e)
		}
	case <-time.After(10 * time.Second):
		t.Error("Get waited for the shard's writer lock")
	}
	s.Unlock()
}

func TestLastSeenRefreshedOnlyWhenClockTicks(t *testing.T) {
	clk := newFakeClock()
	tb := newTable(t, Config[int]{Limit: 10, Clock: clk.Now})
	k := testKey(1)
	e, _ := tb.Insert(k, 1)
	t0 := e.LastSeen()
	if !t0.Equal(clk.Now()) {
		t.Fatalf("LastSeen %v, want insert time %v", t0, clk.Now())
	}
	clk.Advance(5 * time.Second) // the clock moves, the coarse word does not
	tb.Get(k)
	if !e.LastSeen().Equal(t0) {
		t.Fatal("Get read the clock instead of the coarse word")
	}
	now := clk.Advance(time.Second)
	tb.Expire(now) // the pass advances the coarse clock
	if !e.LastSeen().Equal(t0) {
		t.Fatal("the pass refreshed a flow")
	}
	tb.Get(k)
	if !e.LastSeen().Equal(now) {
		t.Fatalf("Get after a tick: LastSeen %v, want %v", e.LastSeen(), now)
	}
}

// Entry.Hits is sampled: check the estimate is within its documented
// error (6 standard deviations, so the test never flakes).
func TestHitsEstimate(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 10})
	k := testKey(1)
	e, _ := tb.Insert(k, 1)
	const n = 1_000_000
	for range n {
		tb.Get(k)
	}
	got := float64(e.Hits())
	// One in hitSample=64 is counted: σ = sqrt(63/n) = 0.8 % at a million,
	// so 5 % is over 6σ.
	if got < n*0.95 || got > n*1.05 {
		t.Fatalf("Hits = %v after %d hits; want within 5%%", got, n)
	}
	if st := tb.Stats(); float64(st.Hits) < n*0.95 || float64(st.Hits) > n*1.05 {
		t.Fatalf("Stats.Hits = %d after %d hits", st.Hits, n)
	}
}

func TestZeroTableFailsLoudly(t *testing.T) {
	var tb Table[int]
	defer func() {
		if recover() == nil {
			t.Fatal("a zero Table accepted a call")
		}
	}()
	tb.Insert(testKey(1), 1)
}

func TestClosed(t *testing.T) {
	d := reclaim.NewDomain()
	var n atomic.Int64
	tb, _ := New(Config[int]{Limit: 10, Domain: d, OnRemove: func(e *Entry[int], _ Cause) { n.Add(1) }})
	tb.Insert(testKey(1), 1)
	tb.Insert(testKey(2), 2)
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tb.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if _, err := tb.Insert(testKey(3), 3); !errors.Is(err, ErrClosed) {
		t.Fatalf("Insert after Close: %v", err)
	}
	if _, _, err := tb.GetOrInsert(testKey(3), func() int { return 3 }); !errors.Is(err, ErrClosed) {
		t.Fatalf("GetOrInsert after Close: %v", err)
	}
	if _, ok := tb.Get(testKey(1)); ok || tb.Len() != 0 {
		t.Fatal("flows still there after Close")
	}
	d.Synchronize()
	if n.Load() != 2 {
		t.Fatalf("%d callbacks after Close, want 2", n.Load())
	}
}

func TestStatsString(t *testing.T) {
	tb := newTable(t, Config[int]{Name: "vnic0", Limit: 10})
	tb.Insert(testKey(1), 1)
	s := tb.Stats()
	if s.Live != 1 || s.Limit != 10 || s.Name != "vnic0" || s.Bytes <= 0 || s.Slots <= 0 {
		t.Fatalf("stats %+v", s)
	}
	if str := s.String(); !contains(str, "vnic0") || !contains(str, "live 1/10") {
		t.Fatalf("String() = %q", str)
	}
	_ = fmt.Sprint(s)
}

// Stats counts the shards' rebuilds by kind: a fill grows and never tidies;
// churn at a steady size tidies (overflow buckets emptied by removals
// stay linked until a tidy drops them) and grows no more.
func TestStatsGrowsAndTidies(t *testing.T) {
	const n = 2000
	tb := newTable(t, Config[int]{Limit: n, Shards: 1})
	for i := range n {
		if _, err := tb.Insert(testKey(i), i); err != nil {
			t.Fatal(err)
		}
	}
	fill := tb.Stats()
	if fill.Grows == 0 || fill.Tidies != 0 {
		t.Fatalf("after a fill: %d grows, %d tidies; want some grows and no tidy", fill.Grows, fill.Tidies)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	live := make([]int, n)
	for i := range live {
		live[i] = i
	}
	for next := n; next < 41*n; next++ {
		j := rng.IntN(n)
		tb.Remove(testKey(live[j]))
		if _, err := tb.Insert(testKey(next), next); err != nil {
			t.Fatal(err)
		}
		live[j] = next
	}
	churn := tb.Stats()
	if churn.Tidies == 0 || churn.Grows != fill.Grows {
		t.Fatalf("after churn: %d tidies, grows %d -> %d; want tidies and no growth", churn.Tidies, fill.Grows, churn.Grows)
	}
}

// Stats, Len and Dump read while writers insert, grow and remove: the race
// detector checks every word they read is read safely.
func TestStatsWhileWriting(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 1 << 20, Shards: 2})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 20000 {
			tb.Insert(testKey(i), i)
			if i%3 == 0 {
				tb.Remove(testKey(i / 2))
			}
		}
	}()
	for {
		select {
		case <-done:
			if st := tb.Stats(); st.Live != tb.Len() || st.Bytes <= 0 {
				t.Fatalf("final stats %+v", st)
			}
			return
		default:
			if st := tb.Stats(); st.Live > st.Limit {
				t.Fatalf("stats %+v", st)
			}
		}
	}
}

// A flood of new keys at the limit is refused without allocating.
func TestFullInsertAllocatesNothing(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 1})
	tb.Insert(testKey(1), 1)
	k := testKey(2)
	if a := testing.AllocsPerRun(1000, func() {
		if _, err := tb.Insert(k, 2); !errors.Is(err, ErrFull) {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Fatalf("a refused Insert allocates %v times", a)
	}
	if a := testing.AllocsPerRun(1000, func() {
		if _, _, err := tb.GetOrInsert(k, func() int { return 2 }); !errors.Is(err, ErrFull) {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Fatalf("a refused GetOrInsert allocates %v times", a)
	}
}
