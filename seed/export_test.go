package seed

// Deterministic reports whether the source replays a fixed stream.
func (s *Source) Deterministic() bool { return s.fixed }
