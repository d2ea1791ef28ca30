package procattr

import (
	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// no_new_privs (prctl(2) PR_SET_NO_NEW_PRIVS): execve never grants
// privileges. It belongs to a thread, is inherited by clone and cannot be
// unset: set on the leader before the other threads are created, every
// thread has it, and nothing restore does later needs execve.
type noNewPrivsAttr struct{}

func (noNewPrivsAttr) dump(c Caller, p *pb.Process) error {
	v, err := call(c, "prctl(PR_GET_NO_NEW_PRIVS)", unix.SYS_PRCTL, unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	if err != nil {
		return err
	}
	p.NoNewPrivs = v == 1
	return nil
}

func (noNewPrivsAttr) restore(c Caller, p *pb.Process) error {
	if !p.NoNewPrivs {
		return nil
	}
	_, err := call(c, "prctl(PR_SET_NO_NEW_PRIVS, 1)", unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	return err
}

func (noNewPrivsAttr) show(p *pb.Process) string {
	if p.NoNewPrivs {
		return "no_new_privs"
	}
	return ""
}
