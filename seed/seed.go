package seed

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
)

// Random returns a non-zero 64-bit seed from crypto/rand. Zero is skipped
// because flowcache's Config uses 0 to mean "pick one at random".
func Random() uint64 {
	var b [8]byte
	for {
		// crypto/rand.Read never returns an error on the platforms Go
		// supports (it crashes the program instead), so there is nothing
		// to handle here.
		_, _ = rand.Read(b[:])
		if s := binary.LittleEndian.Uint64(b[:]); s != 0 {
			return s
		}
	}
}

// Source hands out seeds: from crypto/rand, or, when built with a fixed
// starting seed, from a deterministic SplitMix64 stream so that a test or a
// benchmark sees the same seeds on every run.
type Source struct {
	mu    sync.Mutex
	fixed bool
	state uint64
}

// NewSource returns a Source. With start == 0 every Uint64 comes from
// crypto/rand; any other start gives a deterministic stream.
func NewSource(start uint64) *Source {
	return &Source{fixed: start != 0, state: start}
}

// Uint64 returns the next non-zero seed.
func (s *Source) Uint64() uint64 {
	if !s.fixed {
		return Random()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		s.state += 0x9e3779b97f4a7c15
		if v := splitmix64(s.state); v != 0 {
			return v
		}
	}
}

// splitmix64 is the output function of SplitMix64 (Steele, Lea and Flood,
// "Fast splittable pseudorandom number generators", OOPSLA 2014): a
// bijective mix, so distinct states give distinct seeds.
func splitmix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
