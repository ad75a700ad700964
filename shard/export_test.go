package shard

// Buckets is the bucket count of the current array.
func (s *core) Buckets() int { return len(s.arr.Load().buckets) }
