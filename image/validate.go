package image

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
)

// Validate checks that the set is complete and agrees with itself: every
// process has a memory map and an fd table; VMAs are page-aligned, sorted and
// non-overlapping; each VMA's page runs tile it exactly; eager runs lie inside
// the pages file and their sizes add up to it.
func (s *Set) Validate() error {
	if s.Inventory == nil || s.Tree == nil {
		return fmt.Errorf("%w: missing inventory or process tree", ErrInvalid)
	}
	if s.Inventory.FormatVersion > FormatVersion {
		return fmt.Errorf("%s: %w: version %d", InventoryFile, ErrNewerVersion, s.Inventory.FormatVersion)
	}
	if len(s.Tree.Processes) == 0 {
		return fmt.Errorf("%s: %w: no process", TreeFile, ErrInvalid)
	}
	seen := map[uint32]bool{}
	for _, p := range s.Tree.Processes {
		if p.Pid == 0 {
			return fmt.Errorf("%s: %w: process with pid 0", TreeFile, ErrInvalid)
		}
		if seen[p.Pid] {
			return fmt.Errorf("%s: %w: pid %d listed twice", TreeFile, ErrInvalid, p.Pid)
		}
		seen[p.Pid] = true
		if len(p.Threads) == 0 {
			return fmt.Errorf("%s: %w: pid %d has no thread", TreeFile, ErrInvalid, p.Pid)
		}
		for _, t := range p.Threads {
			if t.Regs == nil {
				return fmt.Errorf("%s: %w: tid %d has no registers", TreeFile, ErrInvalid, t.Tid)
			}
			if err := ValidateSeccomp(t); err != nil {
				return fmt.Errorf("%s: %w", TreeFile, err)
			}
		}
		mm := s.Memory[p.Pid]
		if mm == nil {
			return fmt.Errorf("%s: %w: missing", MemoryFile(p.Pid), ErrInvalid)
		}
		if err := ValidateMemory(mm); err != nil {
			return fmt.Errorf("%s: %w", MemoryFile(p.Pid), err)
		}
		fds := s.Fds[p.Pid]
		if fds == nil {
			return fmt.Errorf("%s: %w: missing", FdsFile(p.Pid), ErrInvalid)
		}
		if err := validateFds(fds); err != nil {
			return fmt.Errorf("%s: %w", FdsFile(p.Pid), err)
		}
	}
	return s.validateTree()
}

// ValidateMemory checks one memory map on its own (see Set.Validate).
func ValidateMemory(mm *pb.MemoryMap) error {
	var prevEnd uint64
	var eager uint64
	type span struct{ off, end uint64 }
	var spans []span
	for i, v := range mm.Vmas {
		if v.Start%PageSize != 0 || v.End%PageSize != 0 || v.End <= v.Start {
			return fmt.Errorf("%w: vma %#x-%#x is not a page-aligned range", ErrInvalid, v.Start, v.End)
		}
		if i > 0 && v.Start < prevEnd {
			return fmt.Errorf("%w: vma %#x-%#x overlaps the one before (ending %#x)", ErrInvalid, v.Start, v.End, prevEnd)
		}
		prevEnd = v.End
		addr := v.Start
		for _, r := range v.Pages {
			if r.Addr != addr {
				return fmt.Errorf("%w: vma %#x-%#x: page run at %#x, expected %#x", ErrInvalid, v.Start, v.End, r.Addr, addr)
			}
			if r.Npages == 0 || r.Npages > (v.End-addr)/PageSize {
				return fmt.Errorf("%w: vma %#x-%#x: page run at %#x of %d pages does not fit", ErrInvalid, v.Start, v.End, r.Addr, r.Npages)
			}
			switch r.State {
			case pb.PageState_PAGE_STATE_ZERO, pb.PageState_PAGE_STATE_LAZY, pb.PageState_PAGE_STATE_FILE, pb.PageState_PAGE_STATE_GUARD:
			case pb.PageState_PAGE_STATE_EAGER:
				n := r.Npages * PageSize
				if r.Offset%PageSize != 0 || r.Offset+n < r.Offset || r.Offset+n > mm.PagesBytes {
					return fmt.Errorf("%w: vma %#x-%#x: eager run at %#x (offset %d, %d bytes) lies outside the %d page bytes", ErrInvalid, v.Start, v.End, r.Addr, r.Offset, n, mm.PagesBytes)
				}
				eager += n
				spans = append(spans, span{r.Offset, r.Offset + n})
			default:
				return fmt.Errorf("%w: vma %#x-%#x: page run at %#x has unknown state %d", ErrInvalid, v.Start, v.End, r.Addr, r.State)
			}
			addr += r.Npages * PageSize
		}
		if len(v.Pages) > 0 && addr != v.End {
			return fmt.Errorf("%w: vma %#x-%#x: page runs end at %#x", ErrInvalid, v.Start, v.End, addr)
		}
	}
	if eager != mm.PagesBytes {
		return fmt.Errorf("%w: eager runs hold %d bytes, pages file %d", ErrInvalid, eager, mm.PagesBytes)
	}
	// Eager runs must not share page-file bytes.
	sort.Slice(spans, func(i, j int) bool { return spans[i].off < spans[j].off })
	for i := 1; i < len(spans); i++ {
		if spans[i].off < spans[i-1].end {
			return fmt.Errorf("%w: eager runs overlap in the pages file at offset %d", ErrInvalid, spans[i].off)
		}
	}
	return nil
}

