package dump

import (
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
)

// recordSession adds what /proc/PID/status says of pid's process group and
// session in each PID namespace (NSpgid, NSsid; proc(5)): a restore into a
// fresh PID namespace needs the process's own view.
func recordSession(pid int, p *pb.Process) error {
	st, err := proc.ReadStatus(pid)
	if err != nil {
		return fmt.Errorf("dump pid %d: read status: %w", pid, err)
	}
	p.NsPgid, p.NsSid = u32s(st.NSpgid), u32s(st.NSsid)
	return nil
}
