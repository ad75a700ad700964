package flowcache

import (
	"slices"

	"github.com/flowcache/flowcache/shard"
)

// A write locks every shard that holds a key it touches: the shards of
// the keys it stores, and the shards of both keys of every flow it
// replaces or removes (a pair's keys may lie in two shards). It finds that
// set by looking the keys up without a lock, locks the set in shard order
// (so two writers never wait on each other in a cycle), then checks under
// the locks that no flow it touches has a key outside the set; if one
// does (a writer changed the flow in between), it unlocks and tries again
// with the larger set.

// lockSet is a set of shard indexes, locked in increasing order. A write
// touches at most four shards: its two keys' and the other keys of the
// two flows it may replace.
type lockSet struct {
	idx [4]int
	n   int
}

func (l *lockSet) has(i int) bool { return slices.Contains(l.idx[:l.n], i) }

// add adds i.
func (l *lockSet) add(i int) {
	if l.has(i) {
		return
	}
	l.idx[l.n] = i
	l.n++
	slices.Sort(l.idx[:l.n])
}

func (t *Table[V]) lockAll(l *lockSet) {
	for _, i := range l.idx[:l.n] {
		t.shards[i].Lock()
	}
}

// unlockAll settles and unlocks every shard of l (see unlock).
func (t *Table[V]) unlockAll(l *lockSet) {
	for _, i := range l.idx[:l.n] {
		t.unlock(&t.shards[i])
	}
}

func (t *Table[V]) shardIndex(k *FlowKey) int { return int(t.shardNo(t.hash(k))) }

// keySet is the one or two keys a write stores or removes, with their
// table hashes, computed once.
type keySet struct {
	k [2]FlowKey
	h [2]uint64
	n int
	// locks is the set of shards the write holds, once it has locked them:
	// the program's callbacks run with them marked busy (callback).
	locks lockSet
	// class is the new flow's class when classSet: a step that ran
	// Config.Class before it had every lock it needs (insertMissing).
	class    uint8
	classSet bool
	// absent says the write found no flow under any of its keys, with
	// their shards locked: store places them without looking again.
	absent bool
}

// oneKey makes ks the one key k. The key comes by value, in registers,
// and goes into ks a word at a time: built elsewhere and copied in, as a
// keySet returned by value is, it was moved with 16-byte loads of what
// had just been stored 8 bytes at a time, which the CPU does not forward
// from its store buffer (the stall docs/PERFORMANCE.md describes for Get).
func (t *Table[V]) oneKey(ks *keySet, k FlowKey) {
	ks.k[0] = k
	ks.h[0] = t.hashWords(k)
	ks.n = 1
}

// twoKeys makes ks a pair's keys, or the one key when they are the same.
// It sets the keys only: locks and class stay as they are.
func (t *Table[V]) twoKeys(ks *keySet, k, reply FlowKey) {
	if k == reply {
		t.oneKey(ks, k)
		return
	}
	ks.k[0], ks.k[1] = k, reply
	ks.h[0], ks.h[1] = t.hashWords(k), t.hashWords(reply)
	ks.n = 2
}

func (ks *keySet) has(k *FlowKey) bool {
	for i := range ks.n {
		if ks.k[i] == *k {
			return true
		}
	}
	return false
}

// reply is the second key, or nil for a one-key write.
func (ks *keySet) reply() *FlowKey {
	if ks.n < 2 {
		return nil
	}
	return &ks.k[1]
}

// lockFor locks the shards of ks's keys and of every flow stored under
// them, into l, and returns the flows it found under each key (under the
// locks; nil where there is none). The caller unlocks l with unlockAll.
//
// It locks the keys' own shards and looks the keys up under the locks;
// only a flow found there with a key in a shard it does not hold (a
// pair's other key) makes it let go, lock the larger set in shard order
// and look again. Looking the keys up without a lock first, to know the
// whole set before locking, cost every write a second walk of the same
// chains, for the rare pair whose keys lie in two shards.
func (t *Table[V]) lockFor(ks *keySet, l *lockSet) (found [2]*Entry[V]) {
	var extra [2]int
	for {
		*l = lockSet{}
		for i := range ks.n {
			l.add(int(t.shardNo(ks.h[i])))
			if extra[i] > 0 {
				l.add(extra[i] - 1)
			}
		}
		t.lockAll(l)
		ok := true
		for i := range ks.n {
			e := t.findLockedHashed(&ks.k[i], ks.h[i])
			found[i], extra[i] = e, 0
			if e == nil {
				continue
			}
			if j := t.otherShard(e, &ks.k[i]); j >= 0 {
				extra[i] = j + 1
				ok = ok && l.has(j)
			}
		}
		if ok {
			return found
		}
		t.unlockAll(l)
	}
}

