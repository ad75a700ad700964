package race_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
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
// partitioned by key (the table is linearizable per key, docs/DESIGN.md
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
	linSetValue    // SetValue of the flow a Get found: a new value, the same flow
	linRemoveEntry // RemoveEntry of the flow a Get found
)

// linV is the pair model's value: the flow (the value its insert gave
// it, unique) and its current value, which SetValue changes.
type linV struct{ flow, val int }

// pairIn is one operation of the pair model, on keys of one group.
type pairIn struct {
	op    int
	group int
	key   int // index in the group; SetValue, RemoveEntry: the flow's first key
	reply int // InsertPair, GetOrInsertPair: the second key's index (== key: a one-key flow); SetValue, RemoveEntry: the flow's
	val   int // inserts, SetValue: the value stored (unique per operation)
	flow  int // SetValue, RemoveEntry: the flow (linV.flow of the entry a Get found)
}

type pairOut struct {
	ok       bool // Get, GetOrInsert*: found or stored; Insert*, SetValue: stored; Remove*: removed
	flow     int  // Get, GetOrInsert*: the flow returned
	val      int  // Get, GetOrInsert*: its value
	inserted bool // GetOrInsert*: this call stored the flow
}

// cell is what a key holds: the flow stored under it (0: none) and the
// flow's value. Flows are unique per insert, so two keys holding the same
// flow are the two keys of one pair.
type cell struct{ flow, val int }

// untouched is an effect that leaves a key as it is.
var untouched = cell{flow: -1}

// pairState is one group's state: what each key holds, and the writes
// that have been decided but whose effects have not all landed yet.
type pairState struct {
	v    [pairGroupKeys]cell
	pend [4]pairPending // sorted by id, zero entries last: == compares states
}

// pairPending is a write whose effects are landing key by key.
type pairPending struct {
	id    int                 // the operation's index in the history (+1)
	eff   [pairGroupKeys]cell // per key: what it holds next ({0, 0}: absent), or untouched
	named [pairGroupKeys]bool // the keys the caller named (k, and reply for a pair)
	left  int                 // steps still to land
}

// pairStep is what pairModel checks: a whole read, or one step of a
// write. A write (Insert, InsertPair, Remove, an inserting GetOrInsert*)
// is decided at one point, under the locks of every shard it touches,
// and its effect on each key then lands with one store of that key's
// slot, which lock-free readers see on its own: so a write is split into
// one step per key it names, plus one for the keys it does not name (the
// other key of a pair it replaces or removes), all with the write's call
// and return. Whichever step comes first decides the write from the state
// then; the others land its effect on their keys, in any order. No other
// write touching those keys may be decided in between (it would wait for
// the locks).
type pairStep struct {
	in   pairIn
	id   int
	step int // -1: the whole operation (a read); 0..pairGroupKeys-1: that named key; pairGroupKeys: the keys not named
}

// pairWrite reports the keys a write names and how many steps it has.
func pairWrite(in pairIn, out pairOut) (named [pairGroupKeys]bool, steps int, ok bool) {
	switch {
	case in.op == linInsert && out.ok, in.op == linRemove && out.ok:
		named[in.key] = true
		return named, 2, true
	case in.op == linInsertPair && out.ok:
		named[in.key], named[in.reply] = true, true
		n := 2
		if in.reply != in.key {
			n++
		}
		return named, n, true
	case (in.op == linGetOrInsert || in.op == linGetOrInsertPair) && out.inserted:
		named[in.key] = true
		n := 1
		if in.op == linGetOrInsertPair && in.reply != in.key {
			named[in.reply] = true
			n++
		}
		return named, n, true // the keys were absent: nothing else to remove
	case (in.op == linSetValue || in.op == linRemoveEntry) && out.ok:
		// The flow's own keys, one store each; nothing else changes.
		named[in.key], named[in.reply] = true, true
		n := 1
		if in.reply != in.key {
			n++
		}
		return named, n, true
	}
	return named, 0, false
}

