package flowcache

import (
	"strconv"

	"github.com/flowcache/flowcache/shard"
)

// Outcome is what a batch step did with one key (GetOrInsertPairBatch).
type Outcome uint8

// The outcomes. The zero Outcome is a key the step was not given.
const (
	Hit      Outcome = iota + 1 // the flow was there: out[i] is it
	Inserted                    // make's flow was stored: out[i] is it
	Refused                     // make returned ok = false: nothing was stored
	Full                        // the table was at its limit with nothing to evict; make did not run
	Closed                      // the table was closed; nothing was stored
)

var outcomeNames = [...]string{Hit: "hit", Inserted: "inserted", Refused: "refused", Full: "full", Closed: "closed"}

// String is the outcome as a lower-case word.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) && outcomeNames[o] != "" {
		return outcomeNames[o]
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// maker is the make of one miss: exactly one of one, at and pair is set.
// A struct on the caller's stack, not a closure, so that a batch's misses
// allocate nothing.
type maker[V any] struct {
	one  func() V                       // GetOrInsert, GetOrInsertPair
	at   func(i int) V                  // GetOrInsertBatch
	pair func(i int) (FlowKey, V, bool) // GetOrInsertPairBatch
	i    int                            // the key's index in the batch
}

// make runs the program's make for the key k: the value, the reply key
// (k itself for a one-key flow), and false if it refused.
func (m *maker[V]) make(k *FlowKey) (reply FlowKey, v V, ok bool) {
	switch {
	case m.pair != nil:
		return m.pair(m.i)
	case m.at != nil:
		return *k, m.at(m.i), true
	}
	return *k, m.one(), true
}

// insertMissing is the locked step of a miss: it returns the flow stored
// under one of ks's keys (Hit), or stores make's flow (Inserted), in one
// locked step, make running at most once, with the keys' shards locked,
// and only when the table has room for the flow (a unit of the limit, or
// a victim Config.Evict approved). A make that refuses (the pair batch's)
// changes nothing. A panic in make or Config.Class changes nothing.
//
// The pair batch's make names the flow's reply key, whose shard the step
// did not lock. The step locks it too when it can without breaking shard
// order (a higher shard, or one TryLock finds free) and the key is
// absent; otherwise it keeps its unit of the limit (evicting its victim
// now, if it chose one), lets go, and stores the flow as InsertPair does,
// in a write of its own that locks in order and replaces a flow found
// under the reply key (or, in a race, under k).
func (t *Table[V]) insertMissing(ks *keySet, mk *maker[V]) (*Entry[V], Outcome) {
	defer t.reclaimIfPending() // after the unlocks
	e, o, v := t.missLocked(ks, mk)
	if o != 0 {
		return e, o
	}
	e, err := t.insert(ks, v, true)
	if err != nil {
		return nil, Closed // the only way an insert that holds a unit fails
	}
	return e, Inserted
}

// missLocked is insertMissing's locked step. A zero Outcome means the
// flow, whose value it returns, is to be stored by insert with the unit
// the step took (the keys and the class are in ks).
func (t *Table[V]) missLocked(ks *keySet, mk *maker[V]) (*Entry[V], Outcome, V) {
	var v V
	// Only the keys' own shards: a flow found under a key is returned,
	// not changed, so the shard of its other key need not be locked.
	l := &ks.locks
	for i := range ks.n {
		l.add(int(t.shardNo(ks.h[i])))
	}
	t.lockAll(l)
	defer t.unlockAll(l) // l as it is then: the step may add to it
	if t.closed.Load() {
		return nil, Closed, v
	}
	for i := range ks.n {
		if p, ok := t.shardOf(ks.h[i]).FindLocked(ks.h[i], skey(&ks.k[i])); ok {
			// Another core inserted it between our lookup and the lock.
			return shard.FlowAt[Entry[V]](p), Hit, v
		}
	}
	k := &ks.k[0]
	var victim *Entry[V]
	taken := t.reserve() // a unit of the limit for the new flow
	if !taken {
		var ok bool
		if victim, ok = t.evictable(k, l); !ok {
			t.shardOf(ks.h[0]).TallyLocked(tallyFull, 1)
			return nil, Full, v
		}
	}
	// Until the flow is stored, a refusal or a panic in make or
	// Config.Class gives the unit back (or keeps the victim), and the
	// deferred unlock runs: nothing changed.
	kept := false
	defer func() {
		if !kept && taken {
			t.live.Add(-1)
		}
	}()
	var reply FlowKey
	ok := false
	t.callback(l, -1, func() { reply, v, ok = mk.make(k) })
	if !ok {
		return nil, Refused, v
	}
	// Config.Class now, while nothing has changed (store, or the write of
	// its own, uses it).
	ks.class, ks.classSet = t.classFor(&v, l), true
	relock := false
	if mk.pair != nil && reply != *k {
		t.twoKeys(ks, *k, reply)
		relock = !t.lockReply(ks, l)
	}
	kept = true
	if victim != nil {
		// Its unit of the limit passes to the new flow, whatever happens
		// after an unlock. It leaves before the new flow is stored, so
		// that its record's death can make room for the new one.
		t.unlinkKeepUnit(victim, Evicted)
		defer t.retireOne(victim, Evicted)
	}
	if relock {
		return nil, 0, v
	}
	// Every key was found missing under the locks still held.
	ks.absent = true
	e := t.store(ks, v)
	t.shardOf(ks.h[0]).TallyLocked(tallyInserts, 1)
	return e, Inserted, v
}

// lockReply locks, into l, the shard of a pair's reply key (ks.k[1]),
// which a miss's step did not hold, and reports whether the key is
// absent, so that the step may store the pair. It blocks only on a shard
// above every one l holds (shard order); any other it tries once. On
// false the caller lets go of everything l holds.
func (t *Table[V]) lockReply(ks *keySet, l *lockSet) bool {
	i := int(t.shardNo(ks.h[1]))
	if !l.has(i) {
		if top := l.idx[l.n-1]; i > top {
			t.shards[i].Lock()
		} else if !t.shards[i].TryLock() {
			return false
		}
		l.add(i)
	}
	_, present := t.shardOf(ks.h[1]).FindLocked(ks.h[1], skey(&ks.k[1]))
	return !present
}

// getOrInsertResult is insertMissing's answer as GetOrInsert gives it.
func (t *Table[V]) getOrInsertResult(e *Entry[V], o Outcome) (*Entry[V], bool, error) {
	switch o {
	case Full:
		return nil, false, t.errFull
	case Closed:
		return nil, false, t.errClose
	}
	return e, o == Inserted, nil
}
