// Package inline calls the table's lookups the way a program does, for
// TestGetInlines, which compiles it with -gcflags=-m and reads which calls
// the compiler inlined. It is under testdata so that ./... skips it.
package inline

import "github.com/flowcache/flowcache/flowcache"

// Value is a program's own by-value lookup.
func Value(t *flowcache.Table[[3]uint64], k flowcache.FlowKey) ([3]uint64, bool) {
	e, ok := t.Get(k)
	if !ok {
		return [3]uint64{}, false
	}
	return *e.Value(), true
}
