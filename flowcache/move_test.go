package flowcache

import (
	"fmt"
	"testing"
	"unsafe"

	"github.com/flowcache/flowcache/reclaim"
)

// Moves lose nothing (invariant 13 in docs/DESIGN.md), and each step of
// the protocol is needed: with any one of them removed, a forced
// interleaving loses a count or a state transition.
//
// A registered worker holds every flow's record, then a compaction moves
// them all. Still before its next Quiescent, the worker (1) counts on its
// old copies as a Count that checked the moved bit just before the freeze
// would, landing on the old copy, and (2) swaps each flow's state on its
// old copy. After the worker's Quiescent and a grace period every flow
// must show both packets and the swap.
func TestMovesLoseNothing(t *testing.T) {
	tests := []struct {
		name     string
		faults   faults
		wantLoss bool
	}{
		{"protocol", faults{}, false},
		{"no freeze", faults{noFreeze: true}, true},
		{"no grace before the fold", faults{noGrace: true}, true},
		{"no fold", faults{noFold: true}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := reclaim.NewDomain()
			tb := newTable(t, Config[int]{Limit: 10_000, Shards: 4, Domain: d})
			tb.faults = tc.faults
			const n = 1000
			for i := range n {
				tb.Insert(testKey(i), i)
			}
			worker := d.Register()
			defer worker.Unregister()
			held := make([]*Entry[int], n)
			for i := range n {
				held[i], _ = tb.Get(testKey(i))
				held[i].Count(100)
			}
			tb.CompactAll()
			moved := 0
			for i, e := range held {
				if cur, _ := tb.Get(testKey(i)); cur != e {
					moved++
				}
				countLate(e, 10)
				if !e.CompareAndSwapState(0, 7) {
					t.Fatalf("flow %d: the swap on its old copy failed", i)
				}
			}
			if moved != n {
				t.Fatalf("%d of %d flows moved", moved, n)
			}
			worker.Quiescent()
			worker.Synchronize()
			lost := 0
			var first string
			for i := range n {
				e, _ := tb.Get(testKey(i))
				if e.Packets() != 2 || e.Bytes() != 110 || e.State() != 7 {
					if lost == 0 {
						first = fmt.Sprintf("flow %d: packets %d bytes %d state %d; want 2, 110, 7", i, e.Packets(), e.Bytes(), e.State())
					}
					lost++
				}
			}
			switch {
			case tc.wantLoss && lost == 0:
				t.Fatal("nothing lost: the test does not catch this fault")
			case !tc.wantLoss && lost > 0:
				t.Fatalf("%d flows lost counts or swaps; %s", lost, first)
			}
			t.Logf("%d of %d flows lost something", lost, n)
		})
	}
}

// OnRemove sees the final counters and state of a flow that moved before
// it left: the fold of the move runs before the callback.
func TestOnRemoveSeesFoldedCounts(t *testing.T) {
	d := reclaim.NewDomain()
	got := map[int][2]uint64{}
	tb := newTable(t, Config[int]{Limit: 1000, Domain: d, OnRemove: func(e *Entry[int], _ Cause) {
		got[*e.Value()] = [2]uint64{e.Packets(), uint64(e.State())}
	}})
	for i := range 100 {
		tb.Insert(testKey(i), i)
	}
	worker := d.Register()
	held := make([]*Entry[int], 100)
	for i := range held {
		held[i], _ = tb.Get(testKey(i))
	}
	tb.CompactAll()
	for i, e := range held {
		countLate(e, 1)
		e.CompareAndSwapState(0, 3)
		tb.Remove(testKey(i))
	}
	worker.Quiescent()
	worker.Synchronize()
	worker.Unregister()
	for i := range 100 {
		if got[i] != [2]uint64{1, 3} {
			t.Fatalf("flow %d: OnRemove saw packets %d state %d, want 1, 3", i, got[i][0], got[i][1])
		}
	}
}

// Count, the state word and the counters' readers allocate nothing.
func TestCountAllocatesNothing(t *testing.T) {
	tb := newTable(t, Config[int]{Limit: 10})
	e, _ := tb.Insert(testKey(1), 1)
	if a := testing.AllocsPerRun(1000, func() {
		e.Count(64)
		e.CompareAndSwapState(e.State(), e.State()+1)
		_ = e.Packets() + e.Bytes()
	}); a != 0 {
		t.Fatalf("Count and the state word allocate %v times", a)
	}
}

// The record layout Entry's doc comment draws: what a hit reads (key,
// last seen, the value) first and together, in the first 80 bytes with a
// 24-byte value, what Count writes (the moved bit in the state word,
// packets, bytes) after it.
func TestEntryLayout(t *testing.T) {
	var e Entry[[24]byte]
	for _, f := range []struct {
		name      string
		got, want uintptr
	}{
		{"lastSeen", unsafe.Offsetof(e.lastSeen), 48},
		{"value", unsafe.Offsetof(e.value), 56},
		{"state", unsafe.Offsetof(e.state), 80},
		{"packets", unsafe.Offsetof(e.packets), 88},
		{"bytes", unsafe.Offsetof(e.bytes), 96},
		{"size with a 24-byte value", unsafe.Sizeof(e), 104},
	} {
		if f.got != f.want {
			t.Errorf("Entry %s at %d, the doc says %d", f.name, f.got, f.want)
		}
	}
}
