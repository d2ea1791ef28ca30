package procattr

import (
	"encoding/binary"
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// The parent-death signal (prctl(2) PR_SET_PDEATHSIG). It belongs to a
// thread and a clone does not inherit it: the leader's is dumped and
// restored.
type pdeathsigAttr struct{}

func (pdeathsigAttr) dump(c Caller, p *pb.Process) error {
	var b [4]byte
	if err := c.CallOut(b[:], unix.SYS_PRCTL, unix.PR_GET_PDEATHSIG, Out); err != nil {
		return fmt.Errorf("injected prctl(PR_GET_PDEATHSIG): %w", err)
	}
	p.Pdeathsig = binary.LittleEndian.Uint32(b[:])
	return nil
}

func (pdeathsigAttr) restore(c Caller, p *pb.Process) error {
	if p.Pdeathsig == 0 {
		return nil
	}
	_, err := call(c, fmt.Sprintf("prctl(PR_SET_PDEATHSIG, %d)", p.Pdeathsig), unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(p.Pdeathsig))
	return err
}

func (pdeathsigAttr) show(p *pb.Process) string {
	if p.Pdeathsig == 0 {
		return ""
	}
	return "parent-death signal " + unix.SignalName(unix.Signal(p.Pdeathsig))
}
