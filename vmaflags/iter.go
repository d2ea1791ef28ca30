package vmaflags

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/lazycr/lazycr/internal/kabi"
)

// ErrNotSupported: the iterator cannot run here (no kernel BTF, no
// task_vma iterator or per-thread iterator links, not permitted, or the
// verifier refused the program). Wrapped with the reason.
var ErrNotSupported = errors.New("bpf task_vma iterator not supported")

// VMA is one mapping as the iterator saw it.
type VMA struct {
	Start, End uint64
	Flags      uint64 // vm_flags, raw
	// Policy: the VMA has a NUMA memory policy of its own (vm_policy is
	// set: mbind(2), or inherited from the VMA it was split or copied
	// from); never on a kernel without CONFIG_NUMA.
	Policy bool
}

// recordSize is the size of one record the program writes (package doc).
const recordSize = 32

// MaxVMAs bounds what Read accepts: vm.max_map_count defaults to 65530
// (proc.MaxMappings is the same bound for /proc/PID/maps).
const MaxVMAs = 1 << 20

// Program is the loaded iterator program; Open binds it to a thread.
// Loading costs the BTF parse and the verifier (about 100 ms the first time
// in a process here, 20 ms after); binding and reading cost what the VMAs
// are, no page table is walked.
type Program struct {
	prog *ebpf.Program // owned
}

// Load loads the iterator program.
func Load() (*Program, error) {
	spec, err := programSpec()
	if err != nil {
		return nil, fmt.Errorf("load vma iterator: %w: %w", ErrNotSupported, err)
	}
	prog, err := ebpf.NewProgramWithOptions(spec, ebpf.ProgramOptions{})
	if err != nil {
		return nil, fmt.Errorf("load vma iterator: %w: %w", ErrNotSupported, err)
	}
	return &Program{prog: prog}, nil
}

// Close releases the program; Iters opened from it keep working until
// they are closed (the link holds the program).
func (p *Program) Close() error {
	if p == nil || p.prog == nil {
		return nil
	}
	err := p.prog.Close()
	p.prog = nil
	return err
}

// Iter reads the VMAs of one thread's address space: each Read runs the
// iterator once.
type Iter struct {
	tid  int
	link *os.File // owned: the BPF link fd
}

// Open binds the program to thread tid (a thread of the process in the
// caller's pid namespace). The thread is not looked up here but on each
// Read (task_seq_get_next in kernel/bpf/task_iter.c): a thread that does
// not exist, or no longer does, has no VMAs.
func (p *Program) Open(tid int) (*Iter, error) {
	if p == nil || p.prog == nil {
		return nil, fmt.Errorf("open vma iterator for tid %d: %w", tid, os.ErrClosed)
	}
	fd, err := kabi.BpfLinkIterTask(p.prog.FD(), tid)
	if err != nil {
		// EINVAL: a kernel without bpf_iter_link_info.task (< 6.1).
		return nil, fmt.Errorf("open vma iterator for tid %d: %w: %w", tid, ErrNotSupported, err)
	}
	return &Iter{tid: tid, link: os.NewFile(uintptr(fd), "bpf-link")}, nil
}

// Close releases the link.
func (it *Iter) Close() error {
	if it == nil || it.link == nil {
		return nil
	}
	err := it.link.Close()
	it.link = nil
	return err
}

// Read runs the iterator once and returns the thread's VMAs in address
// order. The task_vma iterator holds mmap_lock for reading while it
// visits, drops it between seq_file reads when a writer waits and then
// resumes after the last VMA it showed (task_vma_seq_get_next): a VMA that
// changes meanwhile may be seen in either state, as with smaps.
func (it *Iter) Read() ([]VMA, error) {
	if it == nil || it.link == nil {
		return nil, fmt.Errorf("read vmas of tid %d: %w", it.tidOrZero(), os.ErrClosed)
	}
	fd, err := kabi.BpfIterNew(int(it.link.Fd()))
	if err != nil {
		return nil, fmt.Errorf("read vmas of tid %d: %w", it.tid, err)
	}
	f := os.NewFile(uintptr(fd), "bpf-iter")
	defer f.Close()
	b, err := readAll(f)
	if err != nil {
		return nil, fmt.Errorf("read vmas of tid %d: %w", it.tid, err)
	}
	vmas, err := ParseRecords(b)
	if err != nil {
		return nil, fmt.Errorf("read vmas of tid %d: %w", it.tid, err)
	}
	return vmas, nil
}

