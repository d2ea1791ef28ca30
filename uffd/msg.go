package uffd

import (
	"fmt"

	"github.com/lazycr/lazycr/internal/kabi"
)

// Event is the kind of a uffd message (UFFD_EVENT_*).
type Event uint8

// Events read from a uffd.
const (
	EventPageFault Event = kabi.UFFD_EVENT_PAGEFAULT
	EventFork      Event = kabi.UFFD_EVENT_FORK
	EventRemap     Event = kabi.UFFD_EVENT_REMAP
	EventRemove    Event = kabi.UFFD_EVENT_REMOVE
	EventUnmap     Event = kabi.UFFD_EVENT_UNMAP
)

// String is the event name ("pagefault", "remap", ...).
func (e Event) String() string {
	switch e {
	case EventPageFault:
		return "pagefault"
	case EventFork:
		return "fork"
	case EventRemap:
		return "remap"
	case EventRemove:
		return "remove"
	case EventUnmap:
		return "unmap"
	}
	return fmt.Sprintf("event(%#x)", uint8(e))
}

// Page fault flags (PageFault.Flags).
const (
	FaultWrite = kabi.UFFD_PAGEFAULT_FLAG_WRITE
	FaultWP    = kabi.UFFD_PAGEFAULT_FLAG_WP
	FaultMinor = kabi.UFFD_PAGEFAULT_FLAG_MINOR
)

// PageFault is a UFFD_EVENT_PAGEFAULT: a thread is asleep on Addr (page
// aligned unless FeatureExactAddress was negotiated). TID is the faulting
// thread when FeatureThreadID was negotiated, else 0.
type PageFault struct {
	Addr  uint64
	Flags uint64
	TID   int
}

// Fork is a UFFD_EVENT_FORK: the process forked and UFD is a new uffd,
// already installed in our fd table, for the child's copy of the ranges.
// The receiver owns it (see FromFd).
type Fork struct{ UFD int }

// Remap is a UFFD_EVENT_REMAP: mremap moved [From, From+Len) to To.
type Remap struct{ From, To, Len uint64 }

// Remove is a UFFD_EVENT_REMOVE: [Start, End) was dropped with
// madvise(MADV_DONTNEED/MADV_REMOVE); it now reads as missing again and
// must not be filled with old data.
type Remove struct{ Start, End uint64 }

// Unmap is a UFFD_EVENT_UNMAP: [Start, End) was unmapped.
type Unmap struct{ Start, End uint64 }

// Msg is one decoded uffd message: Event says which field is valid. It is a
// tagged struct, not an interface, so reading events does not allocate.
type Msg struct {
	Event     Event
	PageFault PageFault
	Fork      Fork
	Remap     Remap
	Remove    Remove
	Unmap     Unmap
}

// Decode turns a raw struct uffd_msg into a Msg. Unknown events decode with
// only Event set and ok false.
func Decode(m *kabi.UffdMsg) (msg Msg, ok bool) {
	msg.Event = Event(m.Event)
	switch msg.Event {
	case EventPageFault:
		msg.PageFault = PageFault{Addr: m.PagefaultAddress(), Flags: m.PagefaultFlags(), TID: int(m.PagefaultPtid())}
	case EventFork:
		msg.Fork = Fork{UFD: int(m.ForkUfd())}
	case EventRemap:
		msg.Remap = Remap{From: m.RemapFrom(), To: m.RemapTo(), Len: m.RemapLen()}
	case EventRemove:
		msg.Remove = Remove{Start: m.RemoveStart(), End: m.RemoveEnd()}
	case EventUnmap:
		msg.Unmap = Unmap{Start: m.RemoveStart(), End: m.RemoveEnd()}
	default:
		return msg, false
	}
	return msg, true
}

// String is a one-line description of m for logs and test failures.
func (m Msg) String() string {
	switch m.Event {
	case EventPageFault:
		return fmt.Sprintf("pagefault addr=%#x flags=%#x tid=%d", m.PageFault.Addr, m.PageFault.Flags, m.PageFault.TID)
	case EventFork:
		return fmt.Sprintf("fork ufd=%d", m.Fork.UFD)
	case EventRemap:
		return fmt.Sprintf("remap from=%#x to=%#x len=%#x", m.Remap.From, m.Remap.To, m.Remap.Len)
	case EventRemove:
		return fmt.Sprintf("remove [%#x, %#x)", m.Remove.Start, m.Remove.End)
	case EventUnmap:
		return fmt.Sprintf("unmap [%#x, %#x)", m.Unmap.Start, m.Unmap.End)
	}
	return m.Event.String()
}
