package restore

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/proc"
	"github.com/lazycr/lazycr/procattr"
	"github.com/lazycr/lazycr/vmattr"
	"golang.org/x/sys/unix"
)

// scratchPages is the size of the engine's scratch mapping in a spawned
// process: the scratch page and the gadget page after it.
const scratchPages = 2

func isSpecialKind(k pb.VmaKind) bool {
	switch k {
	case pb.VmaKind_VMA_KIND_VDSO, pb.VmaKind_VMA_KIND_VVAR, pb.VmaKind_VMA_KIND_VVAR_VCLOCK, pb.VmaKind_VMA_KIND_VSYSCALL:
		return true
	}
	return false
}

// checkHost refuses images this host cannot restore, before anything runs.
func (r *Process) checkHost() error {
	inv := r.set.Inventory
	if inv.Arch != "" && inv.Arch != "amd64" {
		return fmt.Errorf("restore: %w: image is for %s, lazycr restores amd64", ErrIncompatible, inv.Arch)
	}
	if inv.XsaveFeatures != 0 {
		if host, err := hostXfeatures(); err == nil {
			if err := checkXfeatures(inv.XsaveFeatures, host); err != nil {
				return fmt.Errorf("restore: %w", err)
			}
		}
	}
	for _, v := range r.mm.Vmas {
		if v.Kind != pb.VmaKind_VMA_KIND_FILE {
			continue
		}
		if err := checkFile(v.File); err != nil {
			return fmt.Errorf("restore: vma %#x-%#x: %w", v.Start, v.End, err)
		}
	}
	return nil
}

// checkFile makes sure path is still the file the dump saw.
func checkFile(id *pb.FileID) error {
	if id == nil {
		return fmt.Errorf("%w: no file recorded", ErrFileChanged)
	}
	var st unix.Stat_t
	if err := unix.Stat(id.Path, &st); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrFileChanged, id.Path, err)
	}
	switch {
	case st.Ino != id.Inode || st.Dev != id.Dev:
		return fmt.Errorf("%w: %s is now inode %d on device %#x, the dump had inode %d on %#x", ErrFileChanged, id.Path, st.Ino, st.Dev, id.Inode, id.Dev)
	case uint64(st.Size) != id.Size:
		return fmt.Errorf("%w: %s is now %d bytes, the dump had %d", ErrFileChanged, id.Path, st.Size, id.Size)
	case id.MtimeUnixNano != 0 && st.Mtim.Nano() != id.MtimeUnixNano:
		return fmt.Errorf("%w: %s was modified after the dump", ErrFileChanged, id.Path)
	}
	return nil
}

// buildAddressSpace replaces the stub's mappings by the image's: the
// scratch mapping moves where the image has nothing, every stub mapping but
// the special block goes, the special block moves to the image's addresses,
// and every VMA is mapped at its address.
func (r *Process) buildAddressSpace() error {
	b := r.b
	stubMaps, err := proc.ReadMaps(b.pid)
	if err != nil {
		return err
	}
	// 1. Scratch where neither the image nor the stub has anything.
	scratch, err := r.freeAddress(stubMaps, scratchPages*image.PageSize)
	if err != nil {
		return err
	}
	if b.scratch, err = b.p.MapScratch(uintptr(scratch)); err != nil {
		return err
	}
	if stubMaps, err = proc.ReadMaps(b.pid); err != nil {
		return err
	}
	// 2. The special block must match the image's, name for name and size
	// for size: the vDSO code in the image's memory expects it.
	stubSpecial := map[string]proc.Mapping{}
	for _, m := range stubMaps {
		if m.IsSpecial() {
			stubSpecial[m.Path] = m
		}
	}
	imgSpecial := map[string]*pb.Vma{}
	for _, v := range r.mm.Vmas {
		if isSpecialKind(v.Kind) {
			imgSpecial[v.Name] = v
		}
	}
	if err := compareSpecial(stubSpecial, imgSpecial); err != nil {
		return err
	}
	// 3. Unmap the stub.
	for _, m := range stubMaps {
		if m.IsSpecial() || (m.Start >= uint64(b.scratch) && m.End <= uint64(b.scratch)+scratchPages*image.PageSize) {
			continue
		}
		if _, err := b.call(unix.SYS_MUNMAP, uintptr(m.Start), uintptr(m.End-m.Start)); err != nil {
			return fmt.Errorf("unmap stub mapping %s: %w", m.String(), err)
		}
	}
	// 4. Move the special block. A destination may overlap another special
	// mapping's current place: hop through free space first.
	if err := r.moveSpecials(stubSpecial, imgSpecial); err != nil {
		return err
	}
	// 5. Map every VMA, then close the files opened for them.
	defer func() {
		for _, fd := range r.mapFds {
			b.call(unix.SYS_CLOSE, fd)
		}
		r.mapFds = nil
	}()
	for _, v := range r.mm.Vmas {
		if isSpecialKind(v.Kind) {
			continue
		}
		if err := r.mapVMA(v); err != nil {
			return fmt.Errorf("map vma %#x-%#x %s: %w", v.Start, v.End, v.Name, err)
		}
		// Its memory policy before any page is written, so the pages go
		// where the original's went (vmattr/mempolicy.go).
		if err := vmattr.Bind(builderCaller{b}, v); err != nil {
			return fmt.Errorf("map vma %#x-%#x %s: %w", v.Start, v.End, v.Name, err)
		}
	}
	return nil
}

