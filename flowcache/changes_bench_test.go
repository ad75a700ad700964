package flowcache

import "testing"

// BenchmarkDrain is the consumer's side of BenchmarkFeedCost's insert
// with a feed on, alone: 100k flows, and what 100 ms of that loop notes
// (about 150k inserts of new flows, each with the removal of an old one)
// drained at once. Its time and the memory it touches are what a
// consumer takes from the writers' cores and their shared cache.
func BenchmarkDrain(b *testing.B) {
	const flows, ops = 100_000, 150_000
	keys := make([]FlowKey, 2*flows)
	for i := range keys {
		keys[i] = testKey(i)
	}
	tb := newTable(b, Config[[3]uint64]{Limit: flows + 1024})
	for _, k := range keys[:flows] {
		tb.Insert(k, [3]uint64{})
	}
	c, err := tb.Changes(1 << 20)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.Resync(func(Change[[3]uint64]) {})
	next := flows
	reported := 0
	noted := c.Stats().Noted
	for b.Loop() {
		b.StopTimer()
		for range ops {
			tb.Insert(keys[next%len(keys)], [3]uint64{})
			tb.Remove(keys[(next-flows)%len(keys)])
			next++
		}
		b.StartTimer()
		reported += c.Drain(func(ch Change[[3]uint64]) {
			if ch.Flow != nil {
				_ = ch.Flow.State()
			}
		})
	}
	b.ReportMetric(float64(reported)/float64(b.N), "changes/op")
	b.ReportMetric(float64(c.Stats().Noted-noted)/float64(b.N), "notes/op")
}
