package files

import (
	"errors"
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
)

var (
	// ErrUnsupported: the process holds an fd lazycr cannot checkpoint
	// exactly; the dump refuses it, naming the fd and the object.
	ErrUnsupported = errors.New("unsupported")
	// ErrTransient marks a refusal of a passing state (e.g. inotify events
	// not yet read): the same dump a moment later may succeed, so the
	// caller may release the process, let it run briefly and freeze again.
	ErrTransient = errors.New("transient state")
	// ErrFileChanged: a file the process had open is not the one it was.
	ErrFileChanged = errors.New("file changed since the dump")
)

// kind is one fd kind with both halves. Each implementation lives in its
// own file.
type kind interface {
	// name is the kind as `lazycr show` prints it.
	name() string
	// claims reports whether the live fd l is of this kind (dump side).
	claims(l *liveFd) bool
	// dump records l into out.Kind.
	dump(d *dumper, l *liveFd, out *pb.Fd) error
	// owns reports whether image fd f is of this kind (restore side).
	owns(f *pb.Fd) bool
	// create makes the object of image fd f in the process at a
	// temporary number (see restorer.moveHigh) and returns that number.
	create(r *restorer, f *pb.Fd) (uintptr, error)
	// show is the one-line state of f for `lazycr show`.
	show(f *pb.Fd) string
}

// preparer is a kind that looks at the whole image table before any fd is
// created (pipes group their ends).
type preparer interface {
	prepare(r *restorer, f *pb.Fd)
}

// finisher is a kind with a step once every fd has its final number (an
// epoll interest list names final numbers).
type finisher interface {
	finish(r *restorer, f *pb.Fd) error
}

// lateKind is a kind created after all others in the process (it would
// see the restore's own file activity otherwise).
type lateKind interface {
	late()
}

// kinds is every supported kind, in the order the dump asks them to claim a
// live fd (the first that claims it records it).
var kinds = []kind{
	regularFile{},
	memfd{},
	deletedFile{},
	tty{},       // before device, which takes every other character device
	ptyMaster{}, // before device too
	device{},
	fifo{},
	pipe{},
	eventfd{},
	epoll{},
	timerfd{},
	signalfd{},
	inotify{},
	unixSocket{}, // before inetSocket, which refuses every other socket
	tcpConn{},    // before inetSocket, which takes every other inet socket
	inetSocket{},
}

// kindOfImage returns the kind of image fd f, or nil.
func kindOfImage(f *pb.Fd) kind {
	for _, k := range kinds {
		if k.owns(f) {
			return k
		}
	}
	return nil
}

// Show returns the kind of image fd f and a one-line description of its
// state, as `lazycr show` prints them.
func Show(f *pb.Fd) (kindName, detail string) {
	k := kindOfImage(f)
	if k == nil {
		return "unknown", ""
	}
	detail = k.show(f)
	if f.DupOf != nil {
		detail += fmt.Sprintf(" (dup of fd %d)", *f.DupOf)
	}
	detail += showLocks(f) // lock.go
	if o := f.Owner; o != nil {
		detail += fmt.Sprintf(" (SIGIO owner pid %d, signal %d)", o.Pid, o.Signal)
	}
	return k.name(), detail
}
