//go:build !race

package flowcache

const raceEnabled = false
