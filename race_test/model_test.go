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
// compare after every step: each result, Len, the callbacks that ran,
// and (on Dump) every flow's value and exact last-seen time. Expiry runs
// on a fake clock; bulk inserts force grows and expiry passes force
// shrinks. The same interpreter backs a rapid property (TestModel) and a
// fuzz target (FuzzOps).
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
	mRemove
	mExpire // advance the clock by (arg%4096)*5 ms, or set it back by arg%1000 ms when arg&0x8000, then Expire
	mBulk   // insert arg%128 keys from key on: grows shards
	mClear  // Clear
	mSetTTL // SetTTL((arg%16) * 500 ms); 0 restores the default
	mDump   // compare Dump with the model
	mRange  // Range reports every flow once
	mClose  // Close, when arg%16 == 0 (rare)
	mKinds
)

// kindTable weights the kinds: a fuzzer's byte or rapid's draw indexes it.
var kindTable = [32]uint8{
	mGet, mGet, mGet, mGet, mGet, mGet,
	mInsert, mInsert, mInsert, mInsert, mInsert, mInsert,
	mGetOrInsert, mGetOrInsert, mGetOrInsert, mGetOrInsert,
	mRemove, mRemove, mRemove, mRemove,
	mExpire, mExpire, mExpire, mExpire,
	mBulk, mBulk, mClear, mSetTTL, mSetTTL, mDump, mRange, mClose,
}

func (o mop) String() string {
	names := [...]string{"Get", "Insert", "GetOrInsert", "Remove", "Expire", "Bulk", "Clear", "SetTTL", "Dump", "Range", "Close"}
	return fmt.Sprintf("%s(k%d, %d)", names[o.kind], o.key, o.arg)
}

// mconf is a model run's table configuration.
type mconf struct {
	expiry bool // per-flow TTL from the value (Config.Expiry) instead of the table's
	shards int
	limit  int
}

type mval struct {
	id  int
	ttl time.Duration // used when mconf.expiry
}

type mentry struct {
	id       int
	ttl      time.Duration
	lastSeen int64 // ms, the coarse clock at insert or last hit
}

