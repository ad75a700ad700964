package flowcache_test

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
)

// TestNATFloodReturnsEveryPort floods Example_nat's NAT past its limit on
// the batch step: workers open connections, answer some (those are
// assured and never evicted), and send SYNs far beyond the limit, while a
// Reclaimer expires and reclaims. The pool is sized by the README's rule
// (the limit plus what a grace period admits at the limit); make refuses
// when it runs dry. Throughout, no two live connections share a port and
// no free port is in use; at the end every answered connection is still
// there, and after Close every port has come back exactly once, every
// connection stored having been called back once.
func TestNATFloodReturnsEveryPort(t *testing.T) {
	const (
		limit    = 256
		workers  = 2
		batch    = 32
		answered = 32 // per worker, before the flood
	)
	rounds := 400
	if testing.Short() {
		rounds = 100
	}
	public := netip.MustParseAddr("203.0.113.1")
	server := netip.MustParseAddr("198.51.100.7")
	// Ports held = live flows + flows evicted within the last grace
	// period. A grace period here is a Reclaimer period or two (1 ms
	// each) and the workers' batches, in which the flood evicts far more
	// than a batch: the pool is the limit plus a few batches, so make
	// refuses some SYNs when it runs dry, as a real NAT's would.
	ports0 := limit + 4*workers*batch
	pool := &ports{}
	for p := range ports0 {
		pool.free = append(pool.free, uint16(10000+p))
	}
	var released, stored atomic.Int64
	d := reclaim.NewDomain()
	cfg := natConfig(limit, d, pool, func(uint16, flowcache.Cause) { released.Add(1) })
	cfg.Shards = 4 // a connection's two keys mostly in two shards
	tb, err := flowcache.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := reclaim.NewReclaimer(d, time.Millisecond)
	rec.Start()
	defer rec.Close()

	var refused, full atomic.Int64
	assuredKeys := make([][]flowcache.FlowKey, workers)
	var wg, ready sync.WaitGroup
	ready.Add(workers)
	for wi := range workers {
		wg.Go(func() {
			w := newNATWorker(tb, d, pool, public, batch)
			defer w.reader.Unregister()
			syn := func(n int) flowcache.FlowKey {
				inside := netip.AddrFrom4([4]byte{10, byte(wi), byte(n >> 8), byte(n)})
				return flowcache.NewFlowKey(inside, server, uint16(1024+n%60000), 443, flowcache.ProtoTCP)
			}
			tally := func(n int) {
				for _, o := range w.res[:n] {
					switch o {
					case flowcache.Inserted:
						stored.Add(1)
					case flowcache.Refused:
						refused.Add(1)
					case flowcache.Full:
						full.Add(1)
					}
				}
			}
			// Connections that are answered: assured, established.
			keys := make([]flowcache.FlowKey, 0, batch)
			for n := range answered {
				keys = append(keys, syn(n))
			}
			w.step(keys...)
			tally(len(keys))
			var replies []flowcache.FlowKey
			for _, e := range w.out[:len(keys)] {
				if e != nil {
					r, _ := e.Reply()
					replies = append(replies, r)
					assuredKeys[wi] = append(assuredKeys[wi], e.Key())
				}
			}
			w.step(replies...)
			ready.Done()
			ready.Wait() // every worker's answered connections are in
			// The flood: new SYNs, never answered, and the answered
			// connections' packets among them.
			n := answered
			for r := range rounds {
				keys = keys[:0]
				for range batch - 2 {
					keys = append(keys, syn(n))
					n++
				}
				keys = append(keys, assuredKeys[wi][r%len(assuredKeys[wi])], replies[r%len(replies)])
				w.step(keys...)
				tally(len(keys))
			}
		})
	}
	wg.Wait()
	// The answered connections survived the flood.
	for wi := range workers {
		for _, k := range assuredKeys[wi] {
			if e, ok := tb.Get(k); !ok || e.State()&assured == 0 {
				t.Fatalf("answered connection %v evicted by the flood", k)
			}
		}
	}
	// No two live connections share a port; no free port is in use.
	pool.mu.Lock()
	free := slices.Clone(pool.free)
	pool.mu.Unlock()
	inUse := map[uint16]bool{}
	for e := range tb.All() {
		p := e.Value().PublicPort
		if inUse[p] {
			t.Fatalf("two live connections hold port %d", p)
		}
		inUse[p] = true
	}
	for _, p := range free {
		if inUse[p] {
			t.Fatalf("port %d is free and in use", p)
		}
	}
	st := tb.Stats()
	if st.Evicted == 0 || st.Live > limit {
		t.Fatalf("the flood did not go past the limit: %v", st)
	}
	t.Logf("%d stored, %d refused (no port free or unsolicited), %d full; %v", stored.Load(), refused.Load(), full.Load(), st)

	// Close: every connection leaves; every port comes back exactly once.
	rec.Close()
	tb.Close()
	d.Synchronize()
	if released.Load() != stored.Load() {
		t.Fatalf("%d connections stored, %d called back", stored.Load(), released.Load())
	}
	pool.mu.Lock()
	defer pool.mu.Unlock()
	got := slices.Clone(pool.free)
	slices.Sort(got)
	if len(got) != ports0 {
		t.Fatalf("%d ports in the pool after Close, want %d", len(got), ports0)
	}
	for i, p := range got {
		if p != uint16(10000+i) {
			t.Fatalf("port %d missing or given back twice (found %d at %d)", 10000+i, p, i)
		}
	}
}
