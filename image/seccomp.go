package image

import (
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
)

// Seccomp limits (include/uapi/linux/seccomp.h, include/uapi/linux/filter.h).
const (
	SeccompModeDisabled = 0
	SeccompModeStrict   = 1
	SeccompModeFilter   = 2
	// SeccompInsnSize is sizeof(struct sock_filter).
	SeccompInsnSize = 8
	// SeccompMaxInsns is BPF_MAXINSNS: the kernel refuses longer programs.
	SeccompMaxInsns = 4096
	// SeccompMaxFilters bounds a chain: the kernel caps the chain at
	// MAX_INSNS_PER_PATH (32768) instructions, each filter costing its
	// length plus 4, so no chain holds more than 32768/5 filters.
	SeccompMaxFilters = 32768 / 5
)

// ValidateSeccomp checks a thread's seccomp state: a known mode, filters
// only in filter mode (at least one there), each a whole, non-empty
// sock_filter array the kernel would accept by length.
func ValidateSeccomp(t *pb.Thread) error {
	switch t.SeccompMode {
	case SeccompModeDisabled, SeccompModeStrict:
		if len(t.SeccompFilters) != 0 {
			return fmt.Errorf("%w: tid %d: %d seccomp filters in mode %d", ErrInvalid, t.Tid, len(t.SeccompFilters), t.SeccompMode)
		}
		return nil
	case SeccompModeFilter:
	default:
		return fmt.Errorf("%w: tid %d: unknown seccomp mode %d", ErrInvalid, t.Tid, t.SeccompMode)
	}
	if len(t.SeccompFilters) == 0 || len(t.SeccompFilters) > SeccompMaxFilters {
		return fmt.Errorf("%w: tid %d: %d seccomp filters in filter mode", ErrInvalid, t.Tid, len(t.SeccompFilters))
	}
	for i, f := range t.SeccompFilters {
		n := len(f.Program)
		if n == 0 || n%SeccompInsnSize != 0 || n/SeccompInsnSize > SeccompMaxInsns {
			return fmt.Errorf("%w: tid %d: seccomp filter %d is %d bytes, not 1..%d instructions", ErrInvalid, t.Tid, i, n, SeccompMaxInsns)
		}
	}
	return nil
}
