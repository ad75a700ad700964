// Command jetstream runs a NATS server with JetStream, built from the
// module go.mod pins (github.com/nats-io/nats-server/v2), for the
// forwarder's end-to-end test (../../e2e.sh): a primary forwarder
// started with -replicate and its standby with -standby both connect to
// it. Nothing is downloaded; the server listens where -addr says (by
// default on loopback only) and stores under -store.
//
//	jetstream -addr 127.0.0.1:4222 -store DIR
//
// It prints "ready nats://ADDR" on stdout once it accepts connections, and
// runs until SIGINT or SIGTERM.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:4222", "host:port to listen on (port 0: any free port)")
	store := flag.String("store", "", "directory for JetStream's file store (required)")
	logs := flag.Bool("log", false, "log the server's notices to stderr")
	flag.Parse()
	if err := run(*addr, *store, *logs); err != nil {
		fmt.Fprintln(os.Stderr, "jetstream:", err)
		os.Exit(1)
	}
}

func run(addr, store string, logs bool) error {
	if store == "" {
		return fmt.Errorf("-store is required")
	}
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return fmt.Errorf("-addr %q: %w", addr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT // the server's 0 is its default port, 4222
	}
	s, err := server.NewServer(&server.Options{
		Host: host, Port: port, JetStream: true, StoreDir: store,
		NoSigs: true, NoLog: !logs,
	})
	if err != nil {
		return err
	}
	if logs {
		s.ConfigureLogger()
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return fmt.Errorf("not ready after 10 s")
	}
	fmt.Printf("ready nats://%s\n", s.Addr())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}
