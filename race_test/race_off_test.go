//go:build !race

package race_test

const raceEnabled = false
