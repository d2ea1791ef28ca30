// Package pageserver is the wire protocol between the source and the target
// of a post-copy migration: the page server on the source (image files, then
// lazy pages on request and by background push) and its client on the target,
// which satisfies [uffd.PageSource].
//
// # Connection
//
// One TCP connection (optionally mutual TLS, see [ServerTLS] and [ClientTLS])
// carries frames both ways; requests carry an id so they pipeline. A session
// runs:
//
//	target                                   source
//	HELLO{version, session 0, token}   ──▶
//	                                   ◀──   WELCOME{version, session, lazy pages, bytes, pids, runs}
//	GET_IMAGES                         ──▶
//	                                   ◀──   IMAGES{names, sizes}, CHUNK, CHUNK, …
//	RESUMED                            ──▶
//	                                   ◀──   RESUMED_OK
//	REQUEST{id, pid, addr, npages}     ──▶
//	                                   ◀──   PAGES{id, pid, addr, data}   (answers first)
//	                                   ◀──   PAGES{0, pid, addr, data}    (background push)
//	                                   ◀──   ZERO{id or 0, pid, addr, npages} (pages read as zeros)
//	                                   ◀──   ABSENT{runs}  (lazy pages the source never had)
//	ACK{runs}                          ──▶   (never pushed again)
//	DONE                               ──▶
//	                                   ◀──   DONE, close
//
// EXITED{text} stands for DONE when the process exited on the target
// before all its lazy pages were needed: the migration is over (the text,
// "pid N exited (status S) …", is for the source's log); the source ends
// the original and answers DONE.
//
// After RESUMED the target also opens a replies connection for the
// session (it may not: everything then shares the one connection):
//
//	HELLO_REPLIES{version, session, token} ──▶
//	                                   ◀──   REPLIES_OK (or ERROR, and close)
//	REQUEST{id, pid, addr, npages}     ──▶
//	                                   ◀──   PAGES{id, …} / ZERO{id, …} / ERROR{id}
//
// Its answers never queue behind pushed pages in the session's connection;
// it ends with that connection, and a target whose replies connection
// failed asks again on the session's connection. On the target, the
// lazy-pages handler reads it in the poll loop that waits on the uffds
// (uffd.PolledSource, plain TCP only); on the source, a thread of its own
// waits for requests in poll(2) and answers each at once. Both threads ask
// for a short scheduler slice (internal/schedslice), so a fault's round
// trip preempts the push at each of its wake-ups.
//
// Before RESUMED a lost connection or FAIL{reason} ends the session: the
// source releases the frozen process, which keeps running. After RESUMED the
// target may reconnect with HELLO{session} within the source's reconnect
// timeout; unanswered requests are sent again and unacked pages pushed again.
// ABORT{reason} after RESUMED says the target killed its copy on purpose: the
// source keeps the original stopped and ends the session at once. A source
// that died or gave up after RESUMED is continued by a new server for the
// same session ([ServerConfig.Adopted]): it accepts only HELLO{session} and
// pushes at once.
// A refused peer (wrong token, wrong session, bad version) gets one
// ERROR{message} frame and the connection is closed; a client refuses a
// WELCOME of another version ([ErrVersion], naming both).
//
// # Processes
//
// One session serves a whole process tree: every page on the wire names
// its process by its pid in the image, and WELCOME lists those pids
// (ascending). Inside lazycr a page is keyed by the process's index in that
// list, its space (uffd.SpaceAddr), so one index, one handler and one push
// cover every process.
//
// # Frame
//
// Every frame starts with a 16-byte header, all integers little-endian:
//
//	0       2         3      4                8                        16
//	+-------+---------+------+----------------+------------------------+
//	| "LZ"  | version | type | payload length | request id             | payload …
//	+-------+---------+------+----------------+------------------------+
//
// version is [FrameVersion]; the payload is at most [MaxPayload] bytes. The
// payloads:
//
//	HELLO      version u32 | session u64 | token length u16 | token (≤ MaxToken)
//	HELLO_REPLIES as HELLO (session ≠ 0)
//	WELCOME    version u32 | session u64 | lazy pages u64 | lazy bytes u64 |
//	           p u32 | p × pid u32 | n u32 | n × (pid u32, addr u64, npages u64)
//	IMAGES     n u32 | n × (name length u8 | name | size u64)
//	CHUNK      the next bytes of the files listed in IMAGES, concatenated in order
//	REQUEST    pid u32 | addr u64 | npages u32          (id ≠ 0 in the header)
//	PAGES      pid u32 | addr u64 | npages × 4096 bytes  (id 0 = pushed)
//	ZERO       pid u32 | addr u64 | npages u32           (id as PAGES: the pages are all zero bytes)
//	ACK        n u32 | n × (pid u32, addr u64, npages u64)
//	ABSENT     as ACK (1 to MaxAbsentRuns runs)
//	FAIL/ERROR/ABORT/EXITED UTF-8 text (≤ MaxMessage bytes); an ERROR with an id refuses that request
//	GET_IMAGES, RESUMED, RESUMED_OK, REPLIES_OK, DONE: empty
//
// Once RESUMED_OK is out the source's reader answers each REQUEST itself,
// between two frames of the background push (at most [MaxPushBytes] each);
// the target installs answers before pushed pages and returns push credit
// (CREDIT) as it installs pushed pages, at most [PushWindow] in flight.
//
// The source reads every page it sends and sends a run of pages that hold
// only zero bytes as one ZERO frame instead of their bytes; the target
// installs them with UFFDIO_ZEROPAGE (ioctl_userfaultfd(2)). A page reads
// as zeros on the target only if the source read it as zeros: lazy pages
// are never guessed. A lazy VMA may be announced whole, before the source
// knows which of its pages exist ([ServerConfig.Absent]): once it has
// scanned them (after the resume) it names the pages the frozen process
// never had in ABSENT frames, never pushes them, and the target answers a
// fault there with a zero page, as the source's kernel would have.
//
// Limits: a PAGES frame, a ZERO frame or a REQUEST covers 1 to [MaxFramePages] pages at a
// page-aligned address inside the lazy runs announced in WELCOME for that
// pid (every run ends at most at [MaxAddr]); WELCOME names 1 to
// [MaxProcesses] pids; push
// frames hold at most [MaxPushBytes]; WELCOME and ACK list at most [MaxRuns]
// runs, sorted and disjoint; IMAGES lists at most [MaxFiles] files with plain
// names (no '/', no "..", at most 64 bytes) and at most [MaxImagesSize] bytes
// in total, sent in CHUNK frames of at most [ChunkSize] bytes; the client
// takes image files only if twice their total fits in its host's
// MemAvailable (they and the process built from them). Every decoder
// checks these bounds and returns an error wrapping [ErrProtocol] (or
// [ErrOutOfRange]) rather than trusting a length.
package pageserver
