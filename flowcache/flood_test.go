package flowcache

import (
	"net/netip"
	"testing"

	"github.com/flowcache/flowcache/reclaim"
	"github.com/flowcache/flowcache/shard"
)

// The hash-flood tests that need the table's insides; race_test holds the
// attacker's view from outside (race_test/flood_test.go).

func floodKey(i uint32) FlowKey {
	return NewFlowKey(netip.AddrFrom4([4]byte{198, 51, byte(i >> 16), byte(i >> 8)}), netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), uint16(i), 80, ProtoTCP)
}

// TestFloodKeepsChainsBounded: thousands of keys crafted to share one
// bucket of one shard, by an attacker who learnt the table's seed and the
// shard's current bucket seed, make that shard reseed (Stats.Floods); the
// fresh seed comes from crypto/rand, so the crafted keys spread out and no
// chain in any shard stays longer than the bound: a lookup of a crafted
// key costs what any lookup costs. (With a fixed Config.Seed every shard
// seed is reproducible too, so an attacker who knows it could follow the
// reseeds; that is why a fixed seed is for tests only.)
func TestFloodKeepsChainsBounded(t *testing.T) {
	tb, err := New(Config[int]{Limit: 1 << 20, Shards: 2, Domain: reclaim.NewDomain()})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	target := &tb.shards[0]
	const n = 3000
	var keys []FlowKey
	for i := uint32(0); len(keys) < n; i++ {
		k := floodKey(i)
		if h := tb.hash(&k); tb.shardOf(h) == target && target.BucketOf(h) == 0 {
			keys = append(keys, k)
		}
	}
	for i, k := range keys {
		if _, err := tb.Insert(k, i); err != nil {
			t.Fatal(err)
		}
	}
	st := tb.Stats()
	if st.Floods == 0 {
		t.Fatalf("no flood rebuild: %v", st)
	}
	for i := range tb.shards {
		s := &tb.shards[i]
		s.Lock()
		c := s.LongestChainLocked()
		s.Unlock()
		if c > shard.MaxChain {
			t.Errorf("shard %d: longest chain %d after the flood", i, c)
		}
	}
	for _, k := range keys {
		if _, ok := tb.Get(k); !ok {
			t.Fatalf("crafted key %v lost", k)
		}
	}
	t.Logf("%d crafted keys: %v", n, st)
}

// TestUnseededTablesDiffer: two tables made without a Seed draw different
// seeds, so keys crafted for one are spread across the other.
func TestUnseededTablesDiffer(t *testing.T) {
	a, err := New(Config[int]{Limit: 64, Domain: reclaim.NewDomain()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(Config[int]{Limit: 64, Domain: reclaim.NewDomain()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.seed == 0 || b.seed == 0 || a.seed == b.seed {
		t.Fatalf("table seeds %#x and %#x: want two different non-zero seeds", a.seed, b.seed)
	}
	k := floodKey(1)
	if a.hash(&k) == b.hash(&k) {
		t.Errorf("the same key hashes the same in both tables")
	}
}
