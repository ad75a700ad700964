package race_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
	"pgregory.net/rapid"
)

// The model tests run one goroutine's operation sequence against the
// table and against a plain map that says what the table must do, and
// compare after every step: each result, Len, Stats (the count of every
// cause and the identity Live = Inserts − every cause), the callbacks
// that ran and each one's cause, and (on Dump) every flow's value, class,
// reply key and exact last-seen time. Expiry runs on a fake clock, with
// timeout classes; bulk inserts force grows and expiry passes force
// shrinks and compactions. Pairs (InsertPair, GetOrInsertPair) tie two of
// the keys into one flow. The same interpreter backs a rapid property
// (TestModel) and a fuzz target (FuzzOps).
//
// Why rapid rather than testing/quick: rapid shrinks a failing operation
// sequence on its own (fewer ops, smaller keys and arguments) down to a
// minimal reproduction, and it can replay the corpus of a go fuzz target
// too; testing/quick neither shrinks nor knows structure.

// mop is one model operation.
type mop struct {
	kind uint8
	key  uint8  // one of 256 keys
	arg  uint16 // kind-specific
}

const (
	mGet = iota
	mInsert
	mGetOrInsert
	mRemove          // Remove; then SetClass on the entry a Get found before must fail
	mExpire          // advance the clock by (arg%4096)*5 ms, or set it back by arg%1000 ms when arg&0x8000, then Expire
	mBulk            // insert arg%128 keys from key on: grows shards
	mClear           // Clear
	mSetTTL          // SetTTL((arg%16) * 500 ms); 0 restores the default
	mDump            // compare Dump with the model
	mRange           // Range reports every flow once
	mClose           // Close, when arg%16 == 0 (rare)
	mInsertPair      // InsertPair(key, uint8(arg)): the same key twice is a one-key flow
	mGetOrInsertPair // GetOrInsertPair(key, uint8(arg))
	mSetClass        // Get(key), then SetClass(e, arg%8): class 7 never exists
	mSetTimeout      // SetTimeout(arg%8, (arg>>3%16) * 500 ms)
	mKinds
)

// kindTable weights the kinds: a fuzzer's byte or rapid's draw indexes it.
// Its first half is the table from before pairs and classes existed, and
// the second half repeats it but for the slots that the corpus in
// testdata/fuzz/FuzzOps does not use, which hold the new kinds; so every
// corpus entry still means what it meant.
var kindTable = [64]uint8{
	mGet, mGet, mGet, mGet, mGet, mGet,
	mInsert, mInsert, mInsert, mInsert, mInsert, mInsert,
	mGetOrInsert, mGetOrInsert, mGetOrInsert, mGetOrInsert,
	mRemove, mRemove, mRemove, mRemove,
	mExpire, mExpire, mExpire, mExpire,
	mBulk, mBulk, mClear, mSetTTL, mSetTTL, mDump, mRange, mClose,

	mInsertPair, mInsertPair, mInsertPair, mInsertPair, mGetOrInsertPair, mGetOrInsertPair,
	mGet, mGet, mSetClass, mSetClass, mSetTimeout, mInsert,
	mGetOrInsert, mGetOrInsert, mInsertPair, mGetOrInsert,
	mRemove, mRemove, mRemove, mRemove,
	mExpire, mExpire, mExpire, mExpire,
	mBulk, mBulk, mClear, mSetTTL, mSetTTL, mDump, mRange, mClose,
}

func (o mop) String() string {
	names := [...]string{"Get", "Insert", "GetOrInsert", "Remove", "Expire", "Bulk", "Clear", "SetTTL", "Dump", "Range", "Close",
		"InsertPair", "GetOrInsertPair", "SetClass", "SetTimeout"}
	return fmt.Sprintf("%s(k%d, %d)", names[o.kind], o.key, o.arg)
}

// mconf is a model run's table configuration.
type mconf struct {
	classes bool // timeout classes 1..6 (700 ms apart); Config.Class puts each new flow in class id%7
	shards  int
	limit   int
}

// modelClasses is how many timeout classes a classes run has, class 0
// (TTL) included.
const modelClasses = 7

