package flowcache

import "math/bits"

// The table hash of a key is xxh3.HashSeed of the 40 bytes that hold it,
// with the table seed. The xxh3 that zeebo/xxh3 implements takes a slice
// and branches on its length; a key is always 40 bytes, so the branch for
// 33 to 64 bytes is all that is left, written out here (hashKeys.sum) on
// the five little-endian words it reads (word i is bytes 8i to 8i+7; the
// 16-byte blocks that xxh3 reads at offsets 16, 8, 0 and 24 overlap):
//
//	acc = 40 × prime64_1
//	    + fold(w0 ^ (s00 + seed), w1 ^ (s08 − seed))
//	    + fold(w1 ^ (s48 + seed), w2 ^ (s56 − seed))
//	    + fold(w2 ^ (s32 + seed), w3 ^ (s40 − seed))
//	    + fold(w3 ^ (s16 + seed), w4 ^ (s24 − seed))
//	hash = avalanche(acc)
//
// where fold(x, y) is the high word of the 128-bit product x×y xored
// with the low one, and sNN is xxh3's default secret read at byte NN.
// TestHash40MatchesXXH3 checks that every form of it the table uses gives
// xxh3.HashSeed's value for random keys and seeds, so the hash is the
// same one that race_test reproduces from outside and that every key had
// before.
//
// The constants are xxh3's (xxHash by Yann Collet; the Go code this
// follows is github.com/zeebo/xxh3, BSD 2-Clause, Copyright (c) 2012-2014
// Yann Collet, Copyright (c) 2019 Jeff Wendling).

// hashKeys are the eight words the hash xors into the key's words: xxh3's
// secret with the seed added or subtracted (s00 + seed, s08 − seed, …, in
// the order of the sum above), then the two 64-bit constants the sum ends
// with (40 × prime64_1, and the avalanche's multiplier). The eight depend
// on the seed alone, so a table computes them once, in New, and a
// lookup's hash xors each word with one load, where it took an add and a
// 64-bit constant; the last two save a constant's move each, as memory
// operands (docs/PERFORMANCE.md).
type hashKeys [10]uint64

// keysFor is the hashKeys of seed.
func keysFor(seed uint64) hashKeys {
	return hashKeys{
		xxSecret000 + seed, xxSecret008 - seed,
		xxSecret048 + seed, xxSecret056 - seed,
		xxSecret032 + seed, xxSecret040 - seed,
		xxSecret016 + seed, xxSecret024 - seed,
		xxLen40, xxAvalancheMul,
	}
}

// sum is the table hash of the key whose little-endian words are w0 to
// w4.
// Written out of its halves, each small enough to inline (sum itself is
// over the inliner's budget): Get writes the hash out with them, so a
// lookup hashes without a call.
func (h *hashKeys) sum(w0, w1, w2, w3, w4 uint64) uint64 {
	return h.avalanche(h.lo(w0, w1, w2) + h.hi(w2, w3, w4))
}

// avalanche is xxh3's avalanche of xxLen40 + acc, its constants from h.
func (h *hashKeys) avalanche(acc uint64) uint64 {
	acc += h[8]
	acc ^= acc >> 37
	acc *= h[9]
	return acc ^ acc>>32
}

func (h *hashKeys) lo(w0, w1, w2 uint64) uint64 {
	return fold64(w0^h[0], w1^h[1]) + fold64(w1^h[2], w2^h[3])
}

func (h *hashKeys) hi(w2, w3, w4 uint64) uint64 {
	return fold64(w2^h[4], w3^h[5]) + fold64(w3^h[6], w4^h[7])
}

// hashWords is the table hash of a key held in registers: the write paths hash
// a key that came to them by value without storing it first.
func (t *Table[V]) hashWords(k FlowKey) uint64 {
	return t.keys.sum(le64(k.w0), le64(k.w1), le64(k.w2), le64(k.w3), le64(k.w4))
}

func fold64(x, y uint64) uint64 {
	hi, lo := bits.Mul64(x, y)
	return hi ^ lo
}

// 40 × xxh3's prime64_1 (11400714785074694791), modulo 2^64, the first
// 64 bytes of xxh3's default secret, as little-endian words, and the
// multiplier of xxh3's avalanche.
const (
	xxLen40     = 0xb8ab03bcecd7a518
	xxSecret000 = 0xbe4ba423396cfeb8
	xxSecret008 = 0x1cad21f72c81017c
	xxSecret016 = 0xdb979083e96dd4de
	xxSecret024 = 0x1f67b3b7a4a44072
	xxSecret032 = 0x78e5c0cc4ee679cb
	xxSecret040 = 0x2172ffcc7dd05a82
	xxSecret048 = 0x8e2443f7744608b8
	xxSecret056 = 0x4c263a81e69035e0

	xxAvalancheMul = 0x165667919e3779f9
)