// splitPair turns a history of pair-model operations into pairSteps.
func splitPair(h []porcupine.Operation) []porcupine.Operation {
	var out []porcupine.Operation
	for i, op := range h {
		in, o := op.Input.(pairIn), op.Output.(pairOut)
		named, _, write := pairWrite(in, o)
		if !write {
			op.Input = pairStep{in: in, id: i + 1, step: -1}
			out = append(out, op)
			continue
		}
		for j := range pairGroupKeys {
			if named[j] {
				op.Input = pairStep{in: in, id: i + 1, step: j}
				out = append(out, op)
			}
		}
		if in.op == linInsert || in.op == linInsertPair || in.op == linRemove {
			// The step that lands the removal of keys it does not name.
			op.Input = pairStep{in: in, id: i + 1, step: pairGroupKeys}
			out = append(out, op)
		}
	}
	return out
}

// pairModel is the sequential specification of a table of flows under
// one or two keys (docs/DESIGN.md, "Connections"): Get of either key of a pair
// finds the pair; Remove of either removes both; SetValue gives a stored
// flow a new value under both its keys and keeps it the same flow, and
// fails once the flow has left; RemoveEntry removes exactly one flow,
// and does nothing once it has left, whatever its keys hold then; an insert of a key that
// is present, alone or in a pair, replaces that flow whole (a replaced
// pair leaves with both its keys); GetOrInsertPair returns the flow stored
// under either key, or stores a pair when neither is present. An insert
// that fails (ErrFull) changes nothing. Each write is decided at one
// point and its effects land key by key before it returns (see
// pairStep): the only freedom the model gives the table is that a reader
// may see one key of a write before another, as docs/DESIGN.md allows
// ("Readers may find one key a moment before the other; once InsertPair
// returns, both are found").
var pairModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[int][]porcupine.Operation{}
		var groups []int
		for _, op := range h {
			g := op.Input.(pairStep).in.group
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
		s, st, out := state.(pairState), input.(pairStep), output.(pairOut)
		if st.step < 0 {
			return pairRead(s, st.in, out), s
		}
		return pairWriteStep(s, st, out)
	},
	DescribeOperation: func(input, output any) string {
		st := input.(pairStep)
		d := describePair(st.in, output)
		switch {
		case st.step < 0:
			return d
		case st.step == pairGroupKeys:
			return d + " [other keys]"
		default:
			return fmt.Sprintf("%s [k%d]", d, st.step)
		}
	},
	DescribeState: func(state any) string {
		s := state.(pairState)
		var b strings.Builder
		for i, v := range s.v {
			if i > 0 {
				b.WriteString(" ")
			}
			if v.flow == 0 {
				fmt.Fprintf(&b, "k%d:-", i)
			} else {
				fmt.Fprintf(&b, "k%d:%d=%d", i, v.flow, v.val)
			}
		}
		for _, p := range s.pend {
			if p.id != 0 {
				fmt.Fprintf(&b, " (op %d landing: %v)", p.id, p.eff)
			}
		}
		return b.String()
	},
}

// pairRead checks an operation that changes nothing against state s.
func pairRead(s pairState, in pairIn, out pairOut) bool {
	k, r := in.key, in.reply
	got := cell{out.flow, out.val}
	switch in.op {
	case linGet:
		return out.ok == (s.v[k].flow != 0) && (!out.ok || got == s.v[k])
	case linRemove: // removed nothing
		return s.v[k].flow == 0
	case linInsert, linInsertPair: // refused (ErrFull): only when none of its keys was present
		return s.v[k].flow == 0 && (in.op == linInsert || s.v[r].flow == 0)
	case linGetOrInsert, linGetOrInsertPair:
		if in.op == linGetOrInsert {
			r = k
		}
		if !out.ok { // refused: neither key present
			return s.v[k].flow == 0 && s.v[r].flow == 0
		}
		return got.flow != 0 && (got == s.v[k] || got == s.v[r])
	case linSetValue, linRemoveEntry: // failed: the flow is not stored
		for _, c := range s.v {
			if c.flow == in.flow {
				return false
			}
		}
		return true
	}
	return false
}

