package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Report is what one run measured.
type Report struct {
	Impl           string
	Model, Capture string
	Workers, Batch int
	Limit          int
	Elapsed        time.Duration // real
	SimElapsed     time.Duration

	Packets, Hits  uint64 // every packet looked up; those whose flow was there
	Inserted, Full uint64 // flows created on a miss; misses dropped at the limit
	Expired        uint64
	FloodSent      int // flows of the spike the model sent (fewer when a worker could not keep up)
	LiveEnd        int
	LivePeak       int // most live flows seen (sampled every 100 ms)
	LiveAtPeakGC   int // live flows when HeapPeak was taken
	TableBytes     int64
	Grows, Shrinks uint64
	Floods         uint64
	P50, P90       float64 // lookup ns per key
	P99, P999      float64
	LatencySamples int
	HeapStart      uint64 // after runtime.GC, before any traffic
	HeapBefore     uint64 // after runtime.GC, just before the spike
	HeapPeak       uint64 // after runtime.GC, at the end of the spike
	HeapAfter      uint64 // after runtime.GC, at the end (the spike drained)
	// Heap in use (HeapInuse: bytes in spans that hold any object), at the
	// same three moments: what the process keeps, which live objects
	// scattered over many spans can hold far above HeapAlloc.
	InuseBefore, InusePeak, InuseAfter uint64
	// TableAtPeak is the bytes the table says it holds (Stats.Bytes) when
	// InusePeak is taken; flowcache only. Heap in use over it is what the
	// spike costs beyond the table: garbage waiting for a grace period,
	// the allocator's spans, the simulation's own memory.
	TableAtPeak int64
	Samples     []Sample
}

// Sample is the state of a run at one moment (every sampleEvery).
type Sample struct {
	T, SimT float64 // real and simulated seconds since the start
	Live    int
	Heap    uint64 // heap objects, garbage included (HeapAlloc)
	Inuse   uint64 // heap in use: the spans that hold those objects (HeapInuse)
	Marked  uint64 // the heap objects the last collection found live
	Table   int64  // bytes the table says it holds (Stats.Bytes); flowcache only
	Mpps    float64
}

// Mpps is millions of packets per second of wall time.
func (r *Report) Mpps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Packets) / r.Elapsed.Seconds() / 1e6
}

// HitRatio is the share of packets whose flow the lookup found.
func (r *Report) HitRatio() float64 {
	if r.Packets == 0 {
		return 0
	}
	return float64(r.Hits) / float64(r.Packets)
}

func (r *Report) setLatency(lat []uint32) {
	sortU32(lat)
	r.LatencySamples = len(lat)
	r.P50, r.P90 = percentile(lat, 0.50), percentile(lat, 0.90)
	r.P99, r.P999 = percentile(lat, 0.99), percentile(lat, 0.999)
}

func mb(b uint64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }

// Print writes the report for a human.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "flowbench: %s, %d workers, batches of %d, %.1f s", r.Impl, r.Workers, r.Batch, r.Elapsed.Seconds())
	if r.Capture != "" {
		fmt.Fprintf(w, ", replay of %s\n", r.Capture)
	} else {
		fmt.Fprintf(w, " (%.0f s simulated)\n  model     %s\n", r.SimElapsed.Seconds(), r.Model)
	}
	if r.Capture == "" {
		fmt.Fprintf(w, "  spike     %d SYN flows sent\n", r.FloodSent)
	}
	fmt.Fprintf(w, "  packets   %d, %.2f Mpps; hit ratio %.4f\n", r.Packets, r.Mpps(), r.HitRatio())
	fmt.Fprintf(w, "  flows     live %d at the end, peak %d of limit %d; created %d, expired %d, full rejections %d\n",
		r.LiveEnd, r.LivePeak, r.Limit, r.Inserted, r.Expired, r.Full)
	fmt.Fprintf(w, "  lookup    ns per key: p50 %.0f, p90 %.0f, p99 %.0f, p99.9 %.0f (%d timed batches)\n",
		r.P50, r.P90, r.P99, r.P999, r.LatencySamples)
	if r.Impl == "flowcache" {
		fmt.Fprintf(w, "  rebuilds  grow %d, shrink %d, flood %d; table holds %s at the end\n", r.Grows, r.Shrinks, r.Floods, mb(uint64(r.TableBytes)))
	}
	if r.Capture == "" {
		fmt.Fprintf(w, "  heap      live objects before the spike %s, at its end %s (%d flows), after the drain %s (after runtime.GC)\n",
			mb(r.HeapBefore), mb(r.HeapPeak), r.LiveAtPeakGC, mb(r.HeapAfter))
		fmt.Fprintf(w, "            in use (HeapInuse) %s, %s, %s: %s\n",
			mb(r.InuseBefore), mb(r.InusePeak), mb(r.InuseAfter), r.DrainLeft())
		if r.TableAtPeak > 0 {
			fmt.Fprintf(w, "            at the spike's end: heap in use %s against the table's %s (%.2f×)\n",
				mb(r.InusePeak), mb(uint64(r.TableAtPeak)), float64(r.InusePeak)/float64(r.TableAtPeak))
		}
	} else {
		fmt.Fprintf(w, "  heap      before %s, after %s (after runtime.GC)\n", mb(r.HeapStart), mb(r.HeapAfter))
	}
}

// DrainLeft says how much of the peak's heap in use the drain left, and
// what that measures: the whole process, with the flows still live after
// the drain (the base flows) and the model's own state, against the
// README's figure, which is the heap in use of a drain that leaves 1 % of
// the flows (BenchmarkDrainScattered).
func (r *Report) DrainLeft() string {
	return fmt.Sprintf("%.1f %% of the peak's heap in use left after the drain, with %.1f %% of its flows still live "+
		"(the whole process; the README's 1.3 %% is BenchmarkDrainScattered's, a drain that leaves 1 %% of the flows)",
		100*float64(r.InuseAfter)/float64(max(r.InusePeak, 1)), 100*float64(r.LiveEnd)/float64(max(r.LiveAtPeakGC, 1)))
}

// PrintCompare writes one line per run, side by side.
func PrintCompare(w io.Writer, rs []*Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "impl\tMpps\thit ratio\tp50 ns\tp99 ns\tlive peak\tfull\theap before\theap peak\theap after\tin use peak\tin use after\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%.2f\t%.4f\t%.0f\t%.0f\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t\n",
			r.Impl, r.Mpps(), r.HitRatio(), r.P50, r.P99, r.LivePeak, r.Full, mb(r.HeapBefore), mb(r.HeapPeak), mb(r.HeapAfter),
			mb(r.InusePeak), mb(r.InuseAfter))
	}
	tw.Flush()
}