// otherShard is the shard of the key of flow e other than k, which is
// one of e's keys: -1 for a one-key flow.
func (t *Table[V]) otherShard(e *Entry[V], k *FlowKey) int {
	if e.node.Kind() != shard.Pair {
		return -1
	}
	if first := e.Key(); first != *k {
		return t.shardIndex(&first)
	}
	r, _ := e.Reply()
	return t.shardIndex(&r)
}

// findLockedHashed is the flow stored under k, whose hash is h; k's
// shard is locked.
func (t *Table[V]) findLockedHashed(k *FlowKey, h uint64) *Entry[V] {
	if p, ok := t.shardOf(h).FindLocked(h, skey(k)); ok {
		return shard.FlowAt[Entry[V]](p)
	}
	return nil
}

// unlink removes a live flow's keys from the index, gives back its records
// and its unit of the limit, and counts it. Every shard of its keys is
// locked. Its OnRemove is the caller's to defer (retire), after unlocking.
func (t *Table[V]) unlink(e *Entry[V], why Cause) {
	t.unlinkKeepUnit(e, why)
	// Release the limit only after the flow is gone, so Len never counts
	// fewer flows than are stored.
	t.live.Add(-1)
}

// unlinkKeepUnit is unlink for a flow whose unit of the limit passes
// straight to the flow that takes its place (eviction, replacement):
// giving the unit back and taking it again would let an insert into
// another shard take it in between, and Len pass Limit.
func (t *Table[V]) unlinkKeepUnit(e *Entry[V], why Cause) {
	k := e.Key()
	h := t.hash(&k)
	home := t.shardOf(h)
	t.markLeft(e, h, why)
	if p, ok := home.FindLocked(h, skey(&k)); ok {
		home.ClearLocked(p)
	}
	if r, ok := e.Reply(); ok {
		t.clearKey(&r)
		home.TallyLocked(tallyPairs, minusOne)
	}
	home.KillLocked(e)
	t.count(home, why, 1)
}

// clearKey removes k's slot, giving back its foreign ref if it has one.
func (t *Table[V]) clearKey(k *FlowKey) {
	h := t.hash(k)
	s := t.shardOf(h)
	if p, ok := s.FindLocked(h, skey(k)); ok {
		ref := p.Ref()
		s.ClearLocked(p)
		if shard.IsForeign(ref) {
			s.ForeignReleaseLocked(ref)
		}
	}
}

// setKey points k's slot at ref, replacing the slot of a key already
// present (so a reader finds the old flow or the new one, never neither)
// or placing a new one; absent says the write found k missing under the
// lock it still holds, and it is placed without looking.
func (t *Table[V]) setKey(k *FlowKey, h uint64, ref, stamp uint32, class uint8, absent bool) {
	s := t.shardOf(h)
	if absent {
		s.PlaceLocked(h, ref, stamp, class)
		return
	}
	if p, ok := s.FindLocked(h, skey(k)); ok {
		old := p.Ref()
		s.ReplaceLocked(p, ref, stamp, class)
		if shard.IsForeign(old) {
			s.ForeignReleaseLocked(old)
		}
		return
	}
	s.PlaceLocked(h, ref, stamp, class)
}

