package shard

import (
	"math/bits"
	"sync/atomic"
	"unsafe"
)

// bucket is one cache line of the index; see doc.go for the picture.
type bucket struct {
	tags    atomic.Uint64                 // four 16-bit tags, 0 = free slot
	slots   [slotsPerBucket]atomic.Uint64 // per slot: ref (low 32 bits) | stamp (high 32)
	classes atomic.Uint32                 // per slot: the owner's class byte
	// next is the overflow chain: 0, or 1 + the index of the next bucket
	// in the array's overflow area. An index, not a pointer, so that the
	// index holds no pointer and the garbage collector never scans it.
	// Never unlinked while published.
	next atomic.Uint32
	// low is the low 32 bits of each slot's bucket hash (mix of the key's
	// table hash and the array's seed), in the bytes that rounded the
	// bucket up to its cache line: a growth keeps the seed and places each
	// key by one more of these bits (split), so it reads no record and
	// hashes no key. Written and read only under the mutex, never by a
	// lookup.
	low [slotsPerBucket]uint32
}

// A bucket is exactly one cache line: a lookup's first miss brings in
// every tag, ref and stamp of the bucket at once.
var _ [0]struct{} = [unsafe.Sizeof(bucket{}) - 64]struct{}{}

const (
	slotsPerBucket = 4
	tagBits        = 16
	tagMask        = 1<<tagBits - 1
	// lanes and their high bits, for matching four 16-bit tags at once.
	laneLow15 = 0x7fff_7fff_7fff_7fff
	laneHigh  = 0x8000_8000_8000_8000
	laneOnes  = 0x0001_0001_0001_0001
)

// A ref names the record that holds a slot's key. Local refs index the
// array's storage; a foreign ref indexes the shard's foreign table, which
// points at a record stored by another shard of the same owner (the reply
// record of a pair whose first key hashes elsewhere).
const (
	refForeign = 1 << 31 // the low bits index the foreign table
	refReply   = 1 << 30 // a local ref to a pair's reply record
	refIndex   = refReply - 1
	// MaxRecords is how many records one storage generation can hold.
	MaxRecords = refIndex + 1
)

// word packs a slot's ref and stamp, so that a lookup's refresh can
// compare-and-swap the stamp of exactly the slot it found: if a writer has
// put another flow in the slot since, the ref differs and the stamp is
// left alone (a stamp may be early, never late).
func word(ref, stamp uint32) uint64 { return uint64(stamp)<<32 | uint64(ref) }

func refOf(w uint64) uint32   { return uint32(w) }
func stampOf(w uint64) uint32 { return uint32(w >> 32) }

// WithStamp is w with its stamp replaced.
func WithStamp(w uint64, stamp uint32) uint64 { return w&(1<<32-1) | uint64(stamp)<<32 }

// IsReplyWord reports whether a slot word holds a pair's reply key.
func IsReplyWord(w uint64) bool { return refOf(w)&(refReply|refForeign) != 0 }

// StampOf is the stamp in a slot word.
func StampOf(w uint64) uint32 { return stampOf(w) }

// mix turns the table hash into this generation's bucket hash. A fresh
// shard seed moves every key to an unrelated bucket, which is what undoes
// a flood of keys crafted to share one bucket.
func mix(h, seed uint64) uint64 {
	hi, lo := bits.Mul64(h^seed, 0x9e3779b97f4a7c15)
	return hi ^ lo
}

// tagOf takes the tag from the bits the bucket index does not use, the
// top 16, with the lowest of them set: 0 marks a free slot, and a tag
// with its low bit set is never 0, without a branch (where a zero tag
// made 1 cost a lookup a test and a jump). So a tag holds 15 bits of the
// hash, and another key's tag matches with probability 2^-15.
func tagOf(h uint64) uint64 { return h>>(64-tagBits) | 1 }

// match returns a word with the high bit of every lane of tags that equals
// tag. It is exact: the low 15 bits of each lane are added without carrying
// into the next lane.
func match(tags, tag uint64) uint64 { return matchLanes(tags, tag*laneOnes) }

// matchLanes is match with the tag already in every lane (tag ×
// laneOnes), for a lookup that computes it once for a whole chain.
func matchLanes(tags, lanes uint64) uint64 {
	x := tags ^ lanes
	y := (x & laneLow15) + laneLow15
	return ^(y | x | laneLow15)
}

// free returns the high bit of every lane of tags that is 0.
func free(tags uint64) uint64 { return match(tags, 0) }

func lane(m uint64) int { return bits.TrailingZeros64(m) / tagBits }

// slotOf is the slot of the lowest lane m (a match) marks: the lane's
// high bit is bit 16i+15, and slot i lies 8i bytes after slot 0,
// (16i+15)/2 rounded down to a multiple of 8. One address computation,
// where &b.slots[lane(m)] took a division, a mask for the bounds and two
// adds.
func (b *bucket) slotOf(m uint64) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Add(unsafe.Pointer(&b.slots[0]), uintptr(bits.TrailingZeros64(m)>>1)&^7))
}

// class is slot i's class byte.
func (b *bucket) class(i int) uint8 { return uint8(b.classes.Load() >> (8 * i)) }

// setClass stores slot i's class byte; the caller holds the mutex, the
// only writer of the word.
func (b *bucket) setClass(i int, c uint8) {
	w := b.classes.Load()
	b.classes.Store(w&^(0xff<<(8*i)) | uint32(c)<<(8*i))
}

// fill stores a key in free lane i: the slot word and class first, then
// the tag, so a reader that matches the tag finds the ref. low is the low
// half of the key's bucket hash.
func (b *bucket) fill(i int, tag uint64, w uint64, class uint8, low uint32) {
	b.low[i] = low
	b.slots[i].Store(w)
	b.setClass(i, class)
	b.tags.Store(b.tags.Load() | tag<<(i*tagBits))
}

// clear frees lane i by clearing its tag only. A reader that matched the
// old tag and loads the slot word afterwards still finds the old ref, the
// flow that is being removed concurrently; a writer that fills the lane
// again stores the new word before the new tag.
func (b *bucket) clear(i int) {
	b.tags.Store(b.tags.Load() &^ (tagMask << (i * tagBits)))
}