// modelTotals sums what the model runs did, for the log (runs are
// sequential).
var modelTotals struct {
	ops                           int
	grows, shrinks, expired, full uint64
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
	got := map[int]int{} // OnRemove calls per entry id
	fc := flowcache.Config[mval]{
		Name:     "model",
		Limit:    cfg.limit,
		Shards:   cfg.shards,
		TTL:      3 * time.Second,
		Seed:     42,
		Clock:    clock.Now,
		Domain:   dom,
		OnRemove: func(e *flowcache.Entry[mval], _ flowcache.Cause) { k := e.Key(); v := e.Value(); got[v.id]++ },
	}
	if cfg.expiry {
		fc.Expiry = func(e *flowcache.Entry[mval]) time.Duration { return e.Value().ttl }
	}
	tb, err := flowcache.New(fc)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer tb.Close()

	model := map[uint8]*mentry{}
	want := map[int]int{} // callbacks the model expects: every entry that left
	now := clock.Now().UnixMilli()
	ttl := 3 * time.Second
	closed := false
	nextID := 0
	keyOf := func(b uint8) flowcache.FlowKey { return key(1<<25 | uint32(b)) }
	depart := func(b uint8) {
		if e := model[b]; e != nil {
			want[e.id]++
			delete(model, b)
		}
	}
	newVal := func(b uint8) mval {
		nextID++
		return mval{id: nextID, ttl: time.Duration(nextID%7) * 700 * time.Millisecond}
	}
	// insert does the model's side of a successful insert of v under b.
	insert := func(b uint8, v mval) {
		depart(b)
		model[b] = &mentry{id: v.id, ttl: v.ttl, lastSeen: now}
	}
	checkEntry := func(i int, o mop, e *flowcache.Entry[mval], m *mentry) {
		if e.Key() != keyOf(o.key) {
			t.Fatalf("op %d %v: entry keyed %v", i, o, e.Key())
		}
		if e.Value().id != m.id {
			t.Fatalf("op %d %v: entry %d, model %d", i, o, e.Value().id, m.id)
		}
		if ls := e.LastSeen().UnixMilli(); ls != m.lastSeen {
			t.Fatalf("op %d %v: LastSeen %d, model %d", i, o, ls, m.lastSeen)
		}
	}

	defer func() {
		st := tb.Stats()
		modelTotals.ops += len(ops)
		modelTotals.grows += st.Grows
		modelTotals.shrinks += st.Shrinks
		modelTotals.expired += st.Expired
		modelTotals.full += st.FullRejections
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
				m.lastSeen = now
				checkEntry(i, o, e, m)
			}
		case mInsert:
			v := newVal(o.key)
			e, err := tb.Insert(k, v)
			switch {
			case closed:
				if !errors.Is(err, flowcache.ErrClosed) {
					t.Fatalf("op %d %v after Close: err %v, want ErrClosed", i, o, err)
				}
			case model[o.key] == nil && len(model) >= cfg.limit:
				if !errors.Is(err, flowcache.ErrFull) {
					t.Fatalf("op %d %v at the limit: err %v, want ErrFull", i, o, err)
				}
			case err != nil:
				t.Fatalf("op %d %v: %v", i, o, err)
			default:
				insert(o.key, v)
				checkEntry(i, o, e, model[o.key])
			}
		case mGetOrInsert:
			var made *mval
			e, inserted, err := tb.GetOrInsert(k, func() mval { v := newVal(o.key); made = &v; return v })
			m := model[o.key]
			switch {
			case closed:
				if !errors.Is(err, flowcache.ErrClosed) || made != nil {
					t.Fatalf("op %d %v after Close: err %v, made %v; want ErrClosed, no make", i, o, err, made != nil)
				}
			case m != nil:
				if err != nil || inserted || made != nil {
					t.Fatalf("op %d %v of a present key: err %v, inserted %v, made %v", i, o, err, inserted, made != nil)
				}
				m.lastSeen = now
				checkEntry(i, o, e, m)
			case len(model) >= cfg.limit:
				if !errors.Is(err, flowcache.ErrFull) || made != nil {
					t.Fatalf("op %d %v at the limit: err %v, made %v; want ErrFull, no make", i, o, err, made != nil)
				}
			default:
				if err != nil || !inserted || made == nil {
					t.Fatalf("op %d %v of a missing key: err %v, inserted %v, made %v", i, o, err, inserted, made != nil)
				}
				insert(o.key, *made)
				checkEntry(i, o, e, model[o.key])
			}
		case mRemove:
			ok := tb.Remove(k)
			if ok != (model[o.key] != nil) {
				t.Fatalf("op %d %v: removed %v, model had it %v", i, o, ok, model[o.key] != nil)
			}
			depart(o.key)
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
					d := ttl
					if cfg.expiry {
						d = m.ttl
					}
					if max(now-m.lastSeen, 0) >= d.Milliseconds() {
						depart(b)
						expired++
					}
				}
			}
			if res.Expired != expired {
				t.Fatalf("op %d %v at %d: expired %d, model %d", i, o, now, res.Expired, expired)
			}
		case mBulk:
			for j := range int(o.arg % 128) {
				b := o.key + uint8(j)
				if closed || (model[b] == nil && len(model) >= cfg.limit) {
					break
				}
				v := newVal(b)
				if _, err := tb.Insert(keyOf(b), v); err != nil {
					t.Fatalf("op %d %v: bulk insert of k%d: %v", i, o, b, err)
				}
				insert(b, v)
			}
		case mClear:
			tb.Clear()
			for b := range model {
				depart(b)
			}
		case mSetTTL:
			d := time.Duration(o.arg%16) * 500 * time.Millisecond
			tb.SetTTL(d)
			if d <= 0 {
				d = flowcache.DefaultTTL
			}
			ttl = d
			if tb.TTL() != d {
				t.Fatalf("op %d %v: TTL() = %v, want %v", i, o, tb.TTL(), d)
			}
		case mDump:
			rows := tb.Dump()
			if len(rows) != len(model) {
				t.Fatalf("op %d %v: Dump has %d rows, model %d flows", i, o, len(rows), len(model))
			}
			if !slices.IsSortedFunc(rows, func(a, b flowcache.DumpRow[mval]) int { return a.Key.Compare(b.Key) }) {
				t.Fatalf("op %d %v: Dump not sorted", i, o)
			}
			for j := range rows {
				r := &rows[j]
				m := model[uint8(r.Key.Src().As4()[3])]
				if m == nil || keyOf(uint8(r.Key.Src().As4()[3])) != r.Key || m.id != r.Value.id || m.lastSeen != r.LastSeen.UnixMilli() {
					t.Fatalf("op %d %v: Dump row %v %+v (last seen %d) not in the model (%+v)", i, o, r.Key, r.Value, r.LastSeen.UnixMilli(), m)
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
			if len(seen) != len(model) {
				t.Fatalf("op %d %v: Range reported %d flows, model %d", i, o, len(seen), len(model))
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
				depart(b)
			}
		}
		if n := tb.Len(); n != len(model) {
			t.Fatalf("op %d %v: Len() = %d, model %d", i, o, n, len(model))
		}
		// No reader is registered, so Synchronize runs every callback
		// that is due: exactly the flows that left, once each.
		dom.Synchronize()
		if len(got) != len(want) {
			t.Fatalf("op %d %v: %d entries got callbacks, model expects %d", i, o, len(got), len(want))
		}
		for id, n := range want {
			if got[id] != n || n != 1 {
				t.Fatalf("op %d %v: entry %d got %d callbacks, want exactly 1", i, o, got[id], n)
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
		ops                           int
		grows, shrinks, expired, full uint64
	}{}
	defer func() {
		t.Logf("%d ops in all; grows %d, shrinks %d, expired %d, full rejections %d",
			modelTotals.ops, modelTotals.grows, modelTotals.shrinks, modelTotals.expired, modelTotals.full)
	}()
	prop := func(t *rapid.T) {
		cfg := mconf{
			expiry: rapid.Bool().Draw(t, "expiry"),
			shards: rapid.SampledFrom([]int{1, 2, 4}).Draw(t, "shards"),
			limit:  rapid.SampledFrom([]int{40, 300, 1000}).Draw(t, "limit"),
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
}

// decodeOps reads a fuzzer's bytes: one configuration byte, then four
// bytes per operation (kind, key, arg).
func decodeOps(data []byte) (mconf, []mop) {
	if len(data) == 0 {
		return mconf{shards: 1, limit: 150}, nil
	}
	c := data[0]
	cfg := mconf{expiry: c&1 != 0, shards: 1 << (c >> 1 & 3 % 3), limit: [...]int{20, 150, 1000, 150}[c>>3&3]}
	var ops []mop
	for data = data[1:]; len(data) >= 4; data = data[4:] {
		ops = append(ops, mop{kind: kindTable[data[0]%32], key: data[1], arg: uint16(data[2]) | uint16(data[3])<<8})
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
