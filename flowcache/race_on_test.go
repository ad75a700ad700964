//go:build race

package flowcache

// raceEnabled: the race detector is on; long tests run shorter.
const raceEnabled = true