// store makes a new flow under k (and reply, for a pair) with value v, in
// k's shard's storage, and publishes its keys. The shards of both keys are
// locked; the caller has made room (a unit of the limit, or a replaced or
// evicted flow) and removes the flows it replaces afterwards.
func (t *Table[V]) store(ks *keySet, v V) *Entry[V] {
	k, reply := &ks.k[0], ks.reply()
	s := t.shardOf(ks.h[0])
	pair := reply != nil
	// The class first, unless the caller ran Config.Class already
	// (classBefore): it is the program's code, and if it panics nothing
	// has been allocated yet.
	class := ks.class
	if !ks.classSet {
		class = t.classFor(&v, &ks.locks)
	}
	e, ref, m := s.AllocLocked(pair)
	if !m.Empty() {
		t.folds(s, m)
	}
	e.node.SetKey(skey(k))
	e.value = v
	// With a feed attached, the new record is noted (below) and marked so:
	// swaps, class moves and its leaving before the note is drained need
	// no note of their own.
	feed := t.feed.Load()
	if w := uint64(class) << classShift; feed != nil {
		e.state.Store(w | noted | queued)
	} else if class != 0 {
		e.state.Store(w)
	}
	now := t.now.Load()
	e.lastSeen.Store(now)
	st := t.stamp(now)
	// The records are complete before their keys are published: the
	// slot stores below order these writes before any reader's loads.
	if pair {
		r := shard.Next(e)
		r.node.SetKey(skey(reply))
		rs := t.shardOf(ks.h[1])
		rref := shard.ReplyRef(ref)
		if rs != s {
			rref = rs.ForeignAllocLocked(r)
			r.node.Aux.Store(rref)
		}
		t.setKey(k, ks.h[0], ref, st, class, ks.absent)
		t.setKey(reply, ks.h[1], rref, st, shard.ReplyClass, ks.absent)
		s.TallyLocked(tallyPairs, 1)
	} else {
		t.setKey(k, ks.h[0], ref, st, class, ks.absent)
	}
	t.noteStored(feed, e, ks.h[0])
	return e
}

// classBefore runs Config.Class for the new flow's value into ks, before
// the write changes anything (store then uses it); if it panics, the unit
// of the limit the write took (taken) goes back, and the write's deferred
// unlock runs: nothing changed.
func (t *Table[V]) classBefore(ks *keySet, v *V, taken bool) {
	if ks.classSet {
		return
	}
	if t.classOf == nil {
		ks.class, ks.classSet = 0, true
		return
	}
	done := false
	defer func() {
		if !done && taken {
			t.live.Add(-1)
		}
	}()
	ks.class, ks.classSet = t.classFor(v, &ks.locks), true
	done = true
}

// classFor is Config.Class of v, or 0 without one or for a class the
// table does not have. It runs the program's code with the shards of l
// marked busy.
func (t *Table[V]) classFor(v *V, l *lockSet) uint8 {
	if t.classOf == nil {
		return 0
	}
	// A copy, handed to the program, in the scratch value of the step's
	// first shard, which the step holds: a copy of its own would escape
	// to the heap, an allocation per insert. A V with pointers is cleared
	// after, so the scratch keeps nothing alive.
	sc := &t.scratch[l.idx[0]].v
	*sc = *v
	var c int
	t.callback(l, -1, func() { c = t.classOf(sc) })
	if t.releaseValues {
		var zero V
		*sc = zero
	}
	if c > 0 && c < t.classes {
		return uint8(c)
	}
	return 0
}

// Insert stores v under k and returns the new flow. A flow already stored
// under k (on its own or as either key of a pair) is replaced, as OPTE's
// add does: the new flow takes k's slot for every later lookup, and the
// old one leaves with cause Replaced (a pair leaves with both its keys).
// At the limit it evicts a flow when Config.Evict approves one, and
// otherwise returns an error matching ErrFull and changes nothing.
func (t *Table[V]) Insert(k FlowKey, v V) (*Entry[V], error) {
	t.mustInit()
	var ks keySet
	t.oneKey(&ks, k)
	return t.insert(&ks, v, false)
}

// InsertPair stores v as one flow under two keys: k, and reply, the key
// of the other direction (k.Reverse() for a plain connection; behind a
// NAT, the translated reverse tuple). Get of either key finds the flow;
// it counts once in Len and against Limit; Remove of either key removes
// both; it expires, is evicted and is called back once. Both keys go in
// or neither does. Flows already stored under either key are replaced
// (cause Replaced), whole. k == reply stores a one-key flow.
func (t *Table[V]) InsertPair(k, reply FlowKey, v V) (*Entry[V], error) {
	t.mustInit()
	var ks keySet
	t.twoKeys(&ks, k, reply)
	return t.insert(&ks, v, false)
}

