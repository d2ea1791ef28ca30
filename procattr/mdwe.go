package procattr

import (
	"errors"
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// Memory-deny-write-execute (prctl(2) PR_SET_MDWE, Linux 6.3; systemd's
// MemoryDenyWriteExecute= uses it where the kernel has it): mmap(2) and
// mprotect(2) refuse memory that is or was writable and would become
// executable. It belongs to the address space, is inherited across fork
// unless PR_MDWE_NO_INHERIT, and cannot be unset: lost, the restored
// process could make writable memory executable again, a hardening
// silently dropped. So it is set last ([RestoreLast]), once everything
// restore maps is in place, like the credentials it comes after.
type mdweAttr struct{}

func (mdweAttr) dump(c Caller, p *pb.Process) error {
	v, err := c.Call(unix.SYS_PRCTL, unix.PR_GET_MDWE, 0, 0, 0, 0)
	if errors.Is(err, unix.EINVAL) {
		return nil // a kernel before 6.3: no such attribute
	}
	if err != nil {
		return fmt.Errorf("injected prctl(PR_GET_MDWE): %w", err)
	}
	p.Mdwe = uint32(v)
	return nil
}

// restore does nothing: RestoreLast sets it.
func (mdweAttr) restore(Caller, *pb.Process) error { return nil }

func (mdweAttr) show(p *pb.Process) string {
	if p.Mdwe == 0 {
		return ""
	}
	s := "memory-deny-write-execute"
	if p.Mdwe&unix.PR_MDWE_NO_INHERIT != 0 {
		s += " (not inherited)"
	}
	return s
}

// RestoreLast sets what must come after everything else restore does in
// the process, its credentials included: the link to the user keyring of
// a new session keyring (linkUserKeyring), then memory-deny-write-execute,
// which would refuse restore's own mappings.
func RestoreLast(c Caller, p *pb.Process) error {
	if err := linkUserKeyring(c, p); err != nil {
		return err
	}
	if p.Mdwe == 0 {
		return nil
	}
	_, err := call(c, fmt.Sprintf("prctl(PR_SET_MDWE, %#x)", p.Mdwe), unix.SYS_PRCTL, unix.PR_SET_MDWE, uintptr(p.Mdwe), 0, 0, 0)
	return err
}
