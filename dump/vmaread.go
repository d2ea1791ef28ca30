package dump

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lazycr/lazycr/image"
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

// preFreeze is what the dump read of the process tree's VMAs before
// freezing it, while it still ran, so that the freeze need not read smaps:
//
//   - the iterator program (package vmaflags), and the vm_flags bits whose
//     names this kernel's smaps was seen to print as vmaflags does
//     (vmaflags.Verify, over the root and its descendants: exact or not
//     used; the naming is the kernel's, the same for every process);
//   - per process (procs): an iterator bound to one of its threads, and
//     smaps itself by range: Rss and Swap, how much of each VMA was
//     populated then, for wholeLazy's dense-or-sparse choice (a hint: a
//     VMA seen with another range, or not at all, is scanned), and the
//     flags of the [vsyscall] gate area, which is no VMA of the process
//     (the iterator does not see it) and is set once at boot.
//
// Its cost (the BTF parse and program load, the smaps walks) is outside
// the freeze. With prog nil the freeze reads smaps, and why says why.
type preFreeze struct {
	prog     *vmaflags.Program // owned
	verified vmaflags.Verified
	procs    map[int]*prePid // by pid; owned
	why      string
	took     time.Duration // the whole pre-freeze read
}

// prePid is one process of the tree as read before the freeze, or bound
// in it (a member that was not there before: smaps nil).
type prePid struct {
	iter  *vmaflags.Iter // owned, bound to tid
	tid   int
	smaps *preSmaps // nil for a member bound in the freeze
}

// maxPreFreeze bounds how many processes of the tree are read before the
// freeze; the others are bound in it, without density hints.
const maxPreFreeze = 256

// readBeforeFreeze prepares the BPF path for pid and its descendants (see
// preFreeze); it never fails: what it cannot do leaves the smaps path,
// with the reason.
func readBeforeFreeze(pid int, log zerolog.Logger) *preFreeze {
	t0 := time.Now()
	p := &preFreeze{procs: map[int]*prePid{}}
	defer func() { p.took = time.Since(t0) }()
	if err := failpoint.Check(failBPF); err != nil {
		p.why = err.Error()
		return p
	}
	prog, err := vmaflags.Load()
	if err != nil {
		p.why = err.Error()
		return p
	}
	p.prog = prog
	pids := append([]int{pid}, descendants(pid, maxPreFreeze-1)...)
	for i, q := range pids {
		pp, v, bad, err := readOne(prog, q)
		if err != nil {
			if i == 0 {
				p.close()
				p.why = err.Error()
				return p
			}
			continue // a descendant that exited: bound in the freeze if frozen
		}
		p.procs[q] = pp
		if len(bad) > 0 {
			p.close()
			p.why = fmt.Sprintf("vm_flags named otherwise than this kernel's smaps (%d vmas of pid %d), e.g. %s", len(bad), q, bad[0])
			log.Warn().Int("pid", pid).Str("why", p.why).Msg("vma flags: the bpf iterator is not used")
			return p
		}
		p.verified |= v
	}
	log.Debug().Int("pid", pid).Int("processes", len(p.procs)).Dur("took", time.Since(t0)).
		Str("verified", fmt.Sprintf("%#x", uint64(p.verified))).Msg("vma flags prepared before the freeze")
	return p
}

// readOne binds the iterator to a live thread of pid and reads it around
// an smaps read (vmaflags.Verify).
func readOne(prog *vmaflags.Program, pid int) (*prePid, vmaflags.Verified, []vmaflags.Mismatch, error) {
	tid := liveThread(pid)
	it, err := prog.Open(tid)
	if err != nil {
		return nil, 0, nil, err
	}
	before, err := it.Read()
	if err == nil && len(before) == 0 {
		err = fmt.Errorf("read vmas of tid %d: none (the thread exited)", tid)
	}
	var sm []proc.Mapping
	if err == nil {
		sm, err = proc.ReadSmaps(pid)
	}
	var after []vmaflags.VMA
	if err == nil {
		after, err = it.Read()
	}
	if err != nil {
		it.Close()
		return nil, 0, nil, err
	}
	v, bad := vmaflags.Verify(before, after, sm)
	return &prePid{iter: it, tid: tid, smaps: newPreSmaps(sm)}, v, bad, nil
}

// descendants lists pid's descendants (children first, breadth first), at
// most max of them; what cannot be read is left out (a process that exits
// meanwhile).
func descendants(pid, max int) []int {
	var out []int
	queue := []int{pid}
	for len(queue) > 0 && len(out) < max {
		kids, err := proc.Children(queue[0])
		queue = queue[1:]
		if err != nil {
			continue
		}
		for _, k := range kids {
			if len(out) == max {
				break
			}
			out = append(out, k)
			queue = append(queue, k)
		}
	}
	return out
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
	if p == nil {
		return
	}
	for _, pp := range p.procs {
		pp.iter.Close()
	}
	p.procs = nil
	p.prog.Close()
	p.prog = nil
}

