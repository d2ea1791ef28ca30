package pageserver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
)

// UnackedIndexFile is the name of the run index WriteUnacked writes next to
// the pages file: an image.KindMemory file (image.MemoryFile(pid)).
func UnackedIndexFile(pid uint32) string { return image.MemoryFile(pid) }

// WriteUnacked writes every lazy page the target has not acknowledged into
// dir, so the process can still be completed from disk after Serve gave up
// (ErrGaveUp): image.PagesFile(pid) holds the page data and
// UnackedIndexFile(pid) a pb.MemoryMap with one VMA per lazy run, tiled with
// EAGER runs (data in the pages file at their offset) and LAZY runs (pages
// the target already has). dir must be a directory of its own: the names are
// those of an image set. Call it only after Serve returned.
func (s *Server) WriteUnacked(dir string, pid uint32) error {
	s.mu.Lock()
	idx, acked := s.idx, s.acked
	s.mu.Unlock()
	if idx == nil {
		return errors.New("write unacked pages: the server has not served")
	}
	pw, err := image.CreatePages(dir, pid)
	if err != nil {
		return fmt.Errorf("write unacked pages of pid %d: %w", pid, err)
	}
	mm := &pb.MemoryMap{Pid: pid}
	buf := make([]byte, MaxFramePages*PageSize)
	for i, run := range idx.runs {
		v := &pb.Vma{Start: run.Addr, End: run.End()}
		g0 := idx.first[i]
		for k := uint64(0); k < run.Npages; {
			g := g0 + k
			have := acked.get(g)
			n := uint64(1)
			for k+n < run.Npages && acked.get(g+n) == have {
				n++
			}
			pr := &pb.PageRun{Addr: run.Addr + k*PageSize, Npages: n, State: pb.PageState_PAGE_STATE_LAZY}
			if !have {
				pr.State = pb.PageState_PAGE_STATE_EAGER
				pr.Offset = pw.Size()
				for off := uint64(0); off < n; {
					m := min(n-off, MaxFramePages)
					addr := pr.Addr + off*PageSize
					b := buf[:m*PageSize]
					if err := s.cfg.Memory.ReadAt(b, addr); err != nil {
						pw.Abort()
						return fmt.Errorf("write unacked pages of pid %d: read %#x-%#x: %w", pid, addr, addr+m*PageSize, err)
					}
					if _, err := pw.Append(b); err != nil {
						pw.Abort()
						return fmt.Errorf("write unacked pages of pid %d: %w", pid, err)
					}
					off += m
				}
			}
			v.Pages = append(v.Pages, pr)
			k += n
		}
		mm.Vmas = append(mm.Vmas, v)
	}
	mm.PagesBytes = pw.Size()
	if err := pw.Close(); err != nil {
		return fmt.Errorf("write unacked pages of pid %d: %w", pid, err)
	}
	b, err := image.Encode(image.KindMemory, mm)
	if err != nil {
		return fmt.Errorf("write unacked page index of pid %d: %w", pid, err)
	}
	path := filepath.Join(dir, UnackedIndexFile(pid))
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write unacked page index of pid %d: %w", pid, err)
	}
	s.log.Info().Str("dir", dir).Uint64("bytes", mm.PagesBytes).Msg("wrote the pages the target lacks")
	return nil
}
