package bench

import (
	"fmt"
	"math/bits"
	"testing"
	"unsafe"

	"github.com/flowcache/flowcache/flowcache"
)

// BenchmarkFill inserts new flows into a table that starts empty, up to
// flows of them, then starts again with a new table: the rate at which a
// table absorbs a burst of new flows (a SYN flood, a restart), growth
// included. One goroutine; ns/op is per insert.
func BenchmarkFill(b *testing.B) {
	for _, flows := range []int{10_000, 1_000_000} {
		keys := Keys(flows, 4)
		for _, im := range Impls {
			b.Run(fmt.Sprintf("impl=%s/flows=%d", im.Name, flows), func(b *testing.B) {
				b.ReportAllocs()
				m := im.New(flows)
				i := 0
				for b.Loop() {
					if i == len(keys) {
						b.StopTimer()
						m, i = im.New(flows), 0
						b.StartTimer()
					}
					if !m.Insert(keys[i], State{Action: 1}) {
						b.Fatal("insert failed")
					}
					i++
				}
				reportRate(b, "Minserts/s")
			})
		}
		b.Run(fmt.Sprintf("impl=floor/flows=%d", flows), func(b *testing.B) {
			fillFloor(b, keys)
			reportRate(b, "Minserts/s")
		})
	}
}

// floorRecord is a flow's record as flowcache stores it inline: the key,
// the value and four words of bookkeeping.
type floorRecord struct {
	key   flowcache.FlowKey
	value State
	_     [4]uint64
}

// fillFloor is the memory floor of BenchmarkFill: what an insert must
// touch at the least, with no hashing beyond a multiply, no lock, no
// growth and no check for a present key. Each insert reads and writes one
// random 64-byte line of an index the size flowcache's is at the final
// count (16 bytes a slot, two slots a flow), and appends the key and value
// to records in order.
func fillFloor(b *testing.B, keys []flowcache.FlowKey) {
	lines := 1 << bits.Len(uint(len(keys)*2*16/64-1))
	index := make([][8]uint64, lines)
	records := make([]floorRecord, 0, len(keys))
	mask := uint64(lines - 1)
	i := 0
	for b.Loop() {
		if i == len(keys) {
			b.StopTimer()
			clear(index)
			records, i = records[:0], 0
			b.StartTimer()
		}
		w := (*[5]uint64)(unsafe.Pointer(&keys[i]))
		hi, lo := bits.Mul64(w[0]^w[1]^w[2]^w[3]^w[4], 0x9e3779b97f4a7c15)
		h := hi ^ lo
		line := &index[h&mask]
		line[h>>61] += uint64(len(records))
		records = append(records, floorRecord{key: keys[i], value: State{Action: 1}})
		i++
	}
	sinkU32 = uint32(len(records))
}
