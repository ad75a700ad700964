package bench

import (
	"fmt"
	"testing"
)

// BenchmarkPointerChase is the memory-bound baseline: the physical limit a
// lookup runs against. One chain is a walk of dependent loads through a
// random cyclic permutation of 64-byte lines (each load's address comes
// from the last one: a full cache miss each, TLB included); eight chains
// walk eight permutations at once, so eight misses are in flight. Sizes
// match the tables: 64 MiB is about what 1M flows hold, 256 MiB 4M; 8 and
// 16 MiB show where the last-level cache ends on the machine at hand (on
// the 2-core machines here a chase costs ~55 ns up to 8 MiB and ~170 ns
// from 16 MiB: the effective LLC is about 8 MiB).
func BenchmarkPointerChase(b *testing.B) {
	for _, mib := range []int{8, 16, 64, 256} {
		if testing.Short() && mib > 64 {
			continue
		}
		lines := mib << 20 / 64
		next := chaseRing(lines)
		for _, chains := range []int{1, 8} {
			b.Run(fmt.Sprintf("chains=%d/mem=%dMiB", chains, mib), func(b *testing.B) {
				b.ReportMetric(chase(b, next, chains), "ns/miss")
			})
		}
	}
}

var sinkU32 uint32

// chase walks chains (1 to 8) chains of the ring next at once, one step
// of each an op, and returns ns per miss: each op is chains independent
// misses.
func chase(b *testing.B, next []uint32, chains int) float64 {
	lines := len(next) / 16
	var pos [8]uint32
	for c := range pos {
		pos[c] = uint32(c * lines / 8)
	}
	for b.Loop() {
		for c := range chains {
			pos[c] = next[int(pos[c])*16]
		}
	}
	sinkU32 = pos[0]
	return float64(b.Elapsed().Nanoseconds()) / float64(b.N*chains)
}

// chaseRing returns memory of lines 64-byte lines whose first word holds
// the index of the next line of one random cycle through all of them.
func chaseRing(lines int) []uint32 {
	order := make([]uint32, lines)
	for i := range order {
		order[i] = uint32(i)
	}
	shuffle(order, 12345)
	mem := make([]uint32, lines*16)
	for i := range order {
		mem[int(order[i])*16] = order[(i+1)%lines]
	}
	return mem
}
