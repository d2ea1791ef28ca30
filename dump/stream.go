package dump

import (
	"context"
	"fmt"
	"hash"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/inject"
	"google.golang.org/protobuf/proto"
)

// PagesStream is one process's pages file of a lazy skeleton, read from the
// frozen process as the page server sends it instead of held in memory.
//
// Building the skeleton in memory cost a lazy dump of a process with 128 MiB
// of shared memory (which is eager, see pageState) 1.3-1.5 s on this VM,
// most of it first-touch page faults on the fresh buffer (exc_page_fault,
// or clear_page_erms with huge pages) and memmove; streaming reads the
// pages twice into one reused buffer instead: once for the header's
// checksum, here, and once as they are sent. The process is frozen in
// between; should shared memory change anyway (a process outside the dump
// writing it), the target's checksum check refuses the pages file
// (restore verifies it) and the migration is rolled back.
type PagesStream struct {
	head []byte // the file's header
	segs []pagesSeg
	size uint64 // page data bytes
	proc *inject.Process
}

// pagesSeg is one eager run: n bytes at addr in the process, at offset off
// of the page data.
type pagesSeg struct{ off, addr, n uint64 }

// Size is the file's size in bytes, header included.
func (s *PagesStream) Size() uint64 { return uint64(len(s.head)) + s.size }

// ReadAt fills b from offset off of the file (header included), reading
// the pages from the frozen process.
func (s *PagesStream) ReadAt(b []byte, off uint64) error {
	if off > s.Size() || uint64(len(b)) > s.Size()-off {
		return fmt.Errorf("read pages of pid %d: %d bytes at offset %d beyond the file's %d", s.proc.Pid, len(b), off, s.Size())
	}
	if off < uint64(len(s.head)) {
		n := copy(b, s.head[off:])
		b, off = b[n:], off+uint64(n)
	}
	off -= uint64(len(s.head))
	for len(b) > 0 {
		i := s.find(off)
		g := s.segs[i]
		n := min(uint64(len(b)), g.off+g.n-off)
		addr := g.addr + off - g.off
		if err := s.proc.ReadMem(uintptr(addr), b[:n]); err != nil {
			return fmt.Errorf("read pages %#x-%#x of pid %d: %w", addr, addr+n, s.proc.Pid, err)
		}
		b, off = b[n:], off+n
	}
	return nil
}

// find returns the segment holding data offset off (which is below size).
func (s *PagesStream) find(off uint64) int {
	lo, hi := 0, len(s.segs)
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if s.segs[mid].off <= off {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}

// sumPages is a pageAppender that keeps only the checksum and the size.
type sumPages struct {
	h hash.Hash32
	n uint64
}

func (p *sumPages) Append(b []byte) (uint64, error) {
	off := p.n
	p.h.Write(b)
	p.n += uint64(len(b))
	return off, nil
}

func (p *sumPages) Size() uint64 { return p.n }

// SkeletonFiles returns a lazy dump's skeleton for the page server without
// building its page data in memory: the image files by name, and each
// process's pages file as a PagesStream (by name) that reads the frozen
// process when sent. The process must stay frozen while they are read.
func (cp *Checkpoint) SkeletonFiles() (map[string][]byte, map[string]*PagesStream, error) {
	if cp.opts.Mode != ModeLazy {
		return nil, nil, fmt.Errorf("dump pid %d: a streamed skeleton is for a lazy dump", cp.pid)
	}
	streams := map[string]*PagesStream{}
	for p := range cp.eager {
		sum := &sumPages{h: image.NewPagesHash()}
		if err := cp.writeMemberPages(context.Background(), sum, p); err != nil {
			return nil, nil, fmt.Errorf("dump pid %d: %w", cp.pid, err)
		}
		s := &PagesStream{head: image.PagesHeader(sum.n, sum.h.Sum32()), size: sum.n, proc: cp.member(p).proc}
		var at uint64
		for _, er := range cp.eager[p] {
			r := er.run
			if r.Offset != at {
				// writePages writes the runs of a lazy dump whole, in order.
				return nil, nil, fmt.Errorf("dump pid %d: pages of pid %d at %#x: offset %d, expected %d", cp.pid, p, r.Addr, r.Offset, at)
			}
			if n := r.Npages * image.PageSize; n > 0 {
				s.segs = append(s.segs, pagesSeg{off: at, addr: r.Addr, n: n})
				at += n
			}
		}
		if at != sum.n {
			return nil, nil, fmt.Errorf("dump pid %d: pages of pid %d: runs hold %d bytes, %d read", cp.pid, p, at, sum.n)
		}
		cp.Set.Memory[p].PagesBytes = sum.n
		cp.Set.Memory[p].PagesCrc32C = proto.Uint32(sum.h.Sum32())
		streams[image.PagesFile(p)] = s
	}
	if err := cp.Set.Validate(); err != nil {
		return nil, nil, fmt.Errorf("dump pid %d: %w", cp.pid, err)
	}
	files, err := cp.Set.Files()
	if err != nil {
		return nil, nil, fmt.Errorf("dump pid %d: %w", cp.pid, err)
	}
	for _, b := range files {
		cp.Stats.BytesWritten += uint64(len(b))
	}
	return files, streams, nil
}
