package uffd

import "github.com/lazycr/lazycr/lazypages"

// PageSize is the page size the handler works in (x86-64 base pages).
const PageSize = lazypages.PageSize

// A PageSource supplies the contents of lazy pages, addressed by their
// address at dump time keyed by the space of their process (SpaceAddr; a
// single process is space 0, whose keys are plain addresses). The lazy-pages handler depends only on this
// interface: the page server client satisfies it over the network, tests
// satisfy it with local memory.
//
// Request queues a request and returns at once; Request never blocks on the
// network. Pages arrive on Pages() in any order, requested or not (a
// background push sends pages nobody asked for); the same page may arrive
// twice. Ack tells the source that pages are installed in the process (or
// dropped by it) and need never be sent again. A PageData with a non-nil Err
// reports that the source is gone for good (after any reconnect attempts):
// the handler then poisons the remaining pages.
type PageSource interface {
	Request(addr uint64, npages int) error
	Pages() <-chan PageData
	Ack(addr uint64, npages int)
}

// PageData is a run of pages from a PageSource.
type PageData struct {
	Addr uint64 // dump-time address of the first page
	Data []byte // whole pages
	// Zero, if not 0, is a run of that many pages at Addr that the source
	// read as all zero bytes (Data is nil): the handler maps them with
	// UFFDIO_ZEROPAGE. A source sets it only for pages it read as zeros,
	// never for pages it does not know.
	Zero int
	// Absent, if not 0, is a run of that many pages at Addr that the
	// source never had (Data is nil, Zero 0): the frozen process never
	// populated them, so they read as zeros there. The handler installs
	// nothing: no process needs them any more, and a fault there gets a
	// zero page, from the handler while it runs and from the kernel once
	// it closed the uffds (userfaultfd_release in fs/userfaultfd.c clears
	// the VMAs' registration: a missing page then faults in as for any
	// anonymous mapping, a zero page; mmap(2) MAP_ANONYMOUS).
	Absent uint64
	Pushed bool  // sent by the background push, not in answer to a request
	Err    error // the source failed for good; Addr and Data are unset
	// Release, if set, is called once the consumer is done with Data (it
	// was installed or discarded): the source may then reuse the buffer.
	Release func()
}

// Run is a run of pages [Addr, Addr+Npages*PageSize).
type Run = lazypages.Run

// Region is one registered range of the process (a lazy VMA). Pages in
// Lazy come from the PageSource; every other page of the region was never
// populated (or was written eagerly before registration) and a fault on it
// is answered locally with a zero page.
type Region struct {
	Start, End uint64
	Lazy       []Run // sorted, inside [Start, End)
}

// A PrioritySource delivers the answers to requests on a channel of their
// own; the handler installs them before any pushed page, so a faulting
// thread never waits behind the background push. Pages() then carries the
// pushed pages (and the final error). The Replies channel is never closed.
type PrioritySource interface {
	PageSource
	Replies() <-chan PageData
}

// A PolledSource lets the handler read the answers to its requests
// itself, in the poll loop that waits on the uffds, instead of through
// Replies: the answer is installed by the thread that poll woke for it,
// with no reader goroutine, channel or eventfd on the way (CRIU's
// criu/uffd.c handle_requests polls its page-server socket together with
// the uffds the same way).
type PolledSource interface {
	PrioritySource
	// PollReplies switches the answers to polling and reports whether the
	// source can (false: they keep coming on Replies). From then on the
	// source calls kick whenever ReplyFD may have changed (a connection
	// opened or lost), so a poll on an old fd does not wait for good.
	// Answers may still come on Replies (before the switch, or while no
	// polled connection is open).
	PollReplies(kick func()) bool
	// ReplyFD is the fd to poll for answers, -1 if there is none now.
	ReplyFD() int
	// ReadReplies reads the answers that arrived, without blocking, and
	// calls install for each in order; the PageData's Data is valid only
	// during the call. A broken connection is the source's business (it
	// asks again elsewhere): ReadReplies returns only install's error.
	ReadReplies(install func(PageData) error) error
}

// Address spaces. The processes of a restored tree share one handler and
// one PageSource, but each has its own memory: a page is keyed by its space
// (a member's number, 0 for a single process) in the top bits and its
// dump-time address below (see package lazypages, "Keyed addresses").
const (
	// SpaceShift is where the space number starts in a keyed address.
	SpaceShift = lazypages.SpaceShift
	// MaxSpaces is how many spaces (tree members) keyed addresses hold.
	MaxSpaces = lazypages.MaxSpaces
	// SpaceSize is the size of one space: every dump-time address of a
	// space is below it.
	SpaceSize = lazypages.SpaceSize
)

// SpaceAddr keys dump-time address addr (< SpaceSize) in space.
func SpaceAddr(space int, addr uint64) uint64 { return lazypages.SpaceAddr(space, addr) }

// SplitSpace splits a keyed address into its space and its dump-time
// address.
func SplitSpace(key uint64) (space int, addr uint64) { return lazypages.SplitSpace(key) }
