package race_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
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

// The pair model: flows under one or two keys. Keys come in groups of
// pairGroupKeys; a pair is only ever made of two keys of one group, so
// the table's histories can be partitioned by group, which keeps the
// check fast while pairs still tie keys together.
const pairGroupKeys = 3

// The operations of the pair model (linGet, linInsert and linRemove are
// shared with kvModel).
const (
	linInsertPair = iota + linRemove + 1
	linGetOrInsert
	linGetOrInsertPair
)

// pairIn is one operation of the pair model, on keys of one group.
type pairIn struct {
	op    int
	group int
	key   int // index in the group
	reply int // InsertPair, GetOrInsertPair: the second key's index (== key: a one-key flow)
	val   int // inserts: the value stored (unique per operation)
}

type pairOut struct {
	ok       bool // Get, GetOrInsert*: found or stored; Insert*: stored; Remove: removed
	val      int  // Get, GetOrInsert*: the value of the flow returned
	inserted bool // GetOrInsert*: this call stored the flow
}

// pairState is one group's keys: the value of the flow stored under each,
// 0 when absent. Values are unique per insert, so two keys holding the
// same value are the two keys of one pair.
type pairState [pairGroupKeys]int

// drop removes the flow stored under key i, whole: both keys of a pair.
func (s pairState) drop(i int) pairState {
	if v := s[i]; v != 0 {
		for j := range s {
			if s[j] == v {
				s[j] = 0
			}
		}
	}
	return s
}

// pairModel is the sequential specification of a table of flows under
// one or two keys (DESIGN.md, "Connections"): Get of either key of a pair
// finds the pair; Remove of either removes both; an insert of a key that
// is present, alone or in a pair, replaces that flow whole (a replaced
// pair leaves with both its keys); GetOrInsertPair returns the flow stored
// under either key, or stores a pair when neither is present. An insert
// that fails (ErrFull) changes nothing.
var pairModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[int][]porcupine.Operation{}
		var groups []int
		for _, op := range h {
			g := op.Input.(pairIn).group
			if _, ok := by[g]; !ok {
				groups = append(groups, g)
			}
			by[g] = append(by[g], op)
		}
		out := make([][]porcupine.Operation, 0, len(groups))
		for _, g := range groups {
			out = append(out, by[g])
		}
		return out
	},
	Init: func() any { return pairState{} },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(pairState), input.(pairIn), output.(pairOut)
		k, r := in.key, in.reply
		switch in.op {
		case linGet:
			return out.ok == (s[k] != 0) && (!out.ok || out.val == s[k]), s
		case linInsert, linInsertPair:
			if !out.ok {
				return true, s
			}
			s = s.drop(k)
			if in.op == linInsertPair {
				s = s.drop(r)
				s[r] = in.val
			}
			s[k] = in.val
			return true, s
		case linRemove:
			return out.ok == (s[k] != 0), s.drop(k)
		case linGetOrInsert, linGetOrInsertPair:
			if in.op == linGetOrInsert {
				r = k
			}
			switch {
			case !out.ok: // ErrFull: only when neither key was present
				return s[k] == 0 && s[r] == 0, s
			case out.inserted:
				if s[k] != 0 || s[r] != 0 || out.val != in.val {
					return false, s
				}
				s[k], s[r] = in.val, in.val
				return true, s
			default:
				return out.val != 0 && (out.val == s[k] || out.val == s[r]), s
			}
		}
		return false, s
	},
	DescribeOperation: describePair,
	DescribeState: func(state any) string {
		s := state.(pairState)
		var b strings.Builder
		for i, v := range s {
			if i > 0 {
				b.WriteString(" ")
			}
			if v == 0 {
				fmt.Fprintf(&b, "k%d:-", i)
			} else {
				fmt.Fprintf(&b, "k%d:%d", i, v)
			}
		}
		return b.String()
	},
}

func describePair(input, output any) string {
	in, out := input.(pairIn), output.(pairOut)
	g := func(i int) string { return fmt.Sprintf("g%dk%d", in.group, i) }
	res := "miss"
	if out.ok {
		res = fmt.Sprint(out.val)
	}
	switch in.op {
	case linGet:
		return fmt.Sprintf("Get(%s) -> %s", g(in.key), res)
	case linInsert:
		return fmt.Sprintf("Insert(%s, %d) -> %v", g(in.key), in.val, out.ok)
	case linInsertPair:
		return fmt.Sprintf("InsertPair(%s, %s, %d) -> %v", g(in.key), g(in.reply), in.val, out.ok)
	case linRemove:
		return fmt.Sprintf("Remove(%s) -> %v", g(in.key), out.ok)
	case linGetOrInsert:
		return fmt.Sprintf("GetOrInsert(%s, %d) -> %s inserted %v", g(in.key), in.val, res, out.inserted)
	default:
		return fmt.Sprintf("GetOrInsertPair(%s, %s, %d) -> %s inserted %v", g(in.key), g(in.reply), in.val, res, out.inserted)
	}
}

