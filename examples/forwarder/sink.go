package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"golang.org/x/sys/unix"
)

// sinkReport is what -sink counted: every frame that arrived on the
// interface (frames this host sent are not counted), the IP ones, and the
// frames of the watched flow.
type sinkReport struct {
	Iface       string  `json:"iface"`
	Seconds     float64 `json:"seconds"`
	Frames      uint64  `json:"frames"`
	Bytes       uint64  `json:"bytes"`
	IPFrames    uint64  `json:"ip_frames"`
	Watched     uint64  `json:"watched"`
	SocketDrops uint64  `json:"socket_drops"`
}

type sink struct {
	frames, bytes, ip, watched, drops atomic.Uint64
}

// runSink counts the frames arriving on o.sink until SIGINT or SIGTERM,
// then prints a JSON sinkReport; SIGUSR1 prints one with the counts so
// far. It only reads: the test host it runs on keeps its own stack from
// answering anything.
func runSink(o options) error {
	iface, err := net.InterfaceByName(o.sink)
	if err != nil {
		return err
	}
	var watch flowcache.FlowKey
	watching := o.watch != ""
	if watching {
		if watch, err = parseKey(o.watch); err != nil {
			return err
		}
	}
	fd, err := openRx(iface.Index, 0, o.rcvbuf)
	if err != nil {
		return fmt.Errorf("%s: %w", iface.Name, err)
	}
	defer unix.Close(fd)

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)

	var s sink
	start := time.Now()
	rep := func() sinkReport {
		return sinkReport{
			Iface: iface.Name, Seconds: time.Since(start).Seconds(),
			Frames: s.frames.Load(), Bytes: s.bytes.Load(), IPFrames: s.ip.Load(),
			Watched: s.watched.Load(), SocketDrops: s.drops.Load(),
		}
	}
	go func() {
		for range usr1 {
			json.NewEncoder(os.Stdout).Encode(rep())
		}
	}()

	buf := make([]byte, frameBufSize(iface))
	for {
		n, err := unix.Read(fd, buf)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			s.drops.Add(socketDrops(fd))
			if ctx.Err() != nil {
				return json.NewEncoder(os.Stdout).Encode(rep())
			}
			if err := waitReadable(fd, 100); err != nil {
				return err
			}
			continue
		case err != nil:
			return err
		}
		s.frames.Add(1)
		s.bytes.Add(uint64(n))
		if k, err := flowcache.ParseFrame(buf[:n]); err == nil {
			s.ip.Add(1)
			if watching && k == watch {
				s.watched.Add(1)
			}
		}
	}
}

// parseKey reads "proto,src,sport,dst,dport", e.g. "17,198.19.0.1,5000,198.18.0.1,5001".
func parseKey(s string) (flowcache.FlowKey, error) {
	f := strings.Split(s, ",")
	if len(f) != 5 {
		return flowcache.FlowKey{}, fmt.Errorf("-watch %q: want proto,src,sport,dst,dport", s)
	}
	proto, err1 := strconv.ParseUint(f[0], 10, 8)
	src, err2 := netip.ParseAddr(f[1])
	sport, err3 := strconv.ParseUint(f[2], 10, 16)
	dst, err4 := netip.ParseAddr(f[3])
	dport, err5 := strconv.ParseUint(f[4], 10, 16)
	for _, err := range []error{err1, err2, err3, err4, err5} {
		if err != nil {
			return flowcache.FlowKey{}, fmt.Errorf("-watch %q: %w", s, err)
		}
	}
	return flowcache.NewFlowKey(src, dst, uint16(sport), uint16(dport), uint8(proto)), nil
}
