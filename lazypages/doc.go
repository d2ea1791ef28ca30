// Package lazypages is the page state of a post-copy migration, shared by
// the source's page server and the target's lazy-pages handler: which lazy
// pages exist and how they are numbered (Index), sets of them (Bitmap), and
// where a process's current addresses were at dump time (Translation). It
// does no I/O and makes no syscalls.
//
// # Keyed addresses
//
// The processes of a migrated tree share one numbering, but each has its own
// memory: the same dump-time address means a different page in each. A page
// is therefore keyed by its space (the process's number in the tree, 0 for a
// single process) in the top bits and its dump-time address below
// (SpaceAddr): x86-64 user addresses are below 2^56 even with 5-level paging
// (Documentation/arch/x86/x86_64/mm.rst), so a space never overlaps another.
//
// # Numbering
//
// An Index numbers the pages of a set of keyed runs in address order: page k
// of the j-th run (by address) has index first(j)+k. Runs keep the
// boundaries they were given (one per VMA part): a caller that batches pages
// within one run never spans two VMAs. Bitmaps are indexed the same way.
package lazypages
