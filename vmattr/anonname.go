package vmattr

import (
	"fmt"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// The name of an anonymous mapping: prctl(PR_SET_VMA,
// PR_SET_VMA_ANON_NAME, addr, len, name) shows it in maps as
// "[anon:name]", or "[anon_shmem:name]" for shared memory (prctl(2);
// Documentation/filesystems/proc.rst). A kernel built without
// CONFIG_ANON_VMA_NAME refuses it with EINVAL: the restore then fails,
// naming the mapping, rather than dropping the name.
type anonNameAttr struct{}

// maxAnonName is the kernel's ANON_VMA_NAME_MAX_LEN including the NUL.
const maxAnonName = 80

// anonName returns the name given to v, if any.
func anonName(v *pb.Vma) (string, bool) {
	for _, pre := range []string{"[anon:", "[anon_shmem:"} {
		if n, ok := strings.CutPrefix(v.Name, pre); ok && strings.HasSuffix(n, "]") {
			return strings.TrimSuffix(n, "]"), true
		}
	}
	return "", false
}

func (anonNameAttr) check(v *pb.Vma) error {
	n, ok := anonName(v)
	if ok && (len(n) >= maxAnonName || strings.ContainsAny(n, "\\`$[]")) {
		return fmt.Errorf("anonymous mapping name %q cannot be given again", n)
	}
	return nil
}

func (anonNameAttr) apply(c Caller, v *pb.Vma) error {
	n, ok := anonName(v)
	if !ok {
		return nil
	}
	if err := (anonNameAttr{}).check(v); err != nil {
		return err
	}
	_, err := c.CallIn(append([]byte(n), 0), unix.SYS_PRCTL, unix.PR_SET_VMA, unix.PR_SET_VMA_ANON_NAME,
		uintptr(v.Start), uintptr(v.End-v.Start), In)
	if err != nil {
		return fmt.Errorf("injected prctl(PR_SET_VMA_ANON_NAME, %q): %w", n, err)
	}
	return nil
}

func (anonNameAttr) show(v *pb.Vma) string { return "" } // the NAME column shows it
