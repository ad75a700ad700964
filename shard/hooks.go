package shard

// The hooks below are for tests of the flood defence, here and in the
// packages that own shards (flowcache's and race_test's model an attacker
// who knows the seeds): they are exported because those tests live in
// other packages, where export_test.go cannot reach.

// BucketOf is the bucket index key hash h has in the current array; it is
// for tests of the flood defence (an attacker who knows the seed).
func (s *core) BucketOf(h uint64) uint64 {
	a := s.arr.Load()
	return mix(h, a.seed) & a.mask
}

// LongestChainLocked is the longest overflow chain of the current array,
// in overflow buckets. It walks the whole array; the caller holds the
// mutex.
func (s *core) LongestChainLocked() int {
	a := s.arr.Load()
	longest := 0
	for bi := range a.buckets {
		d := 0
		for b := a.next(&a.buckets[bi]); b != nil; b = a.next(b) {
			d++
		}
		longest = max(longest, d)
	}
	return longest
}

// SetMaxChainLocked sets the overflow chain bound; a negative bound turns
// the flood defence off (tests of the attack only).
func (s *core) SetMaxChainLocked(n int) { s.maxChain = n }
