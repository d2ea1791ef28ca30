package dump

import (
	"github.com/lazycr/lazycr/files"
	"github.com/lazycr/lazycr/image/pb"
)

// collectFds records every fd of the process: see [files.Dump].
func (cp *Checkpoint) collectFds() (*pb.FdTable, error) {
	// A live thread's /proc when the leader has exited (its files are gone).
	opts := files.DumpOptions{Log: cp.opts.Log}
	if cp.opts.Mode != ModeLazy {
		// Established TCP connections: locked and in repair mode from
		// here until Release (resumed) or Kill (handed to a restore).
		cp.tcp = files.NewTCPDump(cp.opts.Log)
		opts.TCP = cp.tcp
	}
	t, err := files.Dump(cp.proc.ProcPid(), opts)
	if err != nil {
		return nil, err
	}
	t.Pid = uint32(cp.pid)
	return t, nil
}