type mval struct {
	id    int
	class int // the class Config.Class gives the flow when it is stored (mconf.classes)
}

// mentry is a flow in the model.
type mentry struct {
	id       int
	keys     []uint8 // its first key, and a pair's reply key
	class    int
	lastSeen int64 // ms, the coarse clock at insert or last hit
}

// modelTotals sums what the model runs did, for the log (runs are
// sequential).
var modelTotals struct {
	ops                                    int
	grows, shrinks, compactions, moved     uint64
	expired, full, replaced, pairs, passes uint64
}

// fataler is what both *testing.T and *rapid.T give.
type fataler interface {
	Fatalf(format string, args ...any)
}

// runModel runs ops against a fresh table and the model, failing t at the
// first difference.
func runModel(t fataler, cfg mconf, ops []mop) {
	clock := newFakeClock()
	dom := reclaim.NewDomain()
	got := map[int]flowcache.Cause{} // OnRemove's cause per entry id
	var twice []string               // entries called back more than once
	keyOf := func(b uint8) flowcache.FlowKey { return key(1<<25 | uint32(b)) }
	keyByte := func(k flowcache.FlowKey) uint8 { return k.Src().As4()[3] }
	fc := flowcache.Config[mval]{
		Name:   "model",
		Limit:  cfg.limit,
		Shards: cfg.shards,
		TTL:    3 * time.Second,
		Seed:   42,
		Clock:  clock.Now,
		Domain: dom,
		OnRemove: func(e *flowcache.Entry[mval], why flowcache.Cause) {
			id := e.Value().id
			if _, dup := got[id]; dup {
				twice = append(twice, fmt.Sprintf("entry %d (%v): %v, then %v", id, e.Key(), got[id], why))
			}
			got[id] = why
		},
	}
	timeouts := []time.Duration{3 * time.Second} // per class; 0 is TTL
	if cfg.classes {
		fc.Class = func(v *mval) int { return v.class }
		for c := 1; c < modelClasses; c++ {
			fc.Timeouts = append(fc.Timeouts, time.Duration(c)*700*time.Millisecond)
			timeouts = append(timeouts, time.Duration(c)*700*time.Millisecond)
		}
	}
	tb, err := flowcache.New(fc)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer tb.Close()
	// The interpreter is a registered reader: it holds entries across
	// operations (SetClass on the entry a Get found before a Remove), and
	// with a reader registered the folds of moves wait for a grace period,
	// as they do in a forwarder. Each step ends with its Synchronize.
	rd := dom.Register()
	defer rd.Unregister()

	model := map[uint8]*mentry{}      // by key: both keys of a pair name one entry
	flows := 0                        // distinct entries in model
	want := map[int]flowcache.Cause{} // the cause of every entry that left
	var causes [flowcache.Cleared + 1]uint64
	inserts := uint64(0)
	now := clock.Now().UnixMilli()
	closed := false
	nextID := 0
	depart := func(b uint8, why flowcache.Cause) {
		e := model[b]
		if e == nil {
			return
		}
		want[e.id] = why
		causes[why]++
		for _, k := range e.keys {
			delete(model, k)
		}
		flows--
	}
	newVal := func() mval {
		nextID++
		v := mval{id: nextID}
		if cfg.classes {
			v.class = nextID % modelClasses
		}
		return v
	}
	keysOf := func(b, reply uint8, pair bool) []uint8 {
		if pair && reply != b {
			return []uint8{b, reply}
		}
		return []uint8{b}
	}
	// full says whether an insert under keys meets the limit: only when
	// none of them is present (a replace never fails).
	full := func(keys []uint8) bool {
		for _, k := range keys {
			if model[k] != nil {
				return false
			}
		}
		return flows >= cfg.limit
	}
	// insert does the model's side of a successful insert of v under
	// keys: the flows stored under any of them leave, replaced.
	insert := func(keys []uint8, v mval) *mentry {
		for _, k := range keys {
			depart(k, flowcache.Replaced)
		}
		m := &mentry{id: v.id, keys: keys, lastSeen: now}
		for _, k := range keys {
			model[k] = m
		}
		flows++
		inserts++
		return m
	}
	// stored notes the class Config.Class gave a flow the table just
	// stored.
	stored := func(e *flowcache.Entry[mval], m *mentry) {
		m.class = e.Value().class
	}
	// seen is a hit on m through key b (either of a pair's keys): the
	// flow's last-seen time is now, whichever key it came through.
	seen := func(m *mentry, _ uint8) {
		m.lastSeen = now
	}
	checkEntry := func(i int, o mop, e *flowcache.Entry[mval], m *mentry) {
		if e.Key() != keyOf(m.keys[0]) {
			t.Fatalf("op %d %v: entry keyed %v, model k%d", i, o, e.Key(), m.keys[0])
		}
		r, paired := e.Reply()
		if paired != (len(m.keys) == 2) || paired && r != keyOf(m.keys[1]) {
			t.Fatalf("op %d %v: entry's reply %v (paired %v), model keys %v", i, o, r, paired, m.keys)
		}
		if e.Value().id != m.id {
			t.Fatalf("op %d %v: entry %d, model %d", i, o, e.Value().id, m.id)
		}
		if ls := e.LastSeen().UnixMilli(); ls != m.lastSeen {
			t.Fatalf("op %d %v: LastSeen %d, model %d", i, o, ls, m.lastSeen)
		}
		if c := e.Class(); c != m.class {
			t.Fatalf("op %d %v: Class %d, model %d", i, o, c, m.class)
		}
	}

	defer func() {
		st := tb.Stats()
		modelTotals.ops += len(ops)
		modelTotals.grows += st.Grows
		modelTotals.shrinks += st.Shrinks
		modelTotals.compactions += st.Compactions + st.Evacuations
		modelTotals.moved += st.Moved
		modelTotals.expired += st.Expired
		modelTotals.full += st.FullRejections
		modelTotals.replaced += st.Replaced
		modelTotals.passes += st.Passes
		for _, m := range model {
			if len(m.keys) == 2 {
				modelTotals.pairs++
			}
		}
	}()
	for i, o := range ops {
		k := keyOf(o.key)
		switch o.kind {
		case mGet:
			e, ok := tb.Get(k)
			m := model[o.key]
			if ok != (m != nil) {
				t.Fatalf("op %d %v: found %v, model %v", i, o, ok, m != nil)
			}
			if ok {
				seen(m, o.key)
				checkEntry(i, o, e, m)
			}
		case mInsert, mInsertPair:
			pair := o.kind == mInsertPair
			keys := keysOf(o.key, uint8(o.arg), pair)
			v := newVal()
			var e *flowcache.Entry[mval]
			var err error
			if pair {
				e, err = tb.InsertPair(k, keyOf(uint8(o.arg)), v)
			} else {
				e, err = tb.Insert(k, v)
			}
			switch {
			case closed:
				if !errors.Is(err, flowcache.ErrClosed) {
					t.Fatalf("op %d %v after Close: err %v, want ErrClosed", i, o, err)
				}
			case full(keys):
				if !errors.Is(err, flowcache.ErrFull) {
					t.Fatalf("op %d %v at the limit: err %v, want ErrFull", i, o, err)
				}
			case err != nil:
				t.Fatalf("op %d %v: %v", i, o, err)
			default:
				m := insert(keys, v)
				stored(e, m)
				checkEntry(i, o, e, m)
			}
		case mGetOrInsert, mGetOrInsertPair:
			pair := o.kind == mGetOrInsertPair
			keys := keysOf(o.key, uint8(o.arg), pair)
			var made *mval
			mk := func() mval { v := newVal(); made = &v; return v }
			var e *flowcache.Entry[mval]
			var inserted bool
			var err error
			if pair {
				e, inserted, err = tb.GetOrInsertPair(k, keyOf(uint8(o.arg)), mk)
			} else {
				e, inserted, err = tb.GetOrInsert(k, mk)
			}
			var m *mentry // the flow found under the first key that has one
			var via uint8
			for _, b := range keys {
				if m, via = model[b], b; m != nil {
					break
				}
			}
			switch {
			case closed:
				if !errors.Is(err, flowcache.ErrClosed) || made != nil {
					t.Fatalf("op %d %v after Close: err %v, made %v; want ErrClosed, no make", i, o, err, made != nil)
				}
			case m != nil:
				if err != nil || inserted || made != nil {
					t.Fatalf("op %d %v of a present key: err %v, inserted %v, made %v", i, o, err, inserted, made != nil)
				}
				seen(m, via)
				checkEntry(i, o, e, m)
			case full(keys):
				if !errors.Is(err, flowcache.ErrFull) || made != nil {
					t.Fatalf("op %d %v at the limit: err %v, made %v; want ErrFull, no make", i, o, err, made != nil)
				}
			default:
				if err != nil || !inserted || made == nil {
					t.Fatalf("op %d %v of a missing key: err %v, inserted %v, made %v", i, o, err, inserted, made != nil)
				}
				m := insert(keys, *made)
				stored(e, m)
				checkEntry(i, o, e, m)
			}
		case mRemove:
			pre, had := tb.Get(k) // refreshes the flow, which then leaves anyway
			ok := tb.Remove(k)
			if ok != (model[o.key] != nil) || had != ok {
				t.Fatalf("op %d %v: removed %v (found before %v), model had it %v", i, o, ok, had, model[o.key] != nil)
			}
			depart(o.key, flowcache.Removed)
			if had && tb.SetClass(pre, 0) {
				t.Fatalf("op %d %v: SetClass on the removed flow succeeded", i, o)
			}
		case mExpire:
			if o.arg&0x8000 != 0 {
				clock.Advance(-time.Duration(o.arg%1000) * time.Millisecond)
			} else {
				clock.Advance(time.Duration(o.arg%4096) * 5 * time.Millisecond)
			}
			now = clock.Now().UnixMilli()
			res := tb.Expire(clock.Now())
			expired := 0
			if !closed {
				for b, m := range model {
					if b != m.keys[0] || max(now-m.lastSeen, 0) < timeouts[m.class].Milliseconds() {
						continue
					}
					depart(b, flowcache.Expired)
					expired++
				}
			}
			if res.Expired != expired {
				t.Fatalf("op %d %v at %d: expired %d, model %d", i, o, now, res.Expired, expired)
			}
		case mBulk:
			for j := range int(o.arg % 128) {
				b := o.key + uint8(j)
				if closed || full([]uint8{b}) {
					break
				}
				v := newVal()
				e, err := tb.Insert(keyOf(b), v)
				if err != nil {
					t.Fatalf("op %d %v: bulk insert of k%d: %v", i, o, b, err)
				}
				stored(e, insert([]uint8{b}, v))
			}
		case mClear:
			tb.Clear()
			for b := range model {
				depart(b, flowcache.Cleared)
			}
		case mSetTTL:
			d := time.Duration(o.arg%16) * 500 * time.Millisecond
			tb.SetTTL(d)
			if d <= 0 {
				d = flowcache.DefaultTTL
			}
			timeouts[0] = d
			if tb.TTL() != d {
				t.Fatalf("op %d %v: TTL() = %v, want %v", i, o, tb.TTL(), d)
			}
		case mSetTimeout:
			c, d := int(o.arg%8), time.Duration(o.arg>>3%16)*500*time.Millisecond
			tb.SetTimeout(c, d)
			switch {
			case c == 0 && d <= 0:
				timeouts[0] = flowcache.DefaultTTL
			case c < len(timeouts) && d > 0:
				timeouts[c] = d
			}
			for c := range 8 {
				want := time.Duration(0)
				if c < len(timeouts) {
					want = timeouts[c]
				}
				if got := tb.Timeout(c); got != want {
					t.Fatalf("op %d %v: Timeout(%d) = %v, model %v", i, o, c, got, want)
				}
			}
		case mSetClass:
			e, ok := tb.Get(k)
			m := model[o.key]
			if ok != (m != nil) {
				t.Fatalf("op %d %v: found %v, model %v", i, o, ok, m != nil)
			}
			if !ok {
				continue
			}
			seen(m, o.key)
			c := int(o.arg % 8)
			if set := tb.SetClass(e, c); set != (c < len(timeouts)) {
				t.Fatalf("op %d %v: SetClass(%d) = %v with %d classes", i, o, c, set, len(timeouts))
			} else if set {
				m.class = c
			}
			checkEntry(i, o, e, m)
		case mDump:
			rows := tb.Dump()
			if len(rows) != flows {
				t.Fatalf("op %d %v: Dump has %d rows, model %d flows", i, o, len(rows), flows)
			}
			if !slices.IsSortedFunc(rows, func(a, b flowcache.DumpRow[mval]) int { return a.Key.Compare(b.Key) }) {
				t.Fatalf("op %d %v: Dump not sorted", i, o)
			}
			for j := range rows {
				r := &rows[j]
				m := model[keyByte(r.Key)]
				if m == nil || keyOf(m.keys[0]) != r.Key || m.id != r.Value.id || m.lastSeen != r.LastSeen.UnixMilli() || m.class != r.Class ||
					r.Paired != (len(m.keys) == 2) || r.Paired && r.Reply != keyOf(m.keys[1]) {
					t.Fatalf("op %d %v: Dump row %+v (last seen %d) not in the model (%+v)", i, o, r, r.LastSeen.UnixMilli(), m)
				}
			}
		case mRange:
			seen := map[flowcache.FlowKey]bool{}
			tb.Range(func(e *flowcache.Entry[mval]) bool {
				if seen[e.Key()] {
					t.Fatalf("op %d %v: Range reported %v twice", i, o, e.Key())
				}
				seen[e.Key()] = true
				return true
			})
			if len(seen) != flows {
				t.Fatalf("op %d %v: Range reported %d flows, model %d", i, o, len(seen), flows)
			}
		case mClose:
			if o.arg%16 != 0 {
				continue
			}
			if err := tb.Close(); err != nil {
				t.Fatalf("op %d %v: %v", i, o, err)
			}
			closed = true
			for b := range model {
				depart(b, flowcache.Cleared)
			}
		}
		if n := tb.Len(); n != flows {
			t.Fatalf("op %d %v: Len() = %d, model %d", i, o, n, flows)
		}
		st := tb.Stats()
		pairs := 0
		for b, m := range model {
			if len(m.keys) == 2 && m.keys[0] == b {
				pairs++
			}
		}
		if st.Live != flows || st.Pairs != pairs || st.Inserts != inserts || st.Removed != causes[flowcache.Removed] ||
			st.Replaced != causes[flowcache.Replaced] || st.Evicted != 0 || st.Expired != causes[flowcache.Expired] ||
			st.Cleared != causes[flowcache.Cleared] {
			t.Fatalf("op %d %v: Stats %v; model: live %d, pairs %d, inserts %d, removed %d, replaced %d, expired %d, cleared %d",
				i, o, st, flows, pairs, inserts, causes[flowcache.Removed], causes[flowcache.Replaced], causes[flowcache.Expired], causes[flowcache.Cleared])
		}
		if left := st.Removed + st.Replaced + st.Evicted + st.Expired + st.Cleared; uint64(st.Live) != st.Inserts-left {
			t.Fatalf("op %d %v: Stats: live %d != inserts %d - %d that left", i, o, st.Live, st.Inserts, left)
		}
		// The only reader is this goroutine, so its Synchronize runs
		// every callback that is due: exactly the flows that left, once
		// each, with the cause they left by.
		rd.Synchronize()
		if len(twice) > 0 {
			t.Fatalf("op %d %v: a flow got OnRemove twice: %v", i, o, twice)
		}
		if len(got) != len(want) {
			t.Fatalf("op %d %v: %d entries got callbacks, model expects %d", i, o, len(got), len(want))
		}
		for id, why := range want {
			if g, ok := got[id]; !ok || g != why {
				t.Fatalf("op %d %v: entry %d got callback %v (called %v), want exactly one, %v", i, o, id, g, ok, why)
			}
		}
	}
}

