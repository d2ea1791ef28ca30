package restore

import (
	"github.com/lazycr/lazycr/files"
)

// restoreFds re-creates the image's fd table at its exact numbers: see
// [files.Restore].
func (r *Process) restoreFds() error {
	if r.tcp == nil {
		r.tcp = files.NewTCPRestore(r.opts.Log)
	}
	return files.Restore(remote{r.b}, r.fds, files.RestoreOptions{Inherit: r.opts.InheritFds, Given: r.given, Log: r.opts.Log, TCP: r.tcp,
		SharedMemory: r.shm.forFiles, HandOver: r.opts.Lazy, Terminal: r.opts.job.terminal(), UnixReconnect: r.opts.UnixReconnect, UnixBinds: r.ubinds, Ptys: r.opts.ptys})
}

// remote lends the builder to package files.
type remote struct{ b *builder }

func (m remote) Pid() int                                          { return m.b.pid }
func (m remote) Syscall(nr uintptr, a ...uintptr) (uintptr, error) { return m.b.call(nr, a...) }
func (m remote) Put(off int, data []byte) (uintptr, error)         { return m.b.put(off, data) }
func (m remote) Get(off, n int) ([]byte, error)                    { return m.b.get(off, n) }
func (m remote) Scratch() uintptr                                  { return m.b.scratch }
