package dump

import (
	"github.com/lazycr/lazycr/files"
	"github.com/lazycr/lazycr/image/pb"
)

// collectFds records every fd of the process: see [files.Dump].
func (cp *Checkpoint) collectFds() (*pb.FdTable, error) {
	// A live thread's /proc when the leader has exited (its files are gone).
	t, err := files.Dump(cp.proc.ProcPid(), files.DumpOptions{Log: cp.opts.Log})
	if err != nil {
		return nil, err
	}
	t.Pid = uint32(cp.pid)
	return t, nil
}
