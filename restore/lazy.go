package restore

import (
	"fmt"
	"os"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/uffd"
	"golang.org/x/sys/unix"
)

// LazyFeatures are the userfaultfd features a lazy restore needs: the
// non-cooperative events (so a page the process dropped or moved is never
// filled with stale data, and a forked child is served too) and the
// faulting thread's id for the traces.
const LazyFeatures = uffd.FeaturesNonCooperative | uffd.FeatureThreadID

// setupUserfaultfd creates a userfaultfd inside the process being built —
// the uffd belongs to the mm of the process that creates it — takes it
// into lazycr with pidfd_getfd(2), closes the process's copy and does the
// API handshake. See Documentation/admin-guide/mm/userfaultfd.rst,
// "Non-cooperative userfaultfd".
func (r *Process) setupUserfaultfd() error {
	b := r.b
	fd, err := b.call(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK)
	if err != nil {
		return fmt.Errorf("injected userfaultfd: %w", err)
	}
	pidfd, err := unix.PidfdOpen(b.pid, 0)
	if err != nil {
		b.call(unix.SYS_CLOSE, fd)
		return os.NewSyscallError("pidfd_open", err)
	}
	local, err := unix.PidfdGetfd(pidfd, int(fd), 0)
	unix.Close(pidfd)
	if _, cerr := b.call(unix.SYS_CLOSE, fd); cerr != nil && err == nil {
		unix.Close(local)
		return fmt.Errorf("close the process's uffd %d: %w", fd, cerr)
	}
	if err != nil {
		return fmt.Errorf("take uffd %d: %w", fd, os.NewSyscallError("pidfd_getfd", err))
	}
	// FromFd owns local from here on, also when it fails (it closes it
	// then): closing it again here could close another fd that reused the
	// number, such as the page client's socket.
	u, err := uffd.FromFd(local)
	if err != nil {
		return err
	}
	if _, _, err := u.API(LazyFeatures); err != nil {
		u.Close()
		return fmt.Errorf("userfaultfd API handshake: %w", err)
	}
	r.uffd = u
	return nil
}

// TakeUserfaultfd hands over the userfaultfd of a lazy restore
// (Options.Lazy), already past the API handshake; its lazy regions are not
// registered yet. The caller owns it from then on (Kill no longer closes
// it); a second call returns nil. Until it is taken, Kill closes it.
func (r *Process) TakeUserfaultfd() *uffd.FD {
	u := r.uffd
	r.uffd = nil
	return u
}

// LazyRegions lists the VMAs that hold lazy pages, with their runs, for the
// lazy-pages handler.
func (r *Process) LazyRegions() []uffd.Region {
	var out []uffd.Region
	for _, v := range r.mm.Vmas {
		var runs []uffd.Run
		for _, run := range v.Pages {
			if run.State == pb.PageState_PAGE_STATE_LAZY {
				runs = append(runs, uffd.Run{Addr: run.Addr, Npages: run.Npages})
			}
		}
		if len(runs) > 0 {
			out = append(out, uffd.Region{Start: v.Start, End: v.End, Lazy: runs})
		}
	}
	return out
}

// LazyMember is a tree member of a lazy restore other than the root, for
// the lazy-pages handler: its pid here and in the image, its userfaultfd
// (past the API handshake, regions not registered) and its lazy regions.
type LazyMember struct {
	PID      int
	ImagePID uint32
	FD       *uffd.FD
	Regions  []uffd.Region
}

// TakeLazyMembers hands over the userfaultfds of the tree's members other
// than the root (see TakeUserfaultfd): the caller owns them from then on.
// Zombies have none; a second call returns none.
func (r *Process) TakeLazyMembers() []LazyMember {
	if r.tree == nil {
		return nil
	}
	var out []LazyMember
	for _, m := range r.tree.members {
		if u := m.TakeUserfaultfd(); u != nil {
			out = append(out, LazyMember{PID: m.b.pid, ImagePID: m.img.Pid, FD: u, Regions: m.LazyRegions()})
		}
	}
	return out
}

// closeMemberUffds closes the members' userfaultfds not handed over.
func (r *Process) closeMemberUffds() {
	if r.tree == nil {
		return
	}
	for _, m := range r.tree.members {
		if m.uffd != nil {
			m.uffd.Close()
			m.uffd = nil
		}
	}
}