// pairWriteStep lands one step of a write, deciding the write first if
// this is its first step.
func pairWriteStep(s pairState, st pairStep, out pairOut) (bool, pairState) {
	pi := -1
	for i, p := range s.pend {
		if p.id == st.id {
			pi = i
		}
	}
	if pi < 0 {
		// The first step: decide the write from the state now.
		in := st.in
		named, steps, _ := pairWrite(in, out)
		var eff [pairGroupKeys]cell
		for j := range eff {
			eff[j] = untouched
		}
		drop := func(x int) { // the flow under key x leaves, whole
			if f := s.v[x].flow; f != 0 {
				for j := range s.v {
					if s.v[j].flow == f {
						eff[j] = cell{}
					}
				}
			}
		}
		switch in.op {
		case linInsert, linInsertPair:
			for j := range named {
				if named[j] {
					drop(j)
				}
			}
			for j := range named {
				if named[j] {
					eff[j] = cell{in.val, in.val}
				}
			}
		case linRemove:
			if s.v[in.key].flow == 0 {
				return false, s
			}
			drop(in.key)
		case linSetValue, linRemoveEntry:
			// The flow's keys are exactly the ones it names: its keys
			// never change while it is stored.
			for j := range s.v {
				if (s.v[j].flow == in.flow) != named[j] {
					return false, s
				}
				if named[j] {
					eff[j] = cell{}
					if in.op == linSetValue {
						eff[j] = cell{in.flow, in.val}
					}
				}
			}
		default: // an inserting GetOrInsert*: its keys were absent
			if out.flow != in.val || out.val != in.val {
				return false, s
			}
			for j := range named {
				if named[j] {
					if s.v[j].flow != 0 {
						return false, s
					}
					eff[j] = cell{in.val, in.val}
				}
			}
		}
		// A write on keys another write is still landing on would have
		// waited for its locks.
		for _, p := range s.pend {
			for j := range eff {
				if p.id != 0 && p.eff[j] != untouched && (eff[j] != untouched || named[j]) {
					return false, s
				}
			}
		}
		pi = -1
		for i, p := range s.pend {
			if p.id == 0 {
				pi = i
				break
			}
		}
		if pi < 0 {
			panic("pairModel: more writes landing at once than clients")
		}
		s.pend[pi] = pairPending{id: st.id, eff: eff, named: named, left: steps}
	}
	p := &s.pend[pi]
	for j := range p.eff {
		mine := st.step == j || st.step == pairGroupKeys && !p.named[j]
		if mine && p.eff[j] != untouched {
			s.v[j] = p.eff[j]
		}
	}
	if p.left--; p.left == 0 {
		*p = pairPending{}
	}
	slices.SortFunc(s.pend[:], func(a, b pairPending) int {
		switch {
		case a.id == b.id:
			return 0
		case a.id == 0:
			return 1
		case b.id == 0:
			return -1
		}
		return a.id - b.id
	})
	return true, s
}

func describePair(input, output any) string {
	in, out := input.(pairIn), output.(pairOut)
	g := func(i int) string { return fmt.Sprintf("g%dk%d", in.group, i) }
	res := "miss"
	if out.ok {
		res = fmt.Sprintf("%d=%d", out.flow, out.val)
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
	case linSetValue:
		return fmt.Sprintf("SetValue(flow %d [%s %s], %d) -> %v", in.flow, g(in.key), g(in.reply), in.val, out.ok)
	case linRemoveEntry:
		return fmt.Sprintf("RemoveEntry(flow %d [%s %s]) -> %v", in.flow, g(in.key), g(in.reply), out.ok)
	default:
		return fmt.Sprintf("GetOrInsertPair(%s, %s, %d) -> %s inserted %v", g(in.key), g(in.reply), in.val, res, out.inserted)
	}
}

