package integration

import (
	"testing"
)

// filecheckKeys are the checks filecheck ticks once per passed round.
var filecheckKeys = []string{"pipe", "fifo", "dev", "udp", "epoll", "dup", "udplite", "memfd", "deleted", "inotify", "async", "oneshot", "lone"}

// startFilecheck starts filecheck (see its source) and waits until every
// check passed at least once before the dump.
func startFilecheck(t *testing.T, env lazyEnv) *proc {
	t.Helper()
	p := env.startProg(t, buildC(t, "filecheck"), t.TempDir())
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, filecheckKeys...)
	return p
}

// TestFilesFidelity: pipe and FIFO ends keep their flags and buffered data
// (a non-blocking empty end reads EAGAIN, not EOF), /dev/null, /dev/zero
// and /dev/urandom keep working, UDP sockets keep their shutdown state, and
// an epoll set watching a dup'ed fd whose original number was closed and
// reused still wakes for the right file, dup'ed fds share one open file
// description, a UDP-Lite socket keeps its checksum coverage, a memfd its name,
// content, seals and offset, and a file unlinked while open its
// content, mode, name and offsets, an inotify instance its watches (and
// their descriptors, gap included), a socket its O_ASYNC owner and
// signal, a fired EPOLLONESHOT entry stays disarmed, a pipe and a FIFO
// whose writer is gone keep their data — after a plain dump and restore,
// as the program itself checks.
func TestFilesFidelity(t *testing.T) {
	t.Parallel()
	p := startFilecheck(t, lazyEnv{})
	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, filecheckKeys...)
	checkSequence(t, rp, filecheckKeys...)
}

// TestFilesFidelityLazy: the same through dump --lazy / restore --lazy-from
// between two hosts (the frozen original keeps its ports on the source).
func TestFilesFidelityLazy(t *testing.T) {
	t.Parallel()
	env := lazyTwoHosts(t)
	p := startFilecheck(t, env)
	m := migrateLazy(t, env, p, nil, nil)
	requireProgress(t, m.restored, filecheckKeys...)
	checkSequence(t, m.restored, filecheckKeys...)
}
