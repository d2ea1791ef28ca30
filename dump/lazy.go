package dump

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
)

// LazySpace is the lazy memory of one process of a lazy dump: its pid in
// the image and the runs of pages left out of the image for the page
// server, in address order.
type LazySpace struct {
	PID  uint32
	Runs []*pb.PageRun
}

// LazySpaces lists the lazy memory of every live process of the dump (the
// root and each tree member, zombies have none), by ascending pid: the
// page server serves them all in one session, process k of the list being
// space k (see package pageserver). A process without lazy pages is listed
// too, with no runs.
func (cp *Checkpoint) LazySpaces() []LazySpace {
	var out []LazySpace
	for _, p := range cp.Set.Tree.Processes {
		if p.Zombie {
			continue
		}
		sp := LazySpace{PID: p.Pid}
		if mm := cp.Set.Memory[p.Pid]; mm != nil {
			for _, v := range mm.Vmas {
				for _, r := range v.Pages {
					if r.State == pb.PageState_PAGE_STATE_LAZY {
						sp.Runs = append(sp.Runs, r)
					}
				}
			}
		}
		out = append(out, sp)
	}
	slices.SortFunc(out, func(a, b LazySpace) int { return cmp.Compare(a.PID, b.PID) })
	return out
}

// ReadProcessMemory reads the frozen memory of process pid of the dump
// (the root or a live tree member) for the page server.
func (cp *Checkpoint) ReadProcessMemory(pid uint32, addr uint64, b []byte) error {
	m := cp.member(pid)
	if m == cp && uint32(cp.pid) != pid {
		return fmt.Errorf("read memory of pid %d: not a process of the dump of pid %d", pid, cp.pid)
	}
	if m.proc == nil {
		return fmt.Errorf("read memory of pid %d: it is a zombie", pid)
	}
	return m.proc.ReadMem(uintptr(addr), b)
}

// ProcessGone reports whether process pid of the dump no longer exists as
// the process that was dumped: /proc/PID gone, a zombie, or its pid taken
// by a new process (another start time). Its memory, which a failed read
// could not give, is then lost for good.
func (cp *Checkpoint) ProcessGone(pid uint32) bool {
	m := cp.member(pid)
	if m == cp && uint32(cp.pid) != pid {
		return false
	}
	st, err := proc.ReadStat(m.pid)
	return err != nil || st.State == 'Z' || st.State == 'X' || st.StartTime != m.startTime
}

// AbsentRuns lists the parts of runs (lazy runs of process pid of the
// dump, in address order) that hold no data (proc.ScanAbsent): they read
// as zeros, so the page server need not read or send them
// (pageserver.ServerConfig.Absent). A lazy dump makes a whole private
// anonymous VMA one lazy run without scanning it while frozen (wholeLazy);
// this is the scan, done after the resume.
func (cp *Checkpoint) AbsentRuns(pid uint32, runs []*pb.PageRun) ([]proc.Range, error) {
	m := cp.member(pid)
	if m == cp && uint32(cp.pid) != pid {
		return nil, fmt.Errorf("scan memory of pid %d: not a process of the dump of pid %d", pid, cp.pid)
	}
	if m.proc == nil || len(runs) == 0 {
		return nil, nil
	}
	pm, err := proc.OpenPagemap(m.proc.ProcPid())
	if err != nil {
		return nil, fmt.Errorf("scan memory of pid %d: %w", pid, err)
	}
	defer pm.Close()
	var out []proc.Range
	for _, r := range runs {
		rs, err := proc.ScanAbsent(pm, r.Addr, r.Addr+r.Npages*image.PageSize)
		if err != nil {
			return nil, fmt.Errorf("scan memory of pid %d: %w", pid, err)
		}
		out = append(out, rs...)
	}
	return out, nil
}
