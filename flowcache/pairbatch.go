package flowcache

// GetOrInsertPairBatch is GetOrInsertBatch for a program whose flows are
// pairs, or whose make may refuse a flow: a NAT, whose make binds a public
// port and names the reply key it implies, and refuses when no port is
// free; a conntrack-style firewall, whose make returns keys[i].Reverse().
//
// It looks every key up at once (GetBatch), then, for each key it missed,
// runs the locked step of GetOrInsertPair with make(i), which returns the
// flow's reply key, its value, and ok. With ok false nothing is stored
// and nothing else happens: the key has counted as a miss, and res[i] is
// Refused. A reply equal to keys[i] stores a one-key flow. make runs at
// most once per missing key, only when the table has room for the flow (a
// unit of the limit free, or a flow Config.Evict approved to evict), and
// with keys[i]'s shard locked: it must not call the table. Once make
// returns ok, the flow is stored, so whatever make took for it (a port)
// is given back by the flow's OnRemove, exactly once. As InsertPair does,
// the pair replaces a flow already stored under its reply key (cause
// Replaced); so does it, rarely, one another core stored under keys[i]
// while the step waited for the reply key's shard.
//
// out[i] is the flow of keys[i] (nil where none was found or stored), and
// res[i], when res is not nil, what the step did: Hit, Inserted, Refused,
// Full (make did not run) or Closed. It returns how many out[i] are set.
// len(out), and len(res) unless res is nil, must be at least len(keys).
// Each key counts as one lookup, a hit or a miss. A key that appears
// twice in keys is inserted once (the second finds the first's flow);
// one that make refused is offered to make again at its next copy. It
// allocates nothing but the new flows' records.
//
// A NAT's worker step, per batch (make binds a port from its pool):
//
//	n := t.GetOrInsertPairBatch(keys, w.bind, out, res)
func (t *Table[V]) GetOrInsertPairBatch(keys []FlowKey, make func(i int) (reply FlowKey, v V, ok bool), out []*Entry[V], res []Outcome) int {
	if res != nil && len(res) < len(keys) {
		panic("flowcache: GetOrInsertPairBatch: len(res) < len(keys)")
	}
	set := t.GetBatch(keys, out)
	if res != nil {
		for i := range keys {
			if out[i] != nil {
				res[i] = Hit
			}
		}
	}
	if set == len(keys) {
		return set
	}
	mk := maker[V]{pair: make}
	return set + t.insertMisses(keys, &mk, out, res)
}

// insertMisses runs the locked step of a miss (insertMissing) for every
// key whose out[i] a lookup left nil, and returns how many it set.
func (t *Table[V]) insertMisses(keys []FlowKey, mk *maker[V], out []*Entry[V], res []Outcome) int {
	set := 0
	for i := range keys {
		if out[i] != nil {
			continue
		}
		mk.i = i
		var ks keySet
		t.oneKey(&ks, keys[i])
		e, o := t.insertMissing(&ks, mk)
		out[i] = e
		if res != nil {
			res[i] = o
		}
		if e != nil {
			set++
		}
	}
	return set
}