// TestLinearizable records concurrent histories of Get, Insert,
// InsertPair, GetOrInsert, GetOrInsertPair and Remove on a small key set
// (pairs tie keys together within a group) of a two-shard table, so that
// a pair's keys lie in one shard or in two, while another goroutine
// forces rebuilds and moves all the time: it inserts bursts of filler
// flows (the shards grow past each load threshold), removes some of them
// again (churn: chunks fall to half live and are evacuated, moving the
// checked flows that share them), and runs expiry passes on a fake clock
// that drop the rest (the drained shards are rebuilt and compacted: every
// checked flow moves). The checked flows never expire (class 0, TTL of
// 1000 h); the fillers are in class 1, whose timeout is 1 ms. Every
// history must be linearizable (DESIGN.md invariant 2) against pairModel;
// a history that is not fails the test, naming the file with porcupine's
// visualisation.
func TestLinearizable(t *testing.T) {
	const (
		clients = 4
		groups  = 2
	)
	rounds, perClient := 60, 500
	if raceEnabled {
		rounds = 40
	}
	if d := longDuration(); d > 0 {
		rounds = 1 << 30
	}
	clock := newFakeClock()
	dom := reclaim.NewDomain()
	tb, err := flowcache.New(flowcache.Config[int]{
		Name:     "lin",
		Limit:    1 << 16,
		Shards:   2,
		TTL:      1000 * time.Hour,
		Timeouts: []time.Duration{time.Millisecond}, // class 1: fillers
		Clock:    clock.Now,
		Domain:   dom,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	keyOf := func(g, i int) flowcache.FlowKey { return key(1<<27 | uint32(g*pairGroupKeys+i)) }

	var ops, unknown int
	start := time.Now()
	b := stressBudget(0, 0, 0)
	var fail failures
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
			// Registered: it holds each filler's entry from Insert to
			// SetClass. Its Synchronize runs the deferred folds.
			rd := dom.Register()
			defer rd.Unregister()
			for r := 0; ; r++ {
				select {
				case <-stop:
					return
				default:
				}
				n := 100 + (r*37)%250 // past 96, 192 or 384 live: one to three grows, then a shrink
				for i := range n {
					e, err := tb.Insert(key(1<<26|uint32(i)), -1)
					if err != nil {
						fail.add("filler insert: %v", err)
						return
					}
					if !tb.SetClass(e, 1) {
						fail.add("SetClass of a filler just inserted failed")
					}
				}
				rd.Quiescent()
				if r%2 == 1 {
					// Churn: remove two fillers in three, then insert
					// more, so chunks fall to half live and the next
					// chunk's allocation evacuates them.
					for i := range n {
						if i%3 != 0 {
							tb.Remove(key(1<<26 | uint32(i)))
						}
					}
					for i := range n {
						if e, err := tb.Insert(key(1<<26|1<<16|uint32(i)), -1); err == nil {
							tb.SetClass(e, 1)
						}
					}
					rd.Quiescent()
				}
				clock.Advance(time.Second)
				tb.Expire(clock.Now())
				rd.Synchronize()
			}
		}()
		var wg sync.WaitGroup
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(round), uint64(c)))
				for range perClient {
					in := pairIn{group: rng.IntN(groups), key: rng.IntN(pairGroupKeys)}
					in.reply = (in.key + 1 + rng.IntN(pairGroupKeys-1)) % pairGroupKeys
					if rng.IntN(16) == 0 {
						in.reply = in.key // k == reply: a one-key flow
					}
					switch x := rng.IntN(20); {
					case x < 7:
						in.op = linGet
					case x < 10:
						in.op = linInsert
					case x < 13:
						in.op = linInsertPair
					case x < 15:
						in.op = linGetOrInsert
					case x < 17:
						in.op = linGetOrInsertPair
					default:
						in.op = linRemove
					}
					k, r := keyOf(in.group, in.key), keyOf(in.group, in.reply)
					var out pairOut
					call := seq.Add(1)
					switch in.op {
					case linGet:
						if e, ok := tb.Get(k); ok {
							out = pairOut{ok: true, val: *e.Value()}
						}
					case linInsert:
						in.val = int(nextVal.Add(1))
						_, err := tb.Insert(k, in.val)
						out.ok = err == nil
					case linInsertPair:
						in.val = int(nextVal.Add(1))
						_, err := tb.InsertPair(k, r, in.val)
						out.ok = err == nil
					case linGetOrInsert, linGetOrInsertPair:
						in.val = int(nextVal.Add(1))
						var e *flowcache.Entry[int]
						var err error
						if in.op == linGetOrInsert {
							e, out.inserted, err = tb.GetOrInsert(k, func() int { return in.val })
						} else {
							e, out.inserted, err = tb.GetOrInsertPair(k, r, func() int { return in.val })
						}
						if err == nil {
							out.ok, out.val = true, *e.Value()
						}
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
		if fail.count() > 0 {
			break
		}
		var h []porcupine.Operation
		for _, ch := range hist {
			h = append(h, ch...)
		}
		ops += len(h)
		res, path := checkLinearizable(t, pairModel, h)
		switch res {
		case porcupine.Illegal:
			t.Fatalf("round %d: history of %d operations is not linearizable; visualisation: %s", round, len(h), path)
		case porcupine.Unknown:
			unknown++
		}
		for g := range groups { // the next round starts from an empty key set
			for i := range pairGroupKeys {
				tb.Remove(keyOf(g, i))
			}
		}
	}
	fail.report(t)
	st := tb.Stats()
	t.Logf("%d operations checked in %v, %d rounds timed out (Unknown); rebuilds: grow %d, shrink %d, compactions %d (moved %d); pairs live at the end %d",
		ops, time.Since(start).Round(time.Millisecond), unknown, st.Grows, st.Shrinks, st.Compactions, st.Moved, st.Pairs)
	if st.Grows == 0 || st.Shrinks == 0 || st.Compactions == 0 || st.Moved == 0 {
		t.Errorf("no rebuilds or moves under the histories: %v", st)
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