// insert is Insert and InsertPair. held says the caller has already
// taken a unit of the limit for the new flow (insertMissing): the write
// uses it, or gives it back when the new flow replaces one.
func (t *Table[V]) insert(ks *keySet, v V, held bool) (*Entry[V], error) {
	defer t.reclaimIfPending() // after the unlock below
	l := &ks.locks
	found := t.lockFor(ks, l)
	// Deferred, so that a panicking Config.Evict leaves no shard locked.
	defer t.unlockAll(l)
	if t.closed.Load() {
		if held {
			t.live.Add(-1)
		}
		return nil, t.errClose
	}
	k := &ks.k[0]
	home := t.shardOf(ks.h[0])
	var old [2]*Entry[V]
	n := 0
	for _, e := range found[:ks.n] {
		if e != nil && (n == 0 || old[0] != e) {
			old[n] = e
			n++
		}
	}
	var victim *Entry[V]
	taken := held // a unit of the limit reserved for the new flow
	if n == 0 && !held {
		// A full table refuses (or evicts for) a new flow before
		// allocating its record, so a flood at the limit makes no garbage.
		if taken = t.reserve(); !taken {
			var ok bool
			if victim, ok = t.evictable(k, l); !ok {
				home.TallyLocked(tallyFull, 1)
				return nil, t.errFull
			}
		}
	}
	// Config.Class runs before anything changes, so that a panic in it
	// changes nothing; then the victim leaves, before the new flow is
	// stored, so that its record's death can make room for the new one.
	t.classBefore(ks, &v, taken)
	var gs [3]gone[V]
	ng := 0
	if victim != nil {
		// Its unit of the limit passes to the new flow.
		t.unlinkKeepUnit(victim, Evicted)
		gs[ng] = gone[V]{victim, Evicted}
		ng++
	}
	ks.absent = n == 0
	t.markReplaced(old[:n])
	e := t.store(ks, v)
	for j, o := range old[:n] {
		// store may have moved o (an evacuation to make room): unlink
		// the flow's current record. The first replaced flow's unit of
		// the limit passes to the new flow (unless it has one already);
		// the others' go back.
		o = o.home()
		t.unlinkReplaced(o, ks, j > 0 || held)
		gs[ng] = gone[V]{o, Replaced}
		ng++
	}
	home.TallyLocked(tallyInserts, 1)
	t.retire(gs[:ng])
	return e, nil
}

// markReplaced marks the flows an insert replaces as left (markLeft),
// before store points their keys at the new flow.
func (t *Table[V]) markReplaced(old []*Entry[V]) {
	if t.feed.Load() == nil {
		return
	}
	for _, o := range old {
		k := o.Key()
		t.markLeft(o.home(), t.hash(&k), Replaced)
	}
}

// unlinkReplaced removes a flow that an insert replaced: the slots of its
// keys that the insert did not take over, its records and its unit of the
// limit.
func (t *Table[V]) unlinkReplaced(o *Entry[V], taken *keySet, release bool) {
	k := o.Key()
	if !taken.has(&k) {
		t.clearKey(&k)
	}
	s := t.shardOf(t.hash(&k))
	if r, ok := o.Reply(); ok {
		if !taken.has(&r) {
			t.clearKey(&r)
		}
		s.TallyLocked(tallyPairs, minusOne)
	}
	s.KillLocked(o)
	if release {
		t.live.Add(-1)
	}
	t.count(s, Replaced, 1)
}

