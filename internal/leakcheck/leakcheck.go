// Package leakcheck is the TestMain of packages that own fds and
// goroutines (dump, restore, migrate): the run fails if the tests leave a
// goroutine (goleak) or a file descriptor behind, as cilium/ebpf's
// testmain does for its fds.
package leakcheck

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"testing"

	"go.uber.org/goleak"
)

// Main runs the tests and exits, failing a passing run that leaked.
func Main(m *testing.M) {
	// The runtime's netpoller (an epoll fd and an eventfd) starts with the
	// first pollable file: start it before taking the reference list.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before := Fds()
	code := m.Run()
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		os.Exit(code) // the fuzzing engine keeps its own fds and goroutines
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: leaked goroutines:", err)
			code = 1
		}
		if after := Fds(); !slices.Equal(before, after) {
			fmt.Fprintf(os.Stderr, "FAIL: leaked fds: before %v after %v\n", before, after)
			code = 1
		}
	}
	os.Exit(code)
}

// Fds lists this process's open fds as "N->target", in fd order.
func Fds() []string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			out = append(out, e.Name()+"->"+l)
		}
	}
	return out
}
