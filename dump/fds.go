package dump

import (
	"github.com/lazycr/lazycr/files"
	"github.com/lazycr/lazycr/image/pb"
)

// collectFds records every fd of the process: see [files.Dump].
func (cp *Checkpoint) collectFds() (*pb.FdTable, error) {
	return files.Dump(cp.pid, files.DumpOptions{Log: cp.opts.Log})
}
