package procattr

import (
	"encoding/binary"
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// The child subreaper flag (prctl(2) PR_SET_CHILD_SUBREAPER): orphaned
// descendants are re-parented to this process instead of init.
type subreaperAttr struct{}

func (subreaperAttr) dump(c Caller, p *pb.Process) error {
	var b [4]byte
	if err := c.CallOut(b[:], unix.SYS_PRCTL, unix.PR_GET_CHILD_SUBREAPER, Out); err != nil {
		return fmt.Errorf("injected prctl(PR_GET_CHILD_SUBREAPER): %w", err)
	}
	p.ChildSubreaper = binary.LittleEndian.Uint32(b[:]) != 0
	return nil
}

func (subreaperAttr) restore(c Caller, p *pb.Process) error {
	if !p.ChildSubreaper {
		return nil
	}
	_, err := call(c, "prctl(PR_SET_CHILD_SUBREAPER, 1)", unix.SYS_PRCTL, unix.PR_SET_CHILD_SUBREAPER, 1)
	return err
}

func (subreaperAttr) show(p *pb.Process) string {
	if p.ChildSubreaper {
		return "child subreaper"
	}
	return ""
}
