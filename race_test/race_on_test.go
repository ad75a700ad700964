//go:build race

package race_test

// raceEnabled is true when the race detector is on: tests scale their
// budgets by it, since -race makes every memory access several times
// slower.
const raceEnabled = true
