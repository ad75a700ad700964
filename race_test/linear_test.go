package race_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
)

// The operations a linearizability history records, on one key each.
const (
	linGet = iota
	linInsert
	linRemove
)

type linIn struct {
	op  int
	key int // index into the small key set
	val int // Insert: the value stored (unique per operation)
}

type linOut struct {
	ok  bool // Get: found; Insert: stored (no error); Remove: removed
	val int  // Get: the value found
}

// kvModel is the sequential specification of the table restricted to Get,
// Insert and Remove: per key, absent (0) or one value. Histories are
// partitioned by key (the table is linearizable per key, DESIGN.md
// invariant 2), which keeps the check fast.
var kvModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[int][]porcupine.Operation{}
		var keys []int
		for _, op := range h {
			k := op.Input.(linIn).key
			if _, ok := by[k]; !ok {
				keys = append(keys, k)
			}
			by[k] = append(by[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() any { return 0 },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(int), input.(linIn), output.(linOut)
		switch in.op {
		case linGet:
			return out.ok == (s != 0) && (!out.ok || out.val == s), s
		case linInsert:
			if !out.ok {
				return true, s // ErrFull: nothing changed
			}
			return true, in.val
		default:
			return out.ok == (s != 0), 0
		}
	},
	DescribeOperation: describeLin,
	DescribeState: func(state any) string {
		if s := state.(int); s != 0 {
			return fmt.Sprint(s)
		}
		return "absent"
	},
}

func describeLin(input, output any) string {
	in, out := input.(linIn), output.(linOut)
	switch in.op {
	case linGet:
		if !out.ok {
			return fmt.Sprintf("Get(k%d) -> miss", in.key)
		}
		return fmt.Sprintf("Get(k%d) -> %d", in.key, out.val)
	case linInsert:
		return fmt.Sprintf("Insert(k%d, %d) -> %v", in.key, in.val, out.ok)
	default:
		return fmt.Sprintf("Remove(k%d) -> %v", in.key, out.ok)
	}
}

// checkLinearizable checks h against model and reports whether it is
// linearizable; when it is not, it writes porcupine's visualisation to a
// temp file and returns its path.
func checkLinearizable(t *testing.T, model porcupine.Model, h []porcupine.Operation) (porcupine.CheckResult, string) {
	t.Helper()
	res, info := porcupine.CheckOperationsVerbose(model, h, 20*time.Second)
	if res != porcupine.Illegal {
		return res, ""
	}
	f, err := os.CreateTemp("", "flowcache-linearizability-*.html")
	if err != nil {
		t.Fatalf("not linearizable, and the visualisation file: %v", err)
	}
	f.Close()
	if err := porcupine.VisualizePath(model, info, f.Name()); err != nil {
		t.Fatalf("not linearizable, and writing the visualisation: %v", err)
	}
	return res, f.Name()
}

// TestLinearizable records concurrent histories of Get, Insert and Remove
// on a small key set of a one-shard table while another goroutine forces
// rebuilds all the time: it inserts bursts of filler keys (the shard grows
// past each load threshold) and runs expiry passes that drop them (the
// shard shrinks). The checked keys never expire. Every history must be
// linearizable per key (DESIGN.md invariant 2); a history that is not
// fails the test, naming the file with porcupine's visualisation.
func TestLinearizable(t *testing.T) {
	const (
		clients = 4
		keys    = 5
	)
	rounds, perClient := 60, 500
	if d := longDuration(); d > 0 {
		rounds = 1 << 30
	}
	clock := newFakeClock()
	tb, err := flowcache.New(flowcache.Config[int]{
		Name:   "lin",
		Limit:  1 << 16,
		Shards: 1,
		Clock:  clock.Now,
		Domain: reclaim.NewDomain(),
		Expiry: func(e *flowcache.Entry[int]) time.Duration {
			if *e.Value() < 0 {
				return time.Millisecond // filler
			}
			return 1000 * time.Hour
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	keyOf := func(i int) flowcache.FlowKey { return key(1<<27 | uint32(i)) }

	var ops, unknown int
	start := time.Now()
	b := stressBudget(0, 0, 0)
	for round := 0; round < rounds; round++ {
		if b.long && time.Since(start) > b.maxDur {
			break
		}
		var seq atomic.Int64
		var nextVal atomic.Int64
		hist := make([][]porcupine.Operation, clients)
		stop := make(chan struct{})
		var rebuilder sync.WaitGroup
		rebuilder.Add(1)
		go func() {
			defer rebuilder.Done()
			for r := 0; ; r++ {
				select {
				case <-stop:
					return
				default:
				}
				n := 100 + (r*37)%250 // past 96, 192 or 384 live: one to three grows, then a shrink
				for i := range n {
					_, _ = tb.Insert(key(1<<26|uint32(i)), -1)
				}
				clock.Advance(time.Second)
				tb.Expire(clock.Now())
			}
		}()
		var wg sync.WaitGroup
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(round), uint64(c)))
				for range perClient {
					in := linIn{op: rng.IntN(3), key: rng.IntN(keys)}
					k := keyOf(in.key)
					var out linOut
					call := seq.Add(1)
					switch in.op {
					case linGet:
						if e, ok := tb.Get(k); ok {
							out = linOut{ok: true, val: *e.Value()}
						}
					case linInsert:
						in.val = int(nextVal.Add(1))
						_, err := tb.Insert(k, in.val)
						out.ok = err == nil
					default:
						out.ok = tb.Remove(k)
					}
					ret := seq.Add(1)
					hist[c] = append(hist[c], porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret})
				}
			}()
		}
		wg.Wait()
		close(stop)
		rebuilder.Wait()
		var h []porcupine.Operation
		for _, ch := range hist {
			h = append(h, ch...)
		}
		ops += len(h)
		res, path := checkLinearizable(t, kvModel, h)
		switch res {
		case porcupine.Illegal:
			t.Fatalf("round %d: history of %d operations is not linearizable; visualisation: %s", round, len(h), path)
		case porcupine.Unknown:
			unknown++
		}
		for i := range keys { // the next round starts from an empty key set
			tb.Remove(keyOf(i))
		}
	}
	st := tb.Stats()
	t.Logf("%d operations checked in %v, %d rounds timed out (Unknown); rebuilds: grow %d, shrink %d", ops, time.Since(start).Round(time.Millisecond), unknown, st.Grows, st.Shrinks)
	if st.Grows == 0 || st.Shrinks == 0 {
		t.Errorf("no rebuilds under the histories: %v", st)
	}
	if unknown == rounds {
		t.Errorf("every check timed out")
	}
}

