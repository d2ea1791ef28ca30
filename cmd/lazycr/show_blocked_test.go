package main

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestBlockedText: a thread that blocks (nearly) everything shows "all" or
// "all but" the few it does not block, not some 60 names (QA2 Q10).
func TestBlockedText(t *testing.T) {
	bit := func(s unix.Signal) uint64 { return 1 << (s - 1) }
	every := ^uint64(0)
	for _, c := range []struct {
		m    uint64
		want string
	}{
		{0, "-"},
		{bit(unix.SIGINT) | bit(unix.SIGTERM), "SIGINT,SIGTERM"},
		{every, "all"},
		{every &^ (bit(unix.SIGKILL) | bit(unix.SIGSTOP)), "all"},
		// glibc's sigfillset + pthread_sigmask: all but its internal 32, 33 (redis's bio threads).
		{every &^ (bit(unix.SIGKILL) | bit(unix.SIGSTOP) | 1<<31 | 1<<32), "all but SIG32,SIG33"},
		{every &^ bit(unix.SIGUSR1), "all but SIGUSR1"},
	} {
		if got := blockedText(c.m); got != c.want {
			t.Errorf("blockedText(%#x) = %q, want %q", c.m, got, c.want)
		}
	}
}
