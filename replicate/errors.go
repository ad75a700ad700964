package replicate

import (
	"errors"
	"fmt"
)

// Errors, each wrapped with context; match with errors.Is.
var (
	// ErrVersion: a snapshot or a record of a format or value version
	// this reader does not know. The concrete error is a *VersionError.
	ErrVersion = errors.New("replicate: unknown version")
	// ErrCorrupt: a snapshot or a record that does not parse, or whose
	// checksum or count does not match. Nothing was applied.
	ErrCorrupt = errors.New("replicate: corrupt data")
	// ErrTruncated: a snapshot that ends early. It matches ErrCorrupt
	// too. Nothing was applied.
	ErrTruncated = fmt.Errorf("%w: truncated", ErrCorrupt)
	// ErrValue: the Codec could not decode a flow's value. Nothing of
	// that flow was applied.
	ErrValue = errors.New("replicate: value does not decode")
	// ErrFenced: a publisher found a newer epoch than its own: another
	// publisher was promoted, and this one must stop.
	ErrFenced = errors.New("replicate: fenced by a newer epoch")
	// ErrClosed: the publisher or follower was closed.
	ErrClosed = errors.New("replicate: closed")
)

// VersionError says which version a reader met and which it knows. It
// matches ErrVersion.
type VersionError struct {
	What string // "snapshot", "record" or "value"
	Got  int
	Want int
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("replicate: unknown %s version %d (this reader knows %d)", e.What, e.Got, e.Want)
}

// Is makes errors.Is(err, ErrVersion) true.
func (e *VersionError) Is(target error) bool { return target == ErrVersion }

func isValueErr(err error) bool { return errors.Is(err, ErrValue) }