// TestLinearizable records concurrent histories of Get, Insert,
// InsertPair, GetOrInsert, GetOrInsertPair, Remove, and SetValue and
// RemoveEntry of the flow a Get found, on a small key set
// (pairs tie keys together within a group) of a two-shard table, so that
// a pair's keys lie in one shard or in two, while another goroutine
// forces rebuilds and moves all the time: it inserts bursts of filler
// flows (the shards grow past each load threshold), removes some of them
// again (churn: chunks fall to half live and are evacuated, moving the
// checked flows that share them), and runs expiry passes on a fake clock
// that drop the rest (the drained shards are rebuilt and compacted: every
// checked flow moves). The checked flows never expire (class 0, TTL of
// 1000 h); the fillers are in class 1, whose timeout is 1 ms. Every
// history must be linearizable (invariant 2 in docs/DESIGN.md) against pairModel;
// a history that is not fails the test, naming the file with porcupine's
// visualisation.
func TestLinearizable(t *testing.T) {
	const (
		clients = 4
		groups  = 2
	)
	// Rounds: at least minRounds, then more until the time cap (the
	// checker's time is most of it, and -race slows it several times).
	minRounds, maxRounds, perClient := 10, 60, 500
	timeCap := 3 * time.Second
	if raceEnabled {
		// The checker, not the table, takes most of a round under -race
		// (about 0.6 s for 2000 operations), and more than linearly in
		// a round's length.
		minRounds, perClient, timeCap = 5, 300, 6*time.Second
	}
	if d := longDuration(); d > 0 {
		minRounds, maxRounds, timeCap = 1, 1<<30, d
	}
	clock := newFakeClock()
	dom := reclaim.NewDomain()
	tb, err := flowcache.New(flowcache.Config[linV]{
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
	indexOf := func(k flowcache.FlowKey) int { // the index in its group of a key keyOf made
		return int(k.Src().As4()[3]) % pairGroupKeys
	}

	var ops, unknown int
	var changes [2]int // SetValue and RemoveEntry calls that changed a flow
	start := time.Now()
	b := stressBudget(0, 0, 0)
	var fail failures
	rounds := 0
	r := 0 // the rebuilder's cycles, across rounds
	for round := 0; round < maxRounds; round++ {
		if el := time.Since(start); el > timeCap && round >= minRounds || b.long && el > b.maxDur {
			break
		}
		rounds++
		var seq atomic.Int64
		var cycles atomic.Int64 // the rebuilder's passes this round
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
			for ; ; r++ {
				select {
				case <-stop:
					return
				default:
				}
				// Past 96, 192 or 384 live in each of the two shards: one
				// to three grows, then a pass that drains the shard to
				// under a quarter of its slots (a shrink and compaction).
				n := 200 + (r*37)%500
				for i := range n {
					e, err := tb.Insert(key(1<<26|uint32(i)), linV{-1, -1})
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
						if e, err := tb.Insert(key(1<<26|1<<16|uint32(i)), linV{-1, -1}); err == nil {
							tb.SetClass(e, 1)
						}
					}
					rd.Quiescent()
				}
				clock.Advance(time.Second)
				tb.Expire(clock.Now())
				cycles.Add(1)
				rd.Synchronize()
			}
		}()
		var wg sync.WaitGroup
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(round), uint64(c)))
				// perClient operations, and more (up to twice as many)
				// until the rebuilder has finished a cycle, so that every
				// round runs across grows, evacuations and a compacting
				// pass however slow the rebuilder is (-race).
				for n := 0; n < perClient || cycles.Load() == 0 && n < 2*perClient; n++ {
					in := pairIn{group: rng.IntN(groups), key: rng.IntN(pairGroupKeys)}
					in.reply = (in.key + 1 + rng.IntN(pairGroupKeys-1)) % pairGroupKeys
					if rng.IntN(16) == 0 {
						in.reply = in.key // k == reply: a one-key flow
					}
					switch x := rng.IntN(24); {
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
					case x < 20:
						in.op = linSetValue
					case x < 21:
						in.op = linRemoveEntry
					default:
						in.op = linRemove
					}
					k, r := keyOf(in.group, in.key), keyOf(in.group, in.reply)
					var out pairOut
					found := func(e *flowcache.Entry[linV]) pairOut {
						return pairOut{ok: true, flow: e.Value().flow, val: e.Value().val}
					}
					record := func(in pairIn, out pairOut, call int64) {
						ret := seq.Add(1)
						hist[c] = append(hist[c], porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret})
					}
					call := seq.Add(1)
					switch in.op {
					case linGet:
						if e, ok := tb.Get(k); ok {
							out = found(e)
						}
					case linInsert:
						in.val = int(nextVal.Add(1))
						_, err := tb.Insert(k, linV{in.val, in.val})
						out.ok = err == nil
					case linInsertPair:
						in.val = int(nextVal.Add(1))
						_, err := tb.InsertPair(k, r, linV{in.val, in.val})
						out.ok = err == nil
					case linGetOrInsert, linGetOrInsertPair:
						in.val = int(nextVal.Add(1))
						var e *flowcache.Entry[linV]
						var inserted bool
						var err error
						mk := func() linV { return linV{in.val, in.val} }
						if in.op == linGetOrInsert {
							e, inserted, err = tb.GetOrInsert(k, mk)
						} else {
							e, inserted, err = tb.GetOrInsertPair(k, r, mk)
						}
						if err == nil {
							out = found(e)
							out.inserted = inserted
						}
					case linSetValue, linRemoveEntry:
						// The flow a Get finds (recorded as a Get), then
						// the change to exactly that flow.
						e, ok := tb.Get(k)
						if !ok {
							record(pairIn{op: linGet, group: in.group, key: in.key}, out, call)
							continue
						}
						record(pairIn{op: linGet, group: in.group, key: in.key}, found(e), call)
						in.flow = e.Value().flow
						in.key = indexOf(e.Key())
						in.reply = in.key
						if rk, paired := e.Reply(); paired {
							in.reply = indexOf(rk)
						}
						call = seq.Add(1)
						if in.op == linSetValue {
							in.val = int(nextVal.Add(1))
							_, out.ok = tb.SetValue(e, linV{in.flow, in.val})
						} else {
							out.ok = tb.RemoveEntry(e)
						}
					default:
						out.ok = tb.Remove(k)
					}
					record(in, out, call)
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
		for _, op := range h {
			if in := op.Input.(pairIn); op.Output.(pairOut).ok && (in.op == linSetValue || in.op == linRemoveEntry) {
				changes[in.op-linSetValue]++
			}
		}
		res, path := checkLinearizable(t, pairModel, splitPair(h))
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
	t.Logf("%d operations checked in %v (%d SetValue and %d RemoveEntry that changed a flow), %d rounds timed out (Unknown); rebuilds: grow %d, shrink %d, compactions %d (moved %d); pairs live at the end %d",
		ops, time.Since(start).Round(time.Millisecond), changes[0], changes[1], unknown, st.Grows, st.Shrinks, st.Compactions, st.Moved, st.Pairs)
	if changes[0] == 0 || changes[1] == 0 {
		t.Errorf("no SetValue or no RemoveEntry changed a flow: %v", changes)
	}
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