// iterFor returns the iterator of process pid bound to its thread tid (the
// one whose /proc the dump reads), binding one now if the pre-freeze read
// has none for that thread, and the process's pre-freeze smaps (nil if
// none).
func (p *preFreeze) iterFor(pid, tid int) (*vmaflags.Iter, *preSmaps, error) {
	pp := p.procs[pid]
	if pp != nil && pp.tid == tid {
		return pp.iter, pp.smaps, nil
	}
	it, err := p.prog.Open(tid)
	if err != nil {
		return nil, nil, err
	}
	if pp != nil {
		pp.iter.Close()
		pp.iter, pp.tid = it, tid
		return it, pp.smaps, nil
	}
	p.procs[pid] = &prePid{iter: it, tid: tid}
	return it, nil, nil
}

// vmaRead is the VMAs as read in the freeze.
type vmaRead struct {
	maps []proc.Mapping // VmFlags and ProtectionKey set; Rss and Swap only from smaps
	// used is how many bytes of each VMA were populated (Rss + Swap), by
	// range, where known: exact from smaps in the freeze, a hint from
	// smaps before it on the BPF path.
	used map[span]uint64
	// policy holds the VMAs that have, or may have, a NUMA memory policy
	// of their own (vmattr/mempolicy.go), by start address: exactly those
	// with vm_policy set on the BPF path; on the smaps path those whose
	// numa_maps policy is not "default" (which shows the thread's policy
	// for a VMA without one), to be asked (vmattr.DumpPolicy).
	policy map[uint64]bool
	how    string // VMAReadBPF or VMAReadSmaps
	why    string // why VMAReadSmaps
	took   time.Duration
}

// readVMAs reads the VMAs of the frozen process pid through /proc/pp (a
// live thread of it): by the BPF path when the pre-freeze read prepared it
// and every VMA's bits are verified, else from smaps.
func readVMAs(pid, pp int, pre *preFreeze) (vmaRead, error) {
	t0 := time.Now()
	r, err := readVMAsBPF(pid, pp, pre)
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
	// numa_maps walks the page tables as smaps does (show_numa_map in
	// mm/mempolicy.c), a second walk on this path: BenchmarkReadVMAs
	// smaps at 1 GiB, 11.4–12.9 cpu-ms per read without it, 25.4–26.3
	// with it (3 runs each, load 5–8; the BPF path is unchanged,
	// 0.05 ms). An injected get_mempolicy per VMA instead would cost
	// 25–100 µs a VMA, whatever the memory. A kernel without CONFIG_NUMA
	// has no such file, and no policies.
	f, err := os.Open(fmt.Sprintf("/proc/%d/numa_maps", pp))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return r, err
	default:
		r.policy, err = parseNumaPolicies(f)
		f.Close()
		if err != nil {
			return r, fmt.Errorf("read /proc/%d/numa_maps: %w", pp, err)
		}
	}
	r.took = time.Since(t0)
	return r, nil
}

