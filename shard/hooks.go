package shard

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
