package shard

// The owner runs its program's code with a shard's mutex held: flowcache
// calls GetOrInsert's make, Config.Evict and Config.Class in the locked
// step of an insert. If that code calls the owner again and needs the same
// mutex, Lock would wait for itself forever. The owner marks the window
// with SetBusyLocked; a Lock that finds the mutex held and the mark set
// calls the owner's Config.Reentered before it waits, and that panics if
// the caller is the code in the window. A Lock that finds the mutex free,
// or held with no mark, pays nothing more than before; lookups never
// lock.

// SetBusyLocked marks (true) or unmarks (false) that the owner runs its
// program's code with the mutex held; the caller holds the mutex.
func (s *core) SetBusyLocked(busy bool) { s.busy.Store(busy) }

// lockSlow is Lock when the mutex is held.
func (s *core) lockSlow() {
	if s.reentered != nil && s.busy.Load() {
		s.reentered()
	}
	s.mu.Lock()
}
