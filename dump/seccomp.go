package dump

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
)

// Seccomp actions (include/uapi/linux/seccomp.h) and classic BPF opcode
// fields (include/uapi/linux/bpf_common.h).
const (
	seccompRetActionFull = 0xffff0000
	seccompRetUserNotif  = 0x7fc00000
	bpfClassMask         = 0x07
	bpfRet               = 0x06
	bpfRvalMask          = 0x18
	bpfK                 = 0x00
	bpfA                 = 0x10
)

// errSeccompDynamicRet marks a filter whose return value is computed (BPF_RET
// with the accumulator): its possible actions cannot be read off the program.
var errSeccompDynamicRet = errors.New("returns a computed action (BPF_RET|BPF_A)")

// seccompActions lists the actions (SECCOMP_RET_ACTION_FULL bits) a seccomp
// filter program can return, in program order, one per return instruction.
// prog is a struct sock_filter array: u16 code, u8 jt, u8 jf, u32 k.
func seccompActions(prog []byte) ([]uint32, error) {
	if len(prog) == 0 || len(prog)%image.SeccompInsnSize != 0 {
		return nil, fmt.Errorf("seccomp program of %d bytes is not whole instructions", len(prog))
	}
	var out []uint32
	for i := 0; i < len(prog); i += image.SeccompInsnSize {
		code := binary.LittleEndian.Uint16(prog[i:])
		if code&bpfClassMask != bpfRet {
			continue
		}
		switch code & bpfRvalMask {
		case bpfK:
			out = append(out, binary.LittleEndian.Uint32(prog[i+4:])&seccompRetActionFull)
		case bpfA:
			return nil, fmt.Errorf("instruction %d: %w", i/image.SeccompInsnSize, errSeccompDynamicRet)
		default:
			return nil, fmt.Errorf("instruction %d: return code %#x is not one seccomp accepts", i/image.SeccompInsnSize, code)
		}
	}
	return out, nil
}

// collectSeccomp records thread tid's seccomp state, mode and filters as
// /proc/PID/task/TID/status reported them (proc(5) "Seccomp",
// "Seccomp_filters"). The filters are read with PTRACE_SECCOMP_GET_FILTER;
// the dump's own injected syscalls run with the filters suspended
// (inject.Process.SuspendSeccomp).
//
// Refused, naming why: a filter that can return SECCOMP_RET_USER_NOTIF,
// whose listener fd (held by a supervisor, maybe in another process) a
// restore cannot reconnect; a filter that computes its return value is
// refused too, since it may.
func (cp *Checkpoint) collectSeccomp(tid int, t *pb.Thread, mode, count int) error {
	pid := cp.pid
	switch mode {
	case image.SeccompModeDisabled:
		return nil
	case image.SeccompModeStrict:
		// Strict mode has no filters; restore sets it on the thread.
		t.SeccompMode = image.SeccompModeStrict
		return nil
	case image.SeccompModeFilter:
	default:
		return fmt.Errorf("dump pid %d tid %d: %w: seccomp mode %d", pid, tid, ErrUnsupported, mode)
	}
	fs, err := cp.proc.SeccompFilters(tid)
	if err != nil {
		return fmt.Errorf("dump pid %d tid %d: %w", pid, tid, err)
	}
	if len(fs) != count || len(fs) == 0 {
		return fmt.Errorf("dump pid %d tid %d: read %d seccomp filters, /proc says %d", pid, tid, len(fs), count)
	}
	t.SeccompMode = image.SeccompModeFilter
	for i, f := range fs {
		acts, err := seccompActions(f.Program)
		if err != nil {
			return fmt.Errorf("dump pid %d tid %d: %w: seccomp filter %d of %d: %w", pid, tid, ErrUnsupported, i+1, len(fs), err)
		}
		for _, a := range acts {
			if a == seccompRetUserNotif {
				return fmt.Errorf("dump pid %d tid %d: %w: seccomp filter %d of %d returns SECCOMP_RET_USER_NOTIF (its listener cannot be restored)", pid, tid, ErrUnsupported, i+1, len(fs))
			}
		}
		pf := &pb.SeccompFilter{Program: f.Program}
		if f.Log {
			pf.Flags = seccompFilterFlagLog
		}
		t.SeccompFilters = append(t.SeccompFilters, pf)
	}
	return nil
}

// seccompFilterFlagLog is SECCOMP_FILTER_FLAG_LOG (linux/seccomp.h).
const seccompFilterFlagLog = 1 << 1