// reserve takes one unit of the limit, or reports the table full. The
// count is exact because every insert reserves before it stores and every
// removal releases after it has removed.
func (t *Table[V]) reserve() bool {
	for {
		n := t.live.Load()
		if n >= t.limit {
			return false
		}
		if t.live.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// evictScan is how many slots an insert at the limit looks at for a
// victim: the new key's bucket and the buckets after it.
const evictScan = 64

// evictable finds the flow to evict for a new flow under k: among the
// flows whose first key lies in the first evictScan slots from k's bucket,
// the one idle longest that Config.Evict approves. A pair whose reply key
// lies in a shard the set l does not hold needs that shard's lock too: it
// is taken with TryLock, so the insert never waits out of order, and a
// pair whose shard is busy is passed over for the next idlest. The
// victim's extra lock joins l, and goes with the write's other locks.
// Evict runs with every shard held marked busy (callback).
func (t *Table[V]) evictable(k *FlowKey, l *lockSet) (*Entry[V], bool) {
	if t.evict == nil {
		return nil, false
	}
	h := t.hash(k)
	var buf [evictScan]shard.Pos
	cands := t.shardOf(h).NearLocked(h, evictScan, buf[:0])
	var best *Entry[V]
	var bestSeen int64
	held := -1 // the extra shard locked for best, if any
	defer func() {
		// Evict is the program's code: if it panics, let go of the
		// extra lock before the panic goes on.
		if v := recover(); v != nil {
			if held >= 0 {
				t.shards[held].Unlock()
			}
			panic(v)
		}
	}()
	for _, p := range cands {
		e := shard.FlowAt[Entry[V]](p)
		ls := e.lastSeen.Load()
		if best != nil && ls >= bestSeen {
			continue
		}
		approved := false
		t.callback(l, held, func() { approved = t.evict(e) })
		if !approved {
			continue
		}
		extra := -1
		if r, ok := e.Reply(); ok {
			if i := t.shardIndex(&r); !l.has(i) && i != held {
				if !t.shards[i].TryLock() {
					continue // busy: pass it over
				}
				extra = i
			} else if i == held {
				extra = held
			}
		}
		if held >= 0 && held != extra {
			t.shards[held].Unlock()
		}
		best, bestSeen, held = e, ls, extra
	}
	if held >= 0 {
		l.add(held)
	}
	return best, best != nil
}

// GetOrInsert is the miss path of a forwarder: it returns the flow stored
// under k, or inserts make() under k in one locked step. make runs at most
// once, and only when k was missing and the table has room; it runs with
// k's shard locked, so it must not call the table. The bool is true when
// this call inserted. It counts as one lookup: a hit or a miss.
func (t *Table[V]) GetOrInsert(k FlowKey, make func() V) (*Entry[V], bool, error) {
	if e, ok := t.Get(k); ok {
		return e, false, nil
	}
	var ks keySet
	t.oneKey(&ks, k)
	return t.getOrInsertResult(t.insertMissing(&ks, &maker[V]{one: make}))
}

// GetOrInsertPair is GetOrInsert for a pair: it returns the flow stored
// under k or under reply, or inserts make() under both keys in one locked
// step, as InsertPair does. It counts as one lookup.
func (t *Table[V]) GetOrInsertPair(k, reply FlowKey, make func() V) (*Entry[V], bool, error) {
	t.mustInit()
	for _, key := range [2]*FlowKey{&k, &reply} {
		h := t.hash(key)
		if e, slot, w := t.shardOf(h).Lookup(h, skey(key)); e != nil && t.touch(e, slot, w) {
			if sampleHit(e, uint64(cheaprand())) {
				t.hits.Add(hitSample)
			}
			return e, false, nil
		}
	}
	t.misses.Inc()
	var ks keySet
	t.twoKeys(&ks, k, reply)
	return t.getOrInsertResult(t.insertMissing(&ks, &maker[V]{one: make}))
}

// Remove removes the flow stored under k (either key of a pair: both go)
// and reports whether there was one. Its OnRemove runs after a grace
// period, with cause Removed.
func (t *Table[V]) Remove(k FlowKey) bool {
	t.mustInit()
	var ks keySet
	t.oneKey(&ks, k)
	l := &ks.locks
	e := t.lockFor(&ks, l)[0]
	if e != nil {
		t.unlink(e, Removed)
	}
	t.unlockAll(l)
	if e == nil {
		return false
	}
	t.retireOne(e, Removed)
	t.reclaimIfPending()
	return true
}

// SetClass moves a live flow to timeout class c (0 is TTL, 1..n are
// Config.Timeouts): from the next pass on, it expires when idle for that
// class's timeout. It locks the flow's first key's shard. It reports false
// when e is no longer in the table or the table has no class c.
func (t *Table[V]) SetClass(e *Entry[V], c int) bool {
	t.mustInit()
	if c < 0 || c >= t.classes || e == nil {
		return false
	}
	k := e.Key()
	h := t.hash(&k)
	s := t.shardOf(h)
	s.Lock()
	defer s.Unlock()
	// Under the lock the flow cannot move, so its home is stable.
	home := e.home()
	p, ok := s.FindLocked(h, skey(&k))
	if !ok || p.IsReply() || shard.FlowAt[Entry[V]](p) != home {
		return false
	}
	p.SetClass(uint8(c))
	for {
		w := home.state.Load()
		if home.state.CompareAndSwap(w, w&^classMask|uint64(c)<<classShift) {
			t.noteNew(home, h)
			return true
		}
	}
}
