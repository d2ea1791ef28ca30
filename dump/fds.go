package dump

import (
	"fmt"
	"strings"

	"github.com/lazycr/lazycr/files"
	"github.com/lazycr/lazycr/image/pb"
)

// collectFds records every fd of the process: see [files.Dump].
func (cp *Checkpoint) collectFds() (*pb.FdTable, error) {
	// A live thread's /proc when the leader has exited (its files are gone).
	// Established TCP connections: locked from here until Release
	// (resumed) or Kill (held for the restore, closed in repair mode).
	cp.tcp = files.NewTCPDump(cp.opts.Log)
	opts := files.DumpOptions{Log: cp.opts.Log, TCP: cp.tcp, TreeSockets: cp.treeSockets, TreePids: cp.treePids}
	t, err := files.Dump(cp.proc.ProcPid(), opts)
	if err != nil {
		return nil, err
	}
	if cp.opts.Mode == ModeLazy {
		if held := files.HeldLocks(t); len(held) > 0 {
			// The frozen original keeps its locks until the target says
			// DONE, but the target resumes long before: it could not take
			// them (a conflict with the original on one host), and running
			// it without them would let another process in. Exact or
			// refused: a plain dump (-D) moves them.
			return nil, fmt.Errorf("dump pid %d: %w: it holds %d file locks, which a lazy migration cannot hand over (the original holds them until the target is done; a plain dump restores them): %s",
				cp.pid, ErrUnsupported, len(held), strings.Join(held, "; "))
		}
		// A lazy source's lock must outlive a crash of this lazycr: the
		// target may already run on the state read here, and the guard
		// keeps the original stopped, so its sockets must stay silent
		// and their peers' packets away until the migration is over (or
		// rolled back: Release removes it again).
		if err := cp.tcp.Hold(); err != nil {
			return nil, fmt.Errorf("dump pid %d: hold TCP connections: %w", cp.pid, err)
		}
	}
	t.Pid = uint32(cp.pid)
	return t, nil
}