// TestPairModelCatchesBugs shows what pairModel accepts and rejects:
// histories in which a pair's other key outlives a write that returned
// (a Remove or a replacing Insert that left it behind, an InsertPair whose
// reply key never appears) are not linearizable; a reader that sees one
// key of a write before the other while the write runs is; and a real
// sequential history of the table with pairs passes against the model but
// not against one whose Remove forgets a pair's other key.
func TestPairModelCatchesBugs(t *testing.T) {
	type rec struct {
		c         int
		in        pairIn
		out       pairOut
		call, ret int64
	}
	build := func(rs []rec) []porcupine.Operation {
		var h []porcupine.Operation
		for _, r := range rs {
			h = append(h, porcupine.Operation{ClientId: r.c, Input: r.in, Output: r.out, Call: r.call, Return: r.ret})
		}
		return splitPair(h)
	}
	ins := func(op, k, r, v int) pairIn { return pairIn{op: op, key: k, reply: r, val: v} }
	get := func(k int) pairIn { return pairIn{op: linGet, key: k} }
	yes := pairOut{ok: true}
	found := func(v int) pairOut { return pairOut{ok: true, flow: v, val: v} }
	foundAs := func(flow, v int) pairOut { return pairOut{ok: true, flow: flow, val: v} }
	change := func(op, flow, k, r, v int) pairIn { return pairIn{op: op, flow: flow, key: k, reply: r, val: v} }
	cases := []struct {
		name string
		h    []rec
		want porcupine.CheckResult
	}{
		{"remove leaves the reply key", []rec{
			{0, ins(linInsertPair, 0, 1, 1), yes, 0, 1},
			{0, pairIn{op: linRemove, key: 1}, yes, 2, 3},
			{1, get(0), found(1), 4, 5},
		}, porcupine.Illegal},
		{"replacing insert leaves the pair's other key", []rec{
			{0, ins(linInsertPair, 0, 1, 1), yes, 0, 1},
			{0, ins(linInsert, 0, 0, 2), yes, 2, 3},
			{1, get(1), found(1), 4, 5},
		}, porcupine.Illegal},
		{"a pair replacing a pair that shares one key leaves the third key", []rec{
			{0, ins(linInsertPair, 0, 2, 1), yes, 0, 1},
			{0, ins(linInsertPair, 0, 1, 2), yes, 2, 3},
			{1, get(2), found(1), 4, 5},
		}, porcupine.Illegal},
		{"InsertPair returned without its reply key", []rec{
			{0, ins(linInsertPair, 0, 1, 1), yes, 0, 1},
			{1, get(1), pairOut{}, 2, 3},
		}, porcupine.Illegal},
		{"a reader sees the new key before the old pair's other key goes", []rec{
			{0, ins(linInsertPair, 0, 1, 1), yes, 0, 1},
			{0, ins(linInsert, 0, 0, 2), yes, 10, 20},
			{1, get(0), found(2), 11, 12},
			{1, get(1), found(1), 13, 14},
			{1, get(1), pairOut{}, 21, 22},
		}, porcupine.Ok},
		{"a reader sees a pair's first key before its reply key", []rec{
			{0, ins(linInsertPair, 0, 1, 1), yes, 10, 20},
			{1, get(0), found(1), 11, 12},
			{1, get(1), pairOut{}, 13, 14},
			{1, get(1), found(1), 21, 22},
		}, porcupine.Ok},
		{"a reader sees a key go back to its old flow", []rec{
			{0, ins(linInsertPair, 0, 1, 1), yes, 0, 1},
			{0, ins(linInsert, 0, 0, 2), yes, 10, 20},
			{1, get(0), found(2), 11, 12},
			{1, get(0), found(1), 13, 14},
		}, porcupine.Illegal},
		{"SetValue keeps the flow under both keys", []rec{
			{0, ins(linInsertPair, 0, 1, 1), yes, 0, 1},
			{0, change(linSetValue, 1, 0, 1, 5), yes, 2, 3},
			{1, get(1), foundAs(1, 5), 4, 5},
			{1, get(0), foundAs(1, 5), 6, 7},
		}, porcupine.Ok},
		{"a key shows the old value after SetValue returned", []rec{
			{0, ins(linInsertPair, 0, 1, 1), yes, 0, 1},
			{0, change(linSetValue, 1, 0, 1, 5), yes, 2, 3},
			{1, get(1), found(1), 4, 5},
		}, porcupine.Illegal},
		{"SetValue made another flow", []rec{
			{0, ins(linInsertPair, 0, 1, 1), yes, 0, 1},
			{0, change(linSetValue, 1, 0, 1, 5), yes, 2, 3},
			{1, get(0), found(5), 4, 5},
		}, porcupine.Illegal},
		{"a reader sees the new value on one key before the other", []rec{
			{0, ins(linInsertPair, 0, 1, 1), yes, 0, 1},
			{0, change(linSetValue, 1, 0, 1, 5), yes, 10, 20},
			{1, get(0), foundAs(1, 5), 11, 12},
			{1, get(1), found(1), 13, 14},
		}, porcupine.Ok},
		{"SetValue of a flow that left", []rec{
			{0, ins(linInsertPair, 0, 1, 1), yes, 0, 1},
			{0, pairIn{op: linRemove, key: 0}, yes, 2, 3},
			{0, change(linSetValue, 1, 0, 1, 5), yes, 4, 5},
		}, porcupine.Illegal},
		{"RemoveEntry of a replaced flow leaves its successor", []rec{
			{0, ins(linInsertPair, 0, 1, 1), yes, 0, 1},
			{0, ins(linInsert, 0, 0, 2), yes, 2, 3},
			{0, change(linRemoveEntry, 1, 0, 1, 0), pairOut{}, 4, 5},
			{1, get(0), found(2), 6, 7},
		}, porcupine.Ok},
		{"RemoveEntry of a replaced flow removed its successor", []rec{
			{0, ins(linInsertPair, 0, 1, 1), yes, 0, 1},
			{0, ins(linInsert, 0, 0, 2), yes, 2, 3},
			{0, change(linRemoveEntry, 1, 0, 1, 0), pairOut{}, 4, 5},
			{1, get(0), pairOut{}, 6, 7},
		}, porcupine.Illegal},
		{"RemoveEntry failed while its flow was stored", []rec{
			{0, ins(linInsertPair, 0, 1, 1), yes, 0, 1},
			{0, change(linRemoveEntry, 1, 0, 1, 0), pairOut{}, 2, 3},
		}, porcupine.Illegal},
		{"RemoveEntry left the pair's other key", []rec{
			{0, ins(linInsertPair, 0, 1, 1), yes, 0, 1},
			{0, change(linRemoveEntry, 1, 0, 1, 0), yes, 2, 3},
			{1, get(1), found(1), 4, 5},
		}, porcupine.Illegal},
	}
	for _, c := range cases {
		res, path := checkLinearizable(t, pairModel, build(c.h))
		if path != "" {
			os.Remove(path)
		}
		if res != c.want {
			t.Errorf("%s: checker said %v, want %v", c.name, res, c.want)
		}
	}

	// A real, sequential history of the table with pairs...
	tb, err := flowcache.New(flowcache.Config[linV]{Limit: 16, Shards: 2, Domain: reclaim.NewDomain()})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	keyOf := func(i int) flowcache.FlowKey { return key(1<<27 | uint32(i)) }
	var h []rec
	ts := int64(0)
	do := func(in pairIn, out pairOut) { h = append(h, rec{0, in, out, ts, ts + 1}); ts += 2 }
	getOut := func(k int) pairOut {
		e, ok := tb.Get(keyOf(k))
		if !ok {
			return pairOut{}
		}
		return foundAs(e.Value().flow, e.Value().val)
	}
	_, err = tb.InsertPair(keyOf(0), keyOf(1), linV{1, 1})
	do(ins(linInsertPair, 0, 1, 1), pairOut{ok: err == nil})
	e, _ := tb.Get(keyOf(1))
	_, ok := tb.SetValue(e, linV{1, 3})
	do(change(linSetValue, 1, 0, 1, 3), pairOut{ok: ok})
	do(get(0), getOut(0))
	do(pairIn{op: linRemove, key: 1}, pairOut{ok: tb.Remove(keyOf(1))})
	do(change(linRemoveEntry, 1, 0, 1, 0), pairOut{ok: tb.RemoveEntry(e)})
	do(get(0), getOut(0))
	if res, _ := checkLinearizable(t, pairModel, build(h)); res != porcupine.Ok {
		t.Fatalf("real history against pairModel: %v", res)
	}
	// ...against a model whose Remove removes only the key it was given.
	broken := pairModel
	broken.Step = func(state, input, output any) (bool, any) {
		s, st := state.(pairState), input.(pairStep)
		if st.in.op == linRemove && output.(pairOut).ok {
			if st.step == pairGroupKeys {
				return true, s // forgets the pair's other key
			}
			ok := s.v[st.in.key].flow != 0
			s.v[st.in.key] = cell{}
			return ok, s
		}
		return pairModel.Step(state, input, output)
	}
	res, path := checkLinearizable(t, broken, build(h))
	if res != porcupine.Illegal {
		t.Fatalf("broken pair model: checker said %v, want Illegal", res)
	}
	os.Remove(path)
}
