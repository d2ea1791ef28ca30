package dump

import (
	"errors"
	"fmt"
	"time"

	"github.com/lazycr/lazycr/internal/failpoint"
	"github.com/lazycr/lazycr/proc"
	"github.com/lazycr/lazycr/vmaflags"
	"github.com/rs/zerolog"
)

// How the VMAs' flags were read in the freeze (Stats.VMARead).
const (
	// VMAReadBPF: /proc/PID/maps and a BPF task_vma iterator (package
	// vmaflags); no page table is walked.
	VMAReadBPF = "bpf"
	// VMAReadSmaps: /proc/PID/smaps, which walks every page table.
	VMAReadSmaps = "smaps"
)

// failBPF is the failpoint that makes the dump take the smaps path as if
// the BPF iterator were not available (tests of the fallback). It does not
// start with "dump.": it makes no dump fail.
const failBPF = "vmaflags.bpf"

// preFreeze is what the dump read of the process's VMAs before freezing it,
// while it still ran, so that the freeze need not read smaps:
//
//   - an iterator bound to one of its threads, and the vm_flags bits whose
//     names this kernel's smaps was seen to print as vmaflags does
//     (vmaflags.Verify: exact or not used);
//   - smaps itself, by range: Rss and Swap, how much of each VMA was
//     populated then, for wholeLazy's dense-or-sparse choice (a hint: a
//     VMA seen with another range, or not at all, is scanned), and the
//     flags of the [vsyscall] gate area, which is no VMA of the process
//     (the iterator does not see it) and is set once at boot.
//
// Its cost (the smaps walk, the BTF parse and program load) is outside the
// freeze. With iter nil the freeze reads smaps, and why says why.
type preFreeze struct {
	iter     *vmaflags.Iter // owned
	verified vmaflags.Verified
	smaps    map[span]*proc.Mapping
	why      string
}

// readBeforeFreeze prepares the BPF path for pid (see preFreeze); it never
// fails: what it cannot do leaves the smaps path, with the reason.
func readBeforeFreeze(pid int, log zerolog.Logger) *preFreeze {
	p := &preFreeze{}
	if err := failpoint.Check(failBPF); err != nil {
		p.why = err.Error()
		return p
	}
	tid := liveThread(pid)
	it, err := vmaflags.Open(tid)
	if err != nil {
		p.why = err.Error()
		return p
	}
	before, err := it.Read()
	if err != nil {
		it.Close()
		p.why = err.Error()
		return p
	}
	sm, err := proc.ReadSmaps(pid)
	if err != nil {
		it.Close()
		p.why = err.Error()
		return p
	}
	after, err := it.Read()
	if err != nil {
		it.Close()
		p.why = err.Error()
		return p
	}
	v, bad := vmaflags.Verify(before, after, sm)
	if len(bad) > 0 {
		it.Close()
		p.why = fmt.Sprintf("vm_flags named otherwise than this kernel's smaps (%d vmas), e.g. %s", len(bad), bad[0])
		log.Warn().Int("pid", pid).Str("why", p.why).Msg("vma flags: bpf iterator not used")
		return p
	}
	p.iter, p.verified = it, v
	p.smaps = make(map[span]*proc.Mapping, len(sm))
	for i := range sm {
		p.smaps[span{sm[i].Start, sm[i].End}] = &sm[i]
	}
	return p
}

// liveThread is pid, or the first other thread of it that is not a zombie
// when pid's leader has exited (a zombie leader has no mm to iterate).
func liveThread(pid int) int {
	st, err := proc.ReadStat(pid)
	if err != nil || st.State != 'Z' {
		return pid
	}
	tids, err := proc.Threads(pid)
	if err != nil {
		return pid
	}
	for _, tid := range tids {
		if ts, err := proc.ReadTaskStat(pid, tid); err == nil && ts.State != 'Z' {
			return tid
		}
	}
	return pid
}

func (p *preFreeze) close() {
	if p != nil && p.iter != nil {
		p.iter.Close()
		p.iter = nil
	}
}

// vmaRead is the VMAs as read in the freeze.
type vmaRead struct {
	maps []proc.Mapping // VmFlags and ProtectionKey set; Rss and Swap only from smaps
	// used is how many bytes of each VMA were populated (Rss + Swap), by
	// range, where known: exact from smaps in the freeze, a hint from
	// smaps before it on the BPF path.
	used map[span]uint64
	how  string // VMAReadBPF or VMAReadSmaps
	why  string // why VMAReadSmaps
	took time.Duration
}