func compareSpecial(stub map[string]proc.Mapping, img map[string]*pb.Vma) error {
	var have, want []string
	for n, m := range stub {
		if n == "[vsyscall]" {
			continue
		}
		have = append(have, fmt.Sprintf("%s %d pages", n, (m.End-m.Start)/image.PageSize))
	}
	for n, v := range img {
		if n == "[vsyscall]" {
			continue
		}
		want = append(want, fmt.Sprintf("%s %d pages", n, (v.End-v.Start)/image.PageSize))
	}
	sort.Strings(have)
	sort.Strings(want)
	if strings.Join(have, ", ") != strings.Join(want, ", ") {
		return fmt.Errorf("%w: this kernel's special mappings are [%s], the image's [%s] (dumped on another kernel?)",
			ErrIncompatible, strings.Join(have, ", "), strings.Join(want, ", "))
	}
	return nil
}

func (r *Process) moveSpecials(stub map[string]proc.Mapping, img map[string]*pb.Vma) error {
	b := r.b
	type move struct {
		name     string
		from, to uint64
		size     uint64
	}
	var moves []*move
	for n, v := range img {
		if n == "[vsyscall]" {
			continue
		}
		m := stub[n]
		if m.Start != v.Start {
			moves = append(moves, &move{n, m.Start, v.Start, v.End - v.Start})
		}
	}
	if len(moves) == 0 {
		return nil
	}
	// First every moving mapping to a temporary free address, then each to
	// its place: no destination can then overlap a source.
	var total uint64
	for _, m := range moves {
		total += m.size
	}
	cur, err := proc.ReadMaps(b.pid)
	if err != nil {
		return err
	}
	tmp, err := r.freeAddress(cur, total+image.PageSize)
	if err != nil {
		return err
	}
	mremap := func(from, to, size uint64) error {
		got, err := b.call(unix.SYS_MREMAP, uintptr(from), uintptr(size), uintptr(size),
			unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, uintptr(to))
		if err != nil {
			return err
		}
		if uint64(got) != to {
			return fmt.Errorf("mremap moved %#x to %#x instead of %#x", from, got, to)
		}
		return nil
	}
	at := tmp
	for _, m := range moves {
		if err := mremap(m.from, at, m.size); err != nil {
			return fmt.Errorf("move %s from %#x to %#x: %w", m.name, m.from, at, err)
		}
		m.from = at
		at += m.size
	}
	for _, m := range moves {
		if err := mremap(m.from, m.to, m.size); err != nil {
			return fmt.Errorf("move %s from %#x to %#x: %w", m.name, m.from, m.to, err)
		}
	}
	return nil
}

// freeAddress finds size bytes free in both the image layout and the given
// current mappings, below the image's highest user mapping.
func (r *Process) freeAddress(cur []proc.Mapping, size uint64) (uint64, error) {
	type span struct{ s, e uint64 }
	var used []span
	for _, v := range r.mm.Vmas {
		used = append(used, span{v.Start, v.End})
	}
	for _, m := range cur {
		used = append(used, span{m.Start, m.End})
	}
	sort.Slice(used, func(i, j int) bool { return used[i].s < used[j].s })
	// Search downwards from below 0x7f0000000000, where mmap places things,
	// keeping a guard page on each side.
	const top = 0x7e0000000000
	hi := uint64(top)
	for i := len(used) - 1; i >= -1; i-- {
		var lo uint64 = 0x10000
		if i >= 0 {
			if used[i].s >= hi {
				continue
			}
			lo = used[i].e
		}
		if hi > lo && hi-lo >= size+2*image.PageSize {
			return hi - image.PageSize - size, nil
		}
		if i >= 0 && used[i].s < hi {
			hi = used[i].s
		}
	}
	return 0, fmt.Errorf("no free %d bytes for a scratch mapping", size)
}

