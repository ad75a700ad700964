package bench

import (
	"testing"

	"github.com/flowcache/flowcache/flowcache"
)

// batchKeys is the batch BenchmarkBatchValue's batch steps take: a
// forwarder's burst of 32 packets.
const batchKeys = 32

// missesPerKey is what the floor row multiplies a miss by: a lookup in a
// table larger than the cache needs the bucket's line and the record's,
// one after the other (the address of the second is in the first).
const missesPerKey = 2

// BenchmarkBatchValue is the batch step with the value read, as a
// forwarder reads its decision for every packet of a burst, beside what
// bounds it, interleaved in rounds (-rounds) so that drift lands on every
// row alike. Every row reports ns/key:
//
//   - impl=flowcache/call=GetBatch: GetBatch of 32 present keys, then
//     every hit's value read;
//
//   - impl=flowcache/call=GetOrInsertBatch: the same keys through the
//     per-batch step (all hits: make never runs), which must cost within
//     10 % of GetBatch;
//
//   - impl=flowcache/call=Get and impl=xsync3.MapOf/call=Load: one key at
//     a time, the value read;
//
//   - impl=floor/call=chase8: eight independent pointer chases through
//     256 MiB (BenchmarkPointerChase's), ns per miss × missesPerKey: what a
//     lookup costs if the memory kept eight misses in flight all the time
//     and the CPU did nothing else.
//
//     go test -run '^$' -bench BatchValue -benchtime 500ms ./bench/ -rounds 10 > b.txt
//     benchstat -ignore /round -col /impl,/call -row /flows b.txt
func BenchmarkBatchValue(b *testing.B) {
	flowsList := []int{1_000_000, 4_000_000}
	if testing.Short() {
		flowsList = flowsList[:1]
	}
	for _, flows := range flowsList {
		runRounds(b, flows, func() ([]variant, func()) {
			keys := Keys(flows, 1)
			probe := probeOrder(keys)
			probe = probe[:len(probe)/batchKeys*batchKeys]
			fc := filled(Impls[0], keys).(*Flowcache)
			mo := filled(Impls[1], keys).(*mapOf)
			ring := chaseRing(256 << 20 / 64)
			return []variant{
				{"impl=flowcache/call=GetBatch", func(b *testing.B) { getBatchValue(b, fc.T, probe, false) }},
				{"impl=flowcache/call=GetOrInsertBatch", func(b *testing.B) { getBatchValue(b, fc.T, probe, true) }},
				{"impl=flowcache/call=Get", func(b *testing.B) { getFlowcache(b, fc.T, probe); perKey(b, 1) }},
				{"impl=xsync3.MapOf/call=Load", func(b *testing.B) { getMapOf(b, mo.m, probe); perKey(b, 1) }},
				{"impl=floor/call=chase8", func(b *testing.B) { chase8(b, ring) }},
			}, func() { fc.T.Close() }
		})
	}
}

// perKey reports ns/key for a benchmark whose op is keys keys.
func perKey(b *testing.B, keys int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*keys), "ns/key")
}

// getBatchValue looks probe up batchKeys at a time, with GetBatch or
// (step) GetOrInsertBatch, and reads every value.
func getBatchValue(b *testing.B, t *flowcache.Table[State], probe []flowcache.FlowKey, step bool) {
	out := make([]*flowcache.Entry[State], batchKeys)
	mk := func(int) State { b.Fatal("make on an all-hit batch"); return State{} }
	b.ReportAllocs()
	i := 0
	var sum uint32
	for b.Loop() {
		ks := probe[i : i+batchKeys]
		var n int
		if step {
			n = t.GetOrInsertBatch(ks, mk, out)
		} else {
			n = t.GetBatch(ks, out)
		}
		if n != batchKeys {
			b.Fatal("miss")
		}
		for _, e := range out {
			sum += uint32(e.Value().Action)
		}
		if i += batchKeys; i == len(probe) {
			i = 0
		}
	}
	sinkU32 = sum
	perKey(b, batchKeys)
}

// chase8 walks eight chains of ring at once; its ns/key is ns per miss ×
// missesPerKey.
func chase8(b *testing.B, next []uint32) {
	b.ReportMetric(chase(b, next, 8)*missesPerKey, "ns/key")
}
