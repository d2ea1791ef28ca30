// Command gohttp is a plain Go HTTP server for the integration tests. Go
// 1.24+ makes its listener an MPTCP socket where the kernel has MPTCP.
//
// Report (first line of stdout):
//
//	{"pid":N,"port":N,"protocol":N}
//
// where protocol is the listener's SO_PROTOCOL (6 TCP, 262 MPTCP). Then
// "tick served N" lines: the program requests its own server over a new
// connection every 10 ms and ticks when the answer is right.
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
	port := ln.Addr().(*net.TCPAddr).Port
	fmt.Printf("{\"pid\":%d,\"port\":%d,\"protocol\":%d}\n", os.Getpid(), port, proto)
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "hello")
		}))
	}()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	for n := uint64(1); ; {
		if resp, err := client.Get(url); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) == "hello" {
				fmt.Printf("tick served %d\n", n)
				n++
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}