// TestLinearizabilityCheckerCatchesBugs shows the check can fail: a
// history with a stale read, and a real history checked against a model
// with a deliberate bug (Remove that does nothing), are both found not
// linearizable, and the visualisation file is written.
func TestLinearizabilityCheckerCatchesBugs(t *testing.T) {
	op := func(c int, in linIn, out linOut, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: in, Output: out, Call: call, Return: ret}
	}
	stale := []porcupine.Operation{
		op(0, linIn{op: linInsert, val: 1}, linOut{ok: true}, 0, 1),
		op(0, linIn{op: linRemove}, linOut{ok: true}, 2, 3),
		op(1, linIn{op: linGet}, linOut{ok: true, val: 1}, 4, 5), // reads a value removed before it began
	}
	res, path := checkLinearizable(t, kvModel, stale)
	if res != porcupine.Illegal {
		t.Fatalf("stale read: checker said %v, want Illegal", res)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		t.Fatalf("visualisation %q not written: %v", path, err)
	}
	os.Remove(path)

	// A real, sequential history of the table...
	tb, err := flowcache.New(flowcache.Config[int]{Limit: 16, Domain: reclaim.NewDomain()})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	var h []porcupine.Operation
	var ts int64
	k := key(1)
	record := func(in linIn, out linOut) { h = append(h, op(0, in, out, ts, ts+1)); ts += 2 }
	_, err = tb.Insert(k, 7)
	record(linIn{op: linInsert, val: 7}, linOut{ok: err == nil})
	record(linIn{op: linRemove}, linOut{ok: tb.Remove(k)})
	_, found := tb.Get(k)
	record(linIn{op: linGet}, linOut{ok: found})
	if res, _ := checkLinearizable(t, kvModel, h); res != porcupine.Ok {
		t.Fatalf("real history against the right model: %v", res)
	}
	// ...against a model whose Remove forgets to remove.
	broken := kvModel
	broken.Step = func(state, input, output any) (bool, any) {
		if input.(linIn).op == linRemove {
			return output.(linOut).ok == (state.(int) != 0), state
		}
		return kvModel.Step(state, input, output)
	}
	res, path = checkLinearizable(t, broken, h)
	if res != porcupine.Illegal {
		t.Fatalf("broken model: checker said %v, want Illegal", res)
	}
	os.Remove(path)
}
