package procattr

import (
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// The dumpable mode (prctl(2) PR_SET_DUMPABLE): whether the process may be
// core-dumped and ptraced by its own user, and who owns its /proc files.
// prctl sets only 0 and 1; 2 (SUID_DUMP_ROOT) is what the kernel sets on
// a credential change when fs.suid_dumpable is 2 — and any credential
// change resets the mode to fs.suid_dumpable (commit_creds), so
// [AfterCreds] checks it once the credentials are set.
type dumpableAttr struct{}

func (dumpableAttr) dump(c Caller, p *pb.Process) error {
	v, err := call(c, "prctl(PR_GET_DUMPABLE)", unix.SYS_PRCTL, unix.PR_GET_DUMPABLE)
	if err != nil {
		return err
	}
	p.Dumpable = uint32(v)
	return nil
}

func (dumpableAttr) restore(c Caller, p *pb.Process) error {
	if p.Dumpable > 1 {
		return nil // only a credential change sets it: AfterCreds checks
	}
	_, err := call(c, fmt.Sprintf("prctl(PR_SET_DUMPABLE, %d)", p.Dumpable), unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, uintptr(p.Dumpable))
	return err
}

func (dumpableAttr) show(p *pb.Process) string {
	if p.Dumpable == 1 {
		return ""
	}
	return fmt.Sprintf("dumpable %d", p.Dumpable)
}

// AfterCreds makes the dumpable mode the dumped one once the credentials
// are set, or refuses: a mode prctl cannot set that the credential change
// did not bring is not approximated.
func AfterCreds(c Caller, p *pb.Process) error {
	cur, err := call(c, "prctl(PR_GET_DUMPABLE)", unix.SYS_PRCTL, unix.PR_GET_DUMPABLE)
	if err != nil {
		return err
	}
	switch {
	case uint32(cur) == p.Dumpable:
		return nil
	case p.Dumpable > 1:
		return fmt.Errorf("dumpable mode %d: prctl(PR_SET_DUMPABLE) cannot set it and setting the credentials gave %d (fs.suid_dumpable differs here)", p.Dumpable, cur)
	}
	return dumpableAttr{}.restore(c, p)
}
