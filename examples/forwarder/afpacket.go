package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// With -io=syscall the forwarder talks to the interfaces through plain
// AF_PACKET sockets (golang.org/x/sys/unix, no cgo): SOCK_RAW, so a read
// gives the whole Ethernet frame (keyed with flowcache.ParseFrame) and a
// write sends one as it is. One receive socket per worker joins a
// PACKET_FANOUT group in hash mode: the kernel spreads packets over the
// workers by flow, so the packets of one flow stay in order and mostly
// touch one core's caches.
//
// Each read and each write is one system call. The default path
// (-io=ring, ring.go) reads TPACKET_V3 rings instead; this one stays for
// comparison (e2e.sh measures both) and for -sink, whose one socket reads
// at the forwarder's rate at most.
//
// The kernel strips the outermost VLAN tag of a received frame into
// metadata (it does so before any packet socket or ring sees it), so a
// tagged frame is read, keyed and forwarded without that tag. Its key does
// not change: ParseFrame skips tags anyway.

// htons is the network-order value of v as the socket calls want it.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// openRx opens a non-blocking receive socket on the interface. With
// fanout > 0 it joins that fanout group (hash mode). It does not see the
// frames this host sends on the interface, only the ones that arrive.
func openRx(ifindex int, fanout uint16, rcvbuf int) (int, error) {
	// Protocol 0 until bind: nothing is queued on the socket before it
	// is bound to the one interface.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("AF_PACKET socket: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fail("PACKET_IGNORE_OUTGOING", err)
	}
	// A large buffer absorbs bursts; SO_RCVBUFFORCE (root) may exceed
	// net.core.rmem_max, SO_RCVBUF may not.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf); err != nil {
			return fail("SO_RCVBUF", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		return fail("bind", err)
	}
	if fanout > 0 {
		arg := int(fanout) | unix.PACKET_FANOUT_HASH<<16
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, arg); err != nil {
			return fail("PACKET_FANOUT", err)
		}
	}
	return fd, nil
}

// openTx opens a send socket on the interface. Bound with protocol 0, it
// receives nothing; PACKET_QDISC_BYPASS hands frames straight to the
// driver.
func openTx(ifindex int) (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("AF_PACKET socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1) // an optimisation only
	return fd, nil
}

// readBatch reads up to len(bufs) frames without blocking: frames[i] is
// bufs[i] cut to the frame. It returns the frames read, and how many
// filled their whole buffer (and may have been cut): those are left out.
func readBatch(fd int, bufs [][]byte, frames [][]byte) (_ [][]byte, oversize int, err error) {
	frames = frames[:0]
	for _, b := range bufs {
		n, err := unix.Read(fd, b)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				return frames, oversize, nil
			}
			return frames, oversize, err
		}
		if n == len(b) {
			oversize++
			continue
		}
		frames = append(frames, b[:n])
	}
	return frames, oversize, nil
}

// sockRx is one worker's receive socket (-io=syscall), and the buffers
// its batch is read into.
type sockRx struct {
	fd      int
	bufs    [][]byte
	dropped uint64 // the monitor's running total of socketDrops
}

func openSockRx(ifindex int, fanout uint16, rcvbuf, bufSize, batch int) (*sockRx, error) {
	fd, err := openRx(ifindex, fanout, rcvbuf)
	if err != nil {
		return nil, err
	}
	r := &sockRx{fd: fd, bufs: make([][]byte, batch)}
	for i := range r.bufs {
		r.bufs[i] = make([]byte, bufSize)
	}
	return r, nil
}

// read is readBatch, and when the socket is empty a wait of up to 100 ms
// for it to have a frame (the caller then reads again).
func (r *sockRx) read(frames [][]byte) ([][]byte, int, error) {
	frames, oversize, err := readBatch(r.fd, r.bufs, frames)
	if err == nil && len(frames)+oversize == 0 {
		err = waitReadable(r.fd, 100)
	}
	return frames, oversize, err
}

// drops is the frames dropped since the socket was opened. Only the
// monitor calls it: the kernel resets its count on each read.
func (r *sockRx) drops() uint64 {
	r.dropped += socketDrops(r.fd)
	return r.dropped
}

func (r *sockRx) close() { unix.Close(r.fd) }

// sockTx is one worker's send socket (-io=syscall).
type sockTx struct{ fd int }

func (t sockTx) send(frame []byte) error {
	_, err := unix.Write(t.fd, frame)
	return err
}

func (t sockTx) close() { unix.Close(t.fd) }

// waitReadable blocks until fd has a frame or timeoutMs passes.
func waitReadable(fd int, timeoutMs int) error {
	p := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	_, err := unix.Poll(p[:], timeoutMs)
	if errors.Is(err, unix.EINTR) {
		return nil
	}
	return err
}

// socketDrops reads (and resets) the frames the kernel dropped because
// the socket's buffer was full.
func socketDrops(fd int) uint64 {
	st, err := unix.GetsockoptTpacketStats(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return 0
	}
	return uint64(st.Drops)
}

// frameBufSize is the receive buffer per frame: the interface MTU plus an
// Ethernet header and two VLAN tags, and one spare byte so that a frame
// that fills the buffer is known to be too long.
func frameBufSize(iface *net.Interface) int {
	return iface.MTU + 14 + 8 + 1
}
