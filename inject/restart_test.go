package inject

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestIsRestartCode: the kernel-internal restart codes an injected syscall
// can return at its syscall-exit stop are run again; real errors are not.
func TestIsRestartCode(t *testing.T) {
	wrap := func(e unix.Errno) error {
		return fmt.Errorf("pid 1 tid 1: %w", os.NewSyscallError("injected clone3", e))
	}
	for _, e := range []unix.Errno{errRestartSys, errRestartNoIntr, errRestartNoHand, errRestartRestartBlk} {
		if !isRestartCode(wrap(e)) {
			t.Errorf("errno %d is not taken for a restart code", e)
		}
	}
	for _, err := range []error{nil, wrap(unix.EINTR), wrap(unix.EAGAIN), ErrNoProcess} {
		if isRestartCode(err) {
			t.Errorf("%v taken for a restart code", err)
		}
	}
}
