//go:build !(armbe || arm64be || m68k || mips || mips64 || mips64p32 || ppc || ppc64 || s390 || s390x || shbe || sparc || sparc64)

package flowcache

// le64 is the value of the 8 bytes that hold w in memory, read
// little-endian, as xxh3 reads them: on a little-endian machine, w.
func le64(w uint64) uint64 { return w }
