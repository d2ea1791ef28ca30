// Command qa8_keepalive is a Go HTTP server with a keep-alive client of
// its own, for the integration tests. Go 1.24+ makes the listener an MPTCP
// socket where the kernel has MPTCP; the client dials plain TCP, so the
// connection the server accepts fell back to TCP, and such a socket reads
// SO_RCVLOWAT 0 (a socket setsockopt made reads 1 or more).
//
// Report (first line of stdout):
//
//	{"pid":N,"port":N,"protocol":N,"rcvlowat":N}
//
// protocol is the listener's SO_PROTOCOL (6 TCP, 262 MPTCP), rcvlowat the
// accepted connection's SO_RCVLOWAT. Then "tick served N" lines: the
// client requests the server every 10 ms over the one kept-alive
// connection and ticks when the answer is right.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	proto := -1
	if rc, err := ln.(*net.TCPListener).SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			proto, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PROTOCOL)
		})
	}
	lowat := make(chan int, 1)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "n=%s", r.URL.Query().Get("n"))
		}),
		ConnState: func(c net.Conn, s http.ConnState) {
			if s != http.StateNew {
				return
			}
			v := -1
			if sc, ok := c.(syscall.Conn); ok {
				if rc, err := sc.SyscallConn(); err == nil {
					_ = rc.Control(func(fd uintptr) {
						v, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT)
					})
				}
			}
			select {
			case lowat <- v:
			default:
			}
		},
	}
	go func() { _ = srv.Serve(ln) }()
	port := ln.Addr().(*net.TCPAddr).Port
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	get := func(n uint64) bool {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/?n=%d", port, n))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b) == fmt.Sprintf("n=%d", n)
	}
	for !get(0) {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Printf("{\"pid\":%d,\"port\":%d,\"protocol\":%d,\"rcvlowat\":%d}\n", os.Getpid(), port, proto, <-lowat)
	for n := uint64(1); ; {
		if get(n) {
			fmt.Printf("tick served %d\n", n)
			n++
		}
		time.Sleep(10 * time.Millisecond)
	}
}