func (it *Iter) tidOrZero() int {
	if it == nil {
		return 0
	}
	return it.tid
}

// readAll reads f until its end or until the iterator starts over, at
// most MaxVMAs records.
//
// Starting over: on this kernel (6.18) a task_vma iterator limited to one
// thread whose output spans several read(2) calls (more than a seq_file
// buffer, 8 pages: about 1,365 VMAs) does not end after the thread's last
// VMA but visits the thread again from an earlier VMA on every further
// read, without end. Measured with 40,023 VMAs: the first pass complete
// and in address order, then the same tail of 438 VMAs on each read. A
// record that starts below the previous one's end is therefore the end of
// the pass. The pass is not trusted on that alone: the dump compares it
// with /proc/PID/maps read in the same freeze, VMA by VMA, and Verify uses
// only VMAs seen the same in two reads.
func readAll(f *os.File) ([]byte, error) {
	buf := make([]byte, 0, 64<<10)
	checked := 0 // bytes of whole records checked for order
	var prevEnd uint64
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= MaxVMAs*recordSize {
				return nil, fmt.Errorf("more than %d vmas", MaxVMAs)
			}
			buf = append(buf, make([]byte, len(buf))...)[:len(buf)]
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		for ; checked+recordSize <= len(buf); checked += recordSize {
			start := binary.NativeEndian.Uint64(buf[checked:])
			if checked > 0 && start < prevEnd {
				return buf[:checked], nil // the iterator started over
			}
			prevEnd = binary.NativeEndian.Uint64(buf[checked+8:])
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// ParseRecords decodes the program's output (package doc): whole records,
// each a non-empty page-aligned range after the previous one.
func ParseRecords(b []byte) ([]VMA, error) {
	if len(b)%recordSize != 0 {
		return nil, fmt.Errorf("parse vma records: %d bytes is not a whole number of %d-byte records", len(b), recordSize)
	}
	n := len(b) / recordSize
	if n > MaxVMAs {
		return nil, fmt.Errorf("parse vma records: more than %d vmas", MaxVMAs)
	}
	out := make([]VMA, 0, n)
	var prevEnd uint64
	for i := range n {
		r := b[i*recordSize:]
		v := VMA{
			Start: binary.NativeEndian.Uint64(r),
			End:   binary.NativeEndian.Uint64(r[8:]),
			Flags: binary.NativeEndian.Uint64(r[16:]),
		}
		if v.End <= v.Start || v.Start%pageSize != 0 || v.End%pageSize != 0 || v.Start < prevEnd {
			return nil, fmt.Errorf("parse vma records: record %d: range %#x-%#x after %#x", i, v.Start, v.End, prevEnd)
		}
		switch binary.NativeEndian.Uint64(r[24:]) {
		case 0:
		case 1:
			v.Policy = true
		default:
			return nil, fmt.Errorf("parse vma records: record %d: policy word %#x, want 0 or 1", i, binary.NativeEndian.Uint64(r[24:]))
		}
		prevEnd = v.End
		out = append(out, v)
	}
	return out, nil
}

const pageSize = 4096

// The program spec is built from the kernel's BTF once per process (the
// spec keeps only the offsets; cilium/ebpf looks AttachTo up in the
// kernel's BTF again at each load).
var (
	specOnce sync.Once
	spec     *ebpf.ProgramSpec
	specErr  error
)

// programSpec builds the iterator program with the field offsets of this
// kernel's vm_area_struct, bpf_iter__task_vma and bpf_iter_meta.
func programSpec() (*ebpf.ProgramSpec, error) {
	specOnce.Do(func() { spec, specErr = buildSpec() })
	if specErr != nil {
		return nil, specErr
	}
	return spec.Copy(), nil
}

func buildSpec() (*ebpf.ProgramSpec, error) {
	k, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("load kernel btf: %w", err)
	}
	off := func(typ, field string) (int16, error) {
		var s *btf.Struct
		if err := k.TypeByName(typ, &s); err != nil {
			return 0, fmt.Errorf("kernel btf: struct %s: %w", typ, err)
		}
		o, size, ok := memberOffset(s, field)
		if !ok {
			return 0, fmt.Errorf("kernel btf: struct %s has no member %s", typ, field)
		}
		if size != 8 {
			return 0, fmt.Errorf("kernel btf: %s.%s is %d bytes, want 8", typ, field, size)
		}
		return int16(o), nil
	}
	var o struct{ meta, vma, seq, start, end, flags, policy int16 }
	for _, f := range []struct {
		dst         *int16
		typ, member string
	}{
		{&o.meta, "bpf_iter__task_vma", "meta"},
		{&o.vma, "bpf_iter__task_vma", "vma"},
		{&o.seq, "bpf_iter_meta", "seq"},
		{&o.start, "vm_area_struct", "vm_start"},
		{&o.end, "vm_area_struct", "vm_end"},
		{&o.flags, "vm_area_struct", "vm_flags"},
	} {
		if *f.dst, err = off(f.typ, f.member); err != nil {
			return nil, err
		}
	}
	// vm_policy exists only with CONFIG_NUMA; without it no VMA has a
	// policy, and the program writes 0.
	numa := true
	if o.policy, err = off("vm_area_struct", "vm_policy"); err != nil {
		numa = false
	}
	// r6 = ctx; r7 = ctx->vma (NULL after the last VMA); if set, copy
	// vm_start, vm_end, vm_flags and whether vm_policy is set (1 or 0,
	// never the pointer) to the stack and bpf_seq_write them to
	// ctx->meta->seq. The loads through r7 are BTF pointer loads the
	// verifier checks against the member offsets.
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, o.vma, asm.DWord),
		asm.JEq.Imm(asm.R7, 0, "out"),
		asm.LoadMem(asm.R8, asm.R6, o.meta, asm.DWord),
		asm.LoadMem(asm.R8, asm.R8, o.seq, asm.DWord),
		asm.LoadMem(asm.R1, asm.R7, o.start, asm.DWord),
		asm.StoreMem(asm.RFP, -32, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R7, o.end, asm.DWord),
		asm.StoreMem(asm.RFP, -24, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R7, o.flags, asm.DWord),
		asm.StoreMem(asm.RFP, -16, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R2, 0),
	}
	if numa {
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.R7, o.policy, asm.DWord),
			asm.JEq.Imm(asm.R1, 0, "policy"),
			asm.Mov.Imm(asm.R2, 1),
		)
	}
	insns = append(insns,
		asm.StoreMem(asm.RFP, -8, asm.R2, asm.DWord).WithSymbol("policy"),
		asm.Mov.Reg(asm.R1, asm.R8),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -recordSize),
		asm.Mov.Imm(asm.R3, recordSize),
		asm.FnSeqWrite.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
	return &ebpf.ProgramSpec{
		Name:         "lazycr_vmas",
		Type:         ebpf.Tracing,
		AttachType:   ebpf.AttachTraceIter,
		AttachTo:     "task_vma",
		Instructions: insns,
		// bpf_seq_write is GPL-only (kernel/trace/bpf_trace.c).
		License: "GPL",
	}, nil
}

// memberOffset finds field in s, looking into anonymous struct and union
// members (vm_start sits in an anonymous struct inside an anonymous union
// of vm_area_struct), and returns its byte offset and size.
func memberOffset(s btf.Type, field string) (off, size uint32, ok bool) {
	var members []btf.Member
	switch t := s.(type) {
	case *btf.Struct:
		members = t.Members
	case *btf.Union:
		members = t.Members
	default:
		return 0, 0, false
	}
	for _, m := range members {
		if m.BitfieldSize != 0 || m.Offset%8 != 0 {
			continue
		}
		base := uint32(m.Offset / 8)
		if m.Name == field {
			sz, err := btf.Sizeof(m.Type)
			if err != nil {
				return 0, 0, false
			}
			return base, uint32(sz), true
		}
		if m.Name == "" {
			if o, sz, ok := memberOffset(btf.UnderlyingType(m.Type), field); ok {
				return base + o, sz, true
			}
		}
	}
	return 0, 0, false
}
