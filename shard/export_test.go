package shard

import "unsafe"

// Buckets is the bucket count of the current array.
func (s *core) Buckets() int { return len(s.arr.Load().buckets) }

// SparseLocked is how many chunks are queued for evacuation; the caller
// holds the mutex.
func (s *core) SparseLocked() int { return len(s.arr.Load().store.sparse) }

// Prev is the record before e: a pair's first record, given its reply
// record.
func Prev[E any](e *E) *E { return (*E)(unsafe.Add(unsafe.Pointer(e), -int(recSize[E]()))) }
