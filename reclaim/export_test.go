package reclaim

import (
	"time"
	"unsafe"
)

// SetClock makes d read its monotonic clock (the time a Defer is recorded
// at, and now in Stats) from now, so tests can pin DomainStats.LagTime.
// Call it before d is shared.
func SetClock(d *Domain, now func() time.Duration) { d.clock = now }

// ReaderSize is the size of a Reader, which must fill one 128-byte block.
const ReaderSize = unsafe.Sizeof(Reader{})

// CacheLine is the padding unit.
const CacheLine = cacheLine

// EpochOffset is the offset of the global epoch inside a Domain.
const EpochOffset = unsafe.Offsetof(Domain{}.epoch)

// DomainSize is the size of a Domain.
const DomainSize = unsafe.Sizeof(Domain{})

// SetBackoff changes Synchronize's backoff until the returned func is
// called. Not for parallel tests.
func SetBackoff(yields int, first, limit time.Duration) (restore func()) {
	oldSpins, oldMin, oldMax := spins, minSleep, maxSleep
	spins, minSleep, maxSleep = yields, first, limit
	return func() { spins, minSleep, maxSleep = oldSpins, oldMin, oldMax }
}

// Advance moves d's epoch on by one, as a Tick with work pending does.
func Advance(d *Domain) { d.epoch.Add(1) }

// SetOwnerGrace changes how long Synchronize waits for a Reader its
// caller registered before taking it to be the caller's own, until the
// returned func is called. Not for parallel tests.
func SetOwnerGrace(d time.Duration) (restore func()) {
	old := ownerGrace
	ownerGrace = d
	return func() { ownerGrace = old }
}

// Goid is the calling goroutine's id, as the misuse checks read it.
func Goid() int64 { return goid() }