// readVMAs reads the VMAs of the frozen process pp: by the BPF path when
// the pre-freeze read prepared it and every VMA's bits are verified,
// else from smaps.
func readVMAs(pp int, pre *preFreeze) (vmaRead, error) {
	t0 := time.Now()
	r, err := readVMAsBPF(pp, pre)
	if err == nil {
		r.how, r.took = VMAReadBPF, time.Since(t0)
		return r, nil
	}
	r = vmaRead{how: VMAReadSmaps, why: err.Error()}
	maps, err := proc.ReadSmaps(pp)
	if err != nil {
		return r, err
	}
	r.maps, r.used = maps, make(map[span]uint64, len(maps))
	for i := range maps {
		m := &maps[i]
		r.used[span{m.Start, m.End}] = (m.Rss + m.Swap) << 10
	}
	r.took = time.Since(t0)
	return r, nil
}

// errNoBPF: the smaps path, for the reason in the wrapping error.
var errNoBPF = errors.New("bpf path not taken")

func readVMAsBPF(pp int, pre *preFreeze) (vmaRead, error) {
	if pre == nil {
		return vmaRead{}, fmt.Errorf("%w: no read before the freeze (a member of the process tree)", errNoBPF)
	}
	if pre.iter == nil {
		return vmaRead{}, fmt.Errorf("%w: %s", errNoBPF, pre.why)
	}
	maps, err := proc.ReadMaps(pp)
	if err != nil {
		return vmaRead{}, err
	}
	vmas, err := pre.iter.Read()
	if err != nil {
		return vmaRead{}, err
	}
	r := vmaRead{maps: maps, used: make(map[span]uint64, len(maps))}
	j := 0
	for i := range maps {
		m := &maps[i]
		k := span{m.Start, m.End}
		if s, ok := pre.smaps[k]; ok {
			r.used[k] = (s.Rss + s.Swap) << 10
		}
		if j < len(vmas) && vmas[j].Start == m.Start {
			v := vmas[j]
			j++
			if v.End != m.End {
				return vmaRead{}, fmt.Errorf("%w: vma %#x-%#x in maps is %#x-%#x to the iterator", errNoBPF, m.Start, m.End, v.Start, v.End)
			}
			if !pre.verified.Covers(v.Flags) {
				return vmaRead{}, fmt.Errorf("%w: vma %#x-%#x %s: vm_flags %#x has bits %#x not verified before the freeze",
					errNoBPF, m.Start, m.End, m.Path, v.Flags, v.Flags&^uint64(pre.verified))
			}
			m.VmFlags, m.ProtectionKey = vmaflags.Mnemonics(v.Flags), vmaflags.ProtectionKey(v.Flags)
			continue
		}
		// The gate area: in maps, no VMA of the process. Its flags are
		// the kernel's, fixed at boot (gate_vma,
		// arch/x86/entry/vsyscall/vsyscall_64.c): smaps before the
		// freeze showed them.
		if s, ok := pre.smaps[k]; ok && m.Path == "[vsyscall]" && s.Path == m.Path {
			m.VmFlags, m.ProtectionKey = s.VmFlags, s.ProtectionKey
			continue
		}
		return vmaRead{}, fmt.Errorf("%w: vma %#x-%#x %s in maps not seen by the iterator", errNoBPF, m.Start, m.End, m.Path)
	}
	if j != len(vmas) {
		return vmaRead{}, fmt.Errorf("%w: the iterator saw vma %#x-%#x that maps does not list", errNoBPF, vmas[j].Start, vmas[j].End)
	}
	return r, nil
}

// flagsAt returns the VmFlags of the VMA holding addr in the frozen
// process pp, by the BPF path when it can, else from smaps.
func flagsAt(pp int, pre *preFreeze, addr uint64) ([]string, error) {
	if pre != nil && pre.iter != nil {
		if vmas, err := pre.iter.Read(); err == nil {
			for _, v := range vmas {
				if v.Start <= addr && addr < v.End && pre.verified.Covers(v.Flags) {
					return vmaflags.Mnemonics(v.Flags), nil
				}
			}
		}
	}
	maps, err := proc.ReadSmaps(pp)
	if err != nil {
		return nil, err
	}
	for _, m := range maps {
		if m.Start <= addr && addr < m.End {
			return m.VmFlags, nil
		}
	}
	return nil, nil
}
