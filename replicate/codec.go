package replicate

import (
	"encoding/binary"
	"fmt"
	"reflect"
)

// Codec puts a flow's value on the wire: a snapshot and the change stream
// carry every value as Append wrote it, with Version beside it in every
// record, and a reader decodes only records of its codec's version (an
// unknown one is a *VersionError, before any flow is touched).
//
// Decode must not keep src, must not panic on any input, and must leave v
// as it found it when it returns an error: a value that does not decode is
// reported (wrapped in ErrValue) and its flow is not applied.
type Codec[V any] interface {
	// Version is the value format: change it whenever Append's output
	// changes meaning.
	Version() uint8
	// Append appends v's encoding to dst and returns the extended slice.
	Append(dst []byte, v *V) []byte
	// Decode sets *v from src, which is exactly what Append wrote.
	Decode(src []byte, v *V) error
}

// Binary returns a Codec for a fixed-size V: a number, a bool, an array or
// a struct of those, as encoding/binary lays them out (little-endian,
// without padding). It fails for a V that binary cannot size, such as one
// holding a slice, a string, a map or a pointer.
func Binary[V any](version uint8) (Codec[V], error) {
	var v V
	n := binary.Size(&v)
	if n < 0 {
		return nil, fmt.Errorf("replicate: Binary: %v is not a fixed-size value", reflect.TypeFor[V]())
	}
	return binaryCodec[V]{version: version, size: n}, nil
}

type binaryCodec[V any] struct {
	version uint8
	size    int
}

func (c binaryCodec[V]) Version() uint8 { return c.version }

func (c binaryCodec[V]) Append(dst []byte, v *V) []byte {
	// binary.Append fails only for a V that is not fixed-size, which
	// Binary refused.
	out, err := binary.Append(dst, binary.LittleEndian, v)
	if err != nil {
		panic(err)
	}
	return out
}

func (c binaryCodec[V]) Decode(src []byte, v *V) error {
	if len(src) != c.size {
		return fmt.Errorf("%w: %d bytes, want %d", ErrValue, len(src), c.size)
	}
	var tmp V
	if _, err := binary.Decode(src, binary.LittleEndian, &tmp); err != nil {
		return fmt.Errorf("%w: %v", ErrValue, err)
	}
	*v = tmp
	return nil
}