func validateFds(t *pb.FdTable) error {
	prev := int32(-1)
	for _, f := range t.Fds {
		if f.Fd < 0 || f.Fd <= prev {
			return fmt.Errorf("%w: fd %d out of order or negative", ErrInvalid, f.Fd)
		}
		prev = f.Fd
		if f.Kind == nil {
			return fmt.Errorf("%w: fd %d has no kind", ErrInvalid, f.Fd)
		}
	}
	return nil
}

// PageCounts counts a VMA's pages by state.
type PageCounts struct {
	Zero, Eager, Lazy, File uint64
	Guard                   uint64 // guard pages (MADV_GUARD_INSTALL): no data
}

// Total is the number of pages counted.
func (c PageCounts) Total() uint64 { return c.Zero + c.Eager + c.Lazy + c.File + c.Guard }

// Populated is the number of pages that held data (everything but zero).
func (c PageCounts) Populated() uint64 { return c.Eager + c.Lazy + c.File }

// Add returns the sum of c and d.
func (c PageCounts) Add(d PageCounts) PageCounts {
	return PageCounts{c.Zero + d.Zero, c.Eager + d.Eager, c.Lazy + d.Lazy, c.File + d.File, c.Guard + d.Guard}
}

// CountPages counts v's pages by state. Pages no run covers count as zero.
func CountPages(v *pb.Vma) PageCounts {
	var c PageCounts
	var covered uint64
	for _, r := range v.Pages {
		covered += r.Npages
		switch r.State {
		case pb.PageState_PAGE_STATE_EAGER:
			c.Eager += r.Npages
		case pb.PageState_PAGE_STATE_LAZY:
			c.Lazy += r.Npages
		case pb.PageState_PAGE_STATE_FILE:
			c.File += r.Npages
		case pb.PageState_PAGE_STATE_GUARD:
			c.Guard += r.Npages
		default:
			c.Zero += r.Npages
		}
	}
	if total := (v.End - v.Start) / PageSize; total > covered {
		c.Zero += total - covered
	}
	return c
}

// ErrLazySkeleton: the image set is the skeleton of a post-copy dump
// (`dump --lazy`): the data of its lazy pages was never written, it lives
// only in the frozen source process and comes from its page server.
var ErrLazySkeleton = errors.New("image set is a lazy skeleton without the data of its lazy pages")

// maxNamedRuns bounds how many VMAs and runs CheckComplete names.
const maxNamedRuns = 8

// CheckComplete refuses a set whose memory is not all in the set itself:
// a page run in the lazy state has no data here (only a page server can
// provide it), and a restore from the directory would give the process
// zero pages where its data was. The error names the VMAs and runs.
func (s *Set) CheckComplete() error {
	var pages, vmas uint64
	var named []string
	for _, p := range s.Tree.GetProcesses() {
		mm := s.Memory[p.Pid]
		for _, v := range mm.GetVmas() {
			var runs []string
			var n uint64
			for _, r := range v.Pages {
				if r.State != pb.PageState_PAGE_STATE_LAZY {
					continue
				}
				n += r.Npages
				if len(runs) < maxNamedRuns {
					runs = append(runs, fmt.Sprintf("%#x+%d", r.Addr, r.Npages))
				}
			}
			if n == 0 {
				continue
			}
			vmas++
			pages += n
			if len(named) < maxNamedRuns {
				name := v.Name
				if name == "" {
					name = "anonymous"
				}
				more := ""
				if k := countLazyRuns(v) - len(runs); k > 0 {
					more = fmt.Sprintf(" and %d more runs", k)
				}
				named = append(named, fmt.Sprintf("pid %d vma %#x-%#x (%s): %d pages in runs %s%s",
					p.Pid, v.Start, v.End, name, n, strings.Join(runs, ", "), more))
			}
		}
	}
	if pages == 0 {
		return nil
	}
	if k := vmas - uint64(len(named)); k > 0 {
		named = append(named, fmt.Sprintf("%d more VMAs", k))
	}
	hint := ""
	if s.Inventory.GetLazy() {
		hint = " (written by dump --lazy)"
	}
	return fmt.Errorf("%w%s: %d pages in %d VMAs are missing: %s; restore it with restore --lazy-from HOST:PORT from the source that serves it",
		ErrLazySkeleton, hint, pages, vmas, strings.Join(named, "; "))
}

func countLazyRuns(v *pb.Vma) int {
	n := 0
	for _, r := range v.Pages {
		if r.State == pb.PageState_PAGE_STATE_LAZY {
			n++
		}
	}
	return n
}