// mapVMA maps one image VMA at its address.
func (r *Process) mapVMA(v *pb.Vma) error {
	b := r.b
	length := uintptr(v.End - v.Start)
	flags := uintptr(unix.MAP_FIXED_NOREPLACE)
	if v.Shared {
		flags |= unix.MAP_SHARED
	} else {
		flags |= unix.MAP_PRIVATE
	}
	for _, f := range v.VmFlags {
		switch f {
		case "gd":
			flags |= unix.MAP_GROWSDOWN
		case "nr":
			flags |= unix.MAP_NORESERVE
		}
	}
	// Mapped with room to write its page data; writePages gives it its
	// own protection and attributes afterwards (package vmattr).
	if v.Shm != 0 {
		return r.mapShm(v, flags) // shm.go
	}
	prot := uintptr(vmattr.FillProt(v))
	fd := ^uintptr(0)
	switch v.Kind {
	case pb.VmaKind_VMA_KIND_FILE:
		// The access the file was open with decides what mprotect may
		// later allow (VM_MAYWRITE): see vmattr.OpenAccess.
		acc := vmattr.OpenAccess(v)
		// One open per file and access mode for all its VMAs (a library
		// has four or five): injected syscalls are the cost of a restore.
		key := fmt.Sprintf("%d:%s", acc, v.File.Path)
		if f, ok := r.mapFds[key]; ok {
			fd = f
			break
		}
		path, err := b.putString(0, v.File.Path)
		if err != nil {
			return err
		}
		f, err := b.call(unix.SYS_OPENAT, atFdcwd, path, uintptr(acc|unix.O_CLOEXEC), 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", v.File.Path, err)
		}
		fd = f
		if r.mapFds == nil {
			r.mapFds = map[string]uintptr{}
		}
		r.mapFds[key] = fd
	default:
		flags |= unix.MAP_ANONYMOUS
	}
	got, err := b.call(unix.SYS_MMAP, uintptr(v.Start), length, prot, flags, fd, uintptr(v.Offset))
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	if uint64(got) != v.Start {
		return fmt.Errorf("mmap returned %#x", got)
	}
	return nil
}

// writePages writes every eager page into the process, then gives every
// VMA its own protection and attributes and the address space its own
// (finishMemory): a page cannot be written into a PROT_NONE or read-only
// mapping, so they were mapped writable (vmattr.FillProt).
func (r *Process) writePages() error {
	if err := r.fillPages(); err != nil {
		return err
	}
	return r.finishMemory()
}

// finishMemory applies the per-VMA attributes, then the address-space ones
// (mlockall(MCL_FUTURE) last: it would lock whatever is mapped after it).
// It runs before the credentials are set, so locking memory is allowed as
// it was when the process did it (mlock(2): CAP_IPC_LOCK or RLIMIT_MEMLOCK).
func (r *Process) finishMemory() error {
	c := builderCaller{r.b}
	for _, v := range r.mm.Vmas {
		if isSpecialKind(v.Kind) {
			continue
		}
		if err := vmattr.Apply(c, v); err != nil {
			return fmt.Errorf("%s: %w", v.Name, err)
		}
	}
	if err := vmattr.ApplyMM(c, r.mm.Attrs); err != nil {
		return fmt.Errorf("address space: %w", err)
	}
	return nil
}

// builderCaller injects syscalls on the process's leader
// (vmattr.Caller, procattr.Caller).
type builderCaller struct{ b *builder }

func (c builderCaller) Call(nr uintptr, args ...uintptr) (uintptr, error) {
	return c.b.call(nr, args...)
}

// CallIn passes a copy of in at the start of the scratch page for the
// argument equal to vmattr.In.
func (c builderCaller) CallIn(in []byte, nr uintptr, args ...uintptr) (uintptr, error) {
	addr, err := c.b.put(0, in)
	if err != nil {
		return 0, err
	}
	return c.b.call(nr, vmattr.WithIn(args, addr)...)
}

// ReadProc reads /proc/PID/name of the process being built.
func (c builderCaller) ReadProc(name string) ([]byte, error) {
	return proc.ReadPidFile(c.b.pid, name)
}

// WriteProc writes /proc/PID/name of the process being built.
func (c builderCaller) WriteProc(name string, data []byte) error {
	return proc.WritePidFile(c.b.pid, name, data)
}

