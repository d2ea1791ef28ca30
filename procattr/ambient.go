package procattr

import "fmt"

// SecbitNoCapAmbientRaise is SECBIT_NO_CAP_AMBIENT_RAISE
// (include/uapi/linux/securebits.h): prctl(PR_CAP_AMBIENT_RAISE) fails
// while it is set (capabilities(7), "The securebits flags").
const SecbitNoCapAmbientRaise = 1 << 6

// AmbientRefused refuses ambient capabilities that come with
// SECBIT_NO_CAP_AMBIENT_RAISE: restore raises ambient capabilities with
// prctl(PR_CAP_AMBIENT_RAISE), which the bit forbids, and sets the
// securebits with PR_SET_SECUREBITS, which needs CAP_SETPCAP, before the
// capabilities are set. No target can restore them, so the dump refuses
// (with the process's ambient set, while the original still runs); the
// restore checks again with the set it would give (an image from an older
// dump).
func AmbientRefused(pid uint32, ambient uint64, securebits uint32) error {
	if securebits&SecbitNoCapAmbientRaise != 0 && ambient != 0 {
		return fmt.Errorf("pid %d had ambient capabilities %#x and SECBIT_NO_CAP_AMBIENT_RAISE (securebits %#x): restore cannot raise them with the bit set, nor set the bit once its CAP_SETPCAP is gone", pid, ambient, securebits)
	}
	return nil
}