var mopGen = rapid.Custom(func(t *rapid.T) mop {
	return mop{
		kind: kindTable[rapid.IntRange(0, len(kindTable)-1).Draw(t, "kind")],
		key:  uint8(rapid.IntRange(0, 255).Draw(t, "key")),
		arg:  rapid.Uint16().Draw(t, "arg"),
	}
})

// TestModel: random operation sequences against the model; a failure is
// shrunk by rapid to a minimal sequence, printed with the seed to replay.
func TestModel(t *testing.T) {
	modelTotals = struct {
		ops                                    int
		grows, shrinks, compactions, moved     uint64
		expired, full, replaced, pairs, passes uint64
	}{}
	defer func() {
		m := &modelTotals
		t.Logf("%d ops in all; grows %d, shrinks %d, compactions %d (moved %d), passes %d, expired %d, replaced %d, full rejections %d, pairs left %d",
			m.ops, m.grows, m.shrinks, m.compactions, m.moved, m.passes, m.expired, m.replaced, m.full, m.pairs)
		if m.compactions == 0 || m.moved == 0 || m.pairs == 0 {
			t.Errorf("the runs never compacted or never kept a pair: %+v", *m)
		}
	}()
	prop := func(t *rapid.T) {
		cfg := mconf{
			classes: rapid.Bool().Draw(t, "classes"),
			shards:  rapid.SampledFrom([]int{1, 2, 4}).Draw(t, "shards"),
			limit:   rapid.SampledFrom([]int{40, 300, 1000}).Draw(t, "limit"),
		}
		// Chunks of short sequences: rapid's slices average a few
		// elements, and a chunked draw gets a few hundred operations
		// while still shrinking to a short one.
		var ops []mop
		for range rapid.IntRange(1, 64).Draw(t, "chunks") {
			ops = append(ops, rapid.SliceOfN(mopGen, 1, 100).Draw(t, "ops")...)
		}
		runModel(t, cfg, ops)
	}
	for i := range 4 { // rapid's default of 100 sequences per Check, with fresh seeds
		t.Run(fmt.Sprint("run=", i), func(t *testing.T) { rapid.Check(t, prop) })
	}
	// One sequence that surely moves flows, whatever the random ones did
	// (chunks hold about 500 records, so the model's 256 keys rarely
	// leave one behind half empty): 256 flows, a 1 s TTL, five of them
	// seen again half a second on, and a pass that expires the rest and
	// compacts the shard under the five.
	t.Run("moves", func(t *testing.T) {
		ops := []mop{{kind: mBulk, key: 0, arg: 127}, {kind: mBulk, key: 127, arg: 127}, {kind: mBulk, key: 254, arg: 2},
			{kind: mSetTTL, arg: 2}, {kind: mExpire, arg: 100}}
		for k := 0; k < 256; k += 50 {
			ops = append(ops, mop{kind: mGet, key: uint8(k)})
		}
		ops = append(ops, mop{kind: mExpire, arg: 150}, mop{kind: mDump})
		runModel(t, mconf{shards: 1, limit: 1000}, ops)
	})
}

// decodeOps reads a fuzzer's bytes: one configuration byte (bit 0:
// classes; bits 1-2: shards; bits 3-4: limit), then four bytes per
// operation (kind, key, arg).
func decodeOps(data []byte) (mconf, []mop) {
	if len(data) == 0 {
		return mconf{shards: 1, limit: 150}, nil
	}
	c := data[0]
	cfg := mconf{classes: c&1 != 0, shards: 1 << (c >> 1 & 3 % 3), limit: [...]int{20, 150, 1000, 150}[c>>3&3]}
	var ops []mop
	for data = data[1:]; len(data) >= 4; data = data[4:] {
		ops = append(ops, mop{kind: kindTable[data[0]%64], key: data[1], arg: uint16(data[2]) | uint16(data[3])<<8})
	}
	return cfg, ops
}

// FuzzOps interprets its input as an operation sequence (see decodeOps)
// and runs it against the model. The seed corpus is in
// testdata/fuzz/FuzzOps; make fuzz runs it for $(FUZZTIME).
func FuzzOps(f *testing.F) {
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4*2000 {
			return
		}
		cfg, ops := decodeOps(data)
		runModel(t, cfg, ops)
	})
}