// parseNumaPolicies returns the start addresses of the VMAs whose
// numa_maps line (proc(5): "address policy [details]") shows a policy
// other than "default".
// A line is bounded by a path (PATH_MAX) and a count per node; there is
// one line per VMA.
func parseNumaPolicies(r io.Reader) (map[uint64]bool, error) {
	out := map[uint64]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	n := 0
	for sc.Scan() {
		n++
		if n > proc.MaxMappings {
			return nil, fmt.Errorf("more than %d lines", proc.MaxMappings)
		}
		addr, pol, ok := strings.Cut(sc.Text(), " ")
		pol, _, _ = strings.Cut(pol, " ")
		a, err := strconv.ParseUint(addr, 16, 64)
		if !ok || pol == "" || err != nil || a%image.PageSize != 0 {
			return nil, fmt.Errorf("line %d %q: want a page address and a policy", n, sc.Text())
		}
		if pol != "default" {
			out[a] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// vm_flags bits /proc/PID/maps shows as permissions (include/linux/mm.h).
const (
	vmRead     = 1 << 0
	vmWrite    = 1 << 1
	vmExec     = 1 << 2
	vmMayShare = 1 << 7
)

// errNoBPF: the smaps path, for the reason in the wrapping error.
var errNoBPF = errors.New("bpf path not taken")

func readVMAsBPF(pid, pp int, pre *preFreeze) (vmaRead, error) {
	if pre == nil {
		return vmaRead{}, fmt.Errorf("%w: no read before the freeze", errNoBPF)
	}
	if pre.prog == nil {
		return vmaRead{}, fmt.Errorf("%w: %s", errNoBPF, pre.why)
	}
	it, smaps, err := pre.iterFor(pid, pp)
	if err != nil {
		return vmaRead{}, err
	}
	maps, err := proc.ReadMaps(pp)
	if err != nil {
		return vmaRead{}, err
	}
	vmas, err := it.Read()
	if err != nil {
		return vmaRead{}, err
	}
	r := vmaRead{maps: maps, used: make(map[span]uint64, len(maps)), policy: map[uint64]bool{}}
	j := 0
	for i := range maps {
		m := &maps[i]
		k := span{m.Start, m.End}
		if u, ok := smaps.used(m.Start, m.End); ok {
			r.used[k] = u
		}
		if j < len(vmas) && vmas[j].Start == m.Start {
			v := vmas[j]
			j++
			if v.End != m.End {
				return vmaRead{}, fmt.Errorf("%w: vma %#x-%#x in maps is %#x-%#x to the iterator", errNoBPF, m.Start, m.End, v.Start, v.End)
			}
			// maps printed its permissions from the same vm_flags
			// (show_map_vma): VM_READ, VM_WRITE, VM_EXEC, VM_MAYSHARE.
			if m.Read != (v.Flags&vmRead != 0) || m.Write != (v.Flags&vmWrite != 0) ||
				m.Exec != (v.Flags&vmExec != 0) || m.Shared != (v.Flags&vmMayShare != 0) {
				return vmaRead{}, fmt.Errorf("%w: vma %#x-%#x %s: its permissions in maps are not those of vm_flags %#x (changed between the reads)",
					errNoBPF, m.Start, m.End, m.Path, v.Flags)
			}
			if !pre.verified.Covers(v.Flags) {
				return vmaRead{}, fmt.Errorf("%w: vma %#x-%#x %s: vm_flags %#x has bits %#x not verified before the freeze",
					errNoBPF, m.Start, m.End, m.Path, v.Flags, v.Flags&^uint64(pre.verified))
			}
			m.VmFlags, m.ProtectionKey = vmaflags.Mnemonics(v.Flags), vmaflags.ProtectionKey(v.Flags)
			if v.Policy {
				r.policy[m.Start] = true
			}
			continue
		}
		// The gate area: in maps, no VMA of the process. Its flags are
		// the kernel's, fixed at boot (gate_vma,
		// arch/x86/entry/vsyscall/vsyscall_64.c): smaps before the
		// freeze showed them.
		if s, ok := smaps.at(m.Start, m.End); ok && m.Path == "[vsyscall]" && s.Path == m.Path {
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

// preSmaps is one process's smaps as read before the freeze, by range and
// by either end.
type preSmaps struct {
	span       map[span]*proc.Mapping
	start, end map[uint64]*proc.Mapping
}

func newPreSmaps(sm []proc.Mapping) *preSmaps {
	p := &preSmaps{span: make(map[span]*proc.Mapping, len(sm)),
		start: make(map[uint64]*proc.Mapping, len(sm)), end: make(map[uint64]*proc.Mapping, len(sm))}
	for i := range sm {
		m := &sm[i]
		p.span[span{m.Start, m.End}] = m
		p.start[m.Start] = m
		p.end[m.End] = m
	}
	return p
}

// at returns the mapping of exactly [start, end), if any.
func (p *preSmaps) at(start, end uint64) (*proc.Mapping, bool) {
	if p == nil {
		return nil, false
	}
	m, ok := p.span[span{start, end}]
	return m, ok
}

// used is how many bytes of the VMA [start, end) were populated by smaps
// before the freeze (Rss + Swap), for wholeLazy: exactly that VMA's, or,
// when it has grown since at one end (a heap grown by brk, a mapping
// merged with a neighbour), what the part it was then had, a lower bound.
// A VMA that shrank, split or is new has no hint (it is scanned).
func (p *preSmaps) used(start, end uint64) (uint64, bool) {
	if p == nil {
		return 0, false
	}
	if m, ok := p.span[span{start, end}]; ok {
		return (m.Rss + m.Swap) << 10, true
	}
	a, b := p.start[start], p.end[end]
	if a != nil && a.End > end {
		a = nil
	}
	if b != nil && b.Start < start {
		b = nil
	}
	switch {
	case a != nil && b != nil:
		return (a.Rss + a.Swap + b.Rss + b.Swap) << 10, true // grown in the middle: both parts
	case a != nil:
		return (a.Rss + a.Swap) << 10, true
	case b != nil:
		return (b.Rss + b.Swap) << 10, true
	}
	return 0, false
}

// flagsAt returns the VmFlags of the VMA holding addr in the frozen
// process pid (/proc/pp), by the BPF path when it can, else from smaps.
func flagsAt(pid, pp int, pre *preFreeze, addr uint64) ([]string, error) {
	if pre != nil && pre.prog != nil {
		it, _, err := pre.iterFor(pid, pp)
		var vmas []vmaflags.VMA
		if err == nil {
			vmas, err = it.Read()
		}
		if err == nil {
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
