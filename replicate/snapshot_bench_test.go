package replicate

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// BenchmarkSnapshot writes and restores a table of n flows (a quarter of
// them pairs): seconds for each, and the snapshot's bytes per flow.
func BenchmarkSnapshot(b *testing.B) {
	sizes := []int{1_000_000}
	if testing.Short() {
		sizes = []int{100_000}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("flows=%d", n), func(b *testing.B) {
			clk := newClock()
			src := newTable(b, n, clk)
			fill(b, src, clk, n)
			c := codec(b)
			var buf bytes.Buffer
			var write, restore time.Duration
			for b.Loop() {
				buf.Reset()
				start := time.Now()
				if _, err := WriteSnapshot(&buf, src, c, clk.Now()); err != nil {
					b.Fatal(err)
				}
				write += time.Since(start)
				dst := newTable(b, n, clk)
				start = time.Now()
				if _, err := RestoreSnapshot(bytes.NewReader(buf.Bytes()), dst, c, clk.Now()); err != nil {
					b.Fatal(err)
				}
				restore += time.Since(start)
				dst.Close()
			}
			b.ReportMetric(write.Seconds()/float64(b.N), "write-s")
			b.ReportMetric(restore.Seconds()/float64(b.N), "restore-s")
			b.ReportMetric(float64(buf.Len())/float64(n), "bytes/flow")
			b.ReportMetric(0, "ns/op")
		})
	}
}
