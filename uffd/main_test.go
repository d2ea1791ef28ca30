package uffd

import (
	"fmt"
	"os"
	"slices"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaks a goroutine or an fd.
func TestMain(m *testing.M) {
	runChildIfRequested()
	// The runtime's netpoller (an epoll fd and an eventfd) starts with the
	// first pollable file: start it before taking the reference list.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before := fds()
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			code = 1
		}
		if after := fds(); !slices.Equal(before, after) {
			fmt.Fprintf(os.Stderr, "leaked fds: before %v after %v\n", before, after)
			code = 1
		}
	}
	os.Exit(code)
}

func fds() []string {
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
