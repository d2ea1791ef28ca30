package uffd

// PageSize is the page size the handler works in (x86-64 base pages).
const PageSize = 4096

// A PageSource supplies the contents of lazy pages, addressed by their
// address at dump time. The lazy-pages handler depends only on this
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
	Addr   uint64 // dump-time address of the first page
	Data   []byte // whole pages
	Pushed bool   // sent by the background push, not in answer to a request
	Err    error  // the source failed for good; Addr and Data are unset
	// Release, if set, is called once the consumer is done with Data (it
	// was installed or discarded): the source may then reuse the buffer.
	Release func()
}

// Run is a run of pages [Addr, Addr+Npages*PageSize).
type Run struct {
	Addr   uint64
	Npages uint64
}

// End is the address just past the run.
func (r Run) End() uint64 { return r.Addr + r.Npages*PageSize }

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