// CallOut passes the start of the scratch page for the argument equal to
// procattr.Out.
func (c builderCaller) CallOut(out []byte, nr uintptr, args ...uintptr) error {
	addr, err := c.b.put(0, make([]byte, len(out)))
	if err != nil {
		return err
	}
	a := make([]uintptr, len(args))
	for i, v := range args {
		if v == procattr.Out {
			v = addr
		}
		a[i] = v
	}
	if _, err := c.b.call(nr, a...); err != nil {
		return err
	}
	got, err := c.b.get(0, len(out))
	if err != nil {
		return err
	}
	copy(out, got)
	return nil
}

func (r *Process) fillPages() error {
	if r.opts.Pages == nil {
		return nil
	}
	buf := make([]byte, 1<<20)
	for _, v := range r.mm.Vmas {
		if v.Shm != 0 {
			continue // written into its object by mapShm
		}
		for _, run := range v.Pages {
			if run.State != pb.PageState_PAGE_STATE_EAGER {
				continue
			}
			addr, off, left := run.Addr, run.Offset, run.Npages*image.PageSize
			for left > 0 {
				n := min(left, uint64(len(buf)))
				if err := r.opts.Pages.ReadAt(buf[:n], off); err != nil {
					return err
				}
				if err := r.b.p.WriteMem(uintptr(addr), buf[:n]); err != nil {
					return fmt.Errorf("write pages %#x-%#x: %w", addr, addr+n, err)
				}
				r.Stats.EagerBytes += n
				addr, off, left = addr+n, off+n, left-n
			}
		}
	}
	return nil
}

// setMM sets the mm fields, auxv and exe with one PR_SET_MM_MAP (it needs
// no CAP_SYS_RESOURCE, unlike the per-field PR_SET_MM_* calls; see
// prctl(2) and kernel/sys.c prctl_set_mm_map).
func (r *Process) setMM() error {
	b := r.b
	mm := r.mm.Mm
	auxv := make([]byte, 8*len(r.mm.Auxv))
	for i, x := range r.mm.Auxv {
		binary.LittleEndian.PutUint64(auxv[8*i:], x)
	}
	// The kernel wants the AT_NULL terminator in the copy it keeps.
	if n := len(r.mm.Auxv); n < 2 || r.mm.Auxv[n-2] != 0 {
		auxv = append(auxv, make([]byte, 16)...)
	}
	const auxvOff = 1024
	if len(auxv) > scratchSize-auxvOff {
		return fmt.Errorf("auxv of %d bytes is too large", len(auxv))
	}
	auxvAddr, err := b.put(auxvOff, auxv)
	if err != nil {
		return err
	}
	exeFd := ^uint32(0) // -1: keep the stub's exe
	// The kernel refuses to change exe while the old exe is still mapped
	// (EBUSY, kernel/sys.c prctl_set_mm_exe_file): when the process ran the
	// very binary the stub is (lazycr restoring a lazycr-run program), the
	// exe is already right.
	if r.mm.Exe != nil && r.mm.Exe.Path != "" && !sameFile(r.stubExe, r.mm.Exe) {
		path, err := b.putString(512, r.mm.Exe.Path)
		if err != nil {
			return err
		}
		fd, err := b.call(unix.SYS_OPENAT, atFdcwd, path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open exe %s: %w", r.mm.Exe.Path, err)
		}
		defer b.call(unix.SYS_CLOSE, fd)
		exeFd = uint32(fd)
	}
	m := kabi.PrctlMmMap{
		StartCode: mm.StartCode, EndCode: mm.EndCode, StartData: mm.StartData, EndData: mm.EndData,
		StartBrk: mm.StartBrk, Brk: mm.Brk, StartStack: mm.StartStack, ArgStart: mm.ArgStart,
		ArgEnd: mm.ArgEnd, EnvStart: mm.EnvStart, EnvEnd: mm.EnvEnd,
		Auxv: uint64(auxvAddr), AuxvSize: uint32(len(auxv)), ExeFd: exeFd,
	}
	addr, err := b.put(0, le(m))
	if err != nil {
		return err
	}
	if _, err := b.call(unix.SYS_PRCTL, unix.PR_SET_MM, unix.PR_SET_MM_MAP, addr, uintptr(len(le(m)))); err != nil {
		return fmt.Errorf("prctl(PR_SET_MM_MAP): %w", err)
	}
	return nil
}

// sameFile reports whether path is the file id names (device and inode).
func sameFile(path string, id *pb.FileID) bool {
	var st unix.Stat_t
	if path == "" || unix.Stat(path, &st) != nil {
		return false
	}
	return st.Dev == id.Dev && st.Ino == id.Inode
}
