package stats

import (
	"time"
)

// Version is the schema version written in File.Version. A field is only
// ever added (with a new key); a change of meaning gets a new key, never a
// new meaning under an old one.
const Version = 1

// File is the one JSON object a command writes to --stats-file. Its
// sections: Dump (dump, dump --lazy), Serve (dump --lazy, the serving
// part), Restore (restore, restore --lazy-from), Lazy (restore
// --lazy-from, the lazy-pages part); `lazycr demo` runs both sides and
// fills all of them, and Demo. A section the command did not reach is
// absent.
type File struct {
	Version int    `json:"version"`
	Command string `json:"command"` // "dump", "dump --lazy", "dump --lazy --adopt", "restore", "restore --lazy-from", "demo"
	// PID is the process: the dumped pid on the source, the restored pid
	// (as it is on this host) on the target; 0 if there was none.
	PID     int       `json:"pid"`
	Start   time.Time `json:"start"`    // when the command started (RFC 3339, this host's clock)
	TotalMS float64   `json:"total_ms"` // the whole command, start to the file being written
	// Error is the command's error message; absent exactly when the
	// command succeeded.
	Error string `json:"error,omitempty"`
	// JobExitStatus is, for restore --shell-job, the exit status of the
	// foreground job restore waited for, when not 0 (lazycr exits with it;
	// the restore itself succeeded).
	JobExitStatus int      `json:"job_exit_status,omitempty"`
	Dump          *Dump    `json:"dump,omitempty"`
	Serve         *Serve   `json:"serve,omitempty"`
	Restore       *Restore `json:"restore,omitempty"`
	Lazy          *Lazy    `json:"lazy,omitempty"`
	Demo          *Demo    `json:"demo,omitempty"`
}

// Dump is what the dump itself did (dump.Stats; `lazycr dump --stats`).
type Dump struct {
	Threads int `json:"threads"`
	VMAs    int `json:"vmas"`
	// PagesPopulated: pages that held data (present or swapped out); of a
	// VMA dump --lazy makes one lazy run without a scan, what smaps counts.
	PagesPopulated uint64 `json:"pages_populated"`
	PagesEager     uint64 `json:"pages_eager"` // in the image (or skeleton)
	// PagesLazy: in the lazy runs the page server serves (dump --lazy),
	// which include the pages the source finds never populated after the
	// resume (serve.absent_pages).
	PagesLazy    uint64  `json:"pages_lazy"`
	PagesZero    uint64  `json:"pages_zero"` // not stored: never populated, only read (the zero page), or read as zeros by a full dump
	PagesFile    uint64  `json:"pages_file"` // unmodified file pages: not stored
	BytesWritten uint64  `json:"bytes_written"`
	FreezeMS     float64 `json:"freeze_ms"` // first PTRACE_SEIZE → every thread stopped
	// FrozenMS is how long the original was stopped: freeze → killed or
	// released (plain dump), freeze → killed after the target's DONE (dump
	// --lazy; 0 if it was not killed). With --lazy it therefore runs
	// through the whole migration, the push phase included, while the
	// process already runs on the target: it is not comparable with a
	// plain dump's. Serve.FreezeToResumeMS is the part the process itself
	// waited.
	FrozenMS float64 `json:"frozen_ms"`
	// TotalMS is the dump proper: the plain dump to its image on disk;
	// with --lazy the freeze, state and skeleton, until it can serve.
	TotalMS float64 `json:"total_ms"`
	// FreezeAttempts is how many freezes the dump took: more than one when
	// a passing state (unread inotify events, connections waiting to be
	// accepted …) was refused and the process ran on briefly in between.
	FreezeAttempts int `json:"freeze_attempts,omitempty"`
	// VMARead is how the VMAs' flags were read while frozen: "bpf"
	// (/proc/PID/maps and a BPF task_vma iterator, no page table walked)
	// or "smaps" (/proc/PID/smaps, which walks every page table: the BPF
	// path was not available or not verified; the debug log says why).
	// VMAReadMS is how long that read took (while frozen);
	// VMAPrepareMS how long the read before the freeze took, which checks
	// the iterator's bit names against smaps while the process still runs
	// (not frozen time).
	VMARead      string  `json:"vma_read,omitempty"`
	VMAReadMS    float64 `json:"vma_read_ms,omitempty"`
	VMAPrepareMS float64 `json:"vma_prepare_ms,omitempty"`
}

// Serve is the source of a lazy migration (dump --lazy): what the page
// server sent, on the source's clock. For an adopted session (dump --lazy
// --adopt) the freeze and RESUMED were another run's: FrozenAt,
// FreezeToResumeMS and the push phase are zero.
type Serve struct {
	// FrozenAt is when the process was frozen (this host's clock), to
	// line up with what the process or its peers logged.
	FrozenAt time.Time `json:"frozen_at,omitzero"`
	// FreezeToResumeMS: freeze → the target's RESUMED arrived here.
	FreezeToResumeMS float64 `json:"freeze_to_resume_ms"`
	// PushPhaseMS: RESUMED arrived → DONE arrived, the phase in which
	// lazy pages move; PushPhaseBytes is every lazy byte sent (requests
	// and push); PushPhaseGBPerS their ratio (GB = 1e9 bytes).
	PushPhaseMS     float64 `json:"push_phase_ms"`
	PushPhaseBytes  uint64  `json:"push_phase_bytes"`
	PushPhaseGBPerS float64 `json:"push_phase_gb_per_s"`
	// Pages sent in answer to the target's requests (faults) and by the
	// background push, with their bytes; ZeroPages of them read as all
	// zero bytes and went without their bytes (a ZERO frame).
	RequestPages uint64 `json:"request_pages"`
	RequestBytes uint64 `json:"request_bytes"`
	PushPages    uint64 `json:"push_pages"`
	PushBytes    uint64 `json:"push_bytes"`
	ZeroPages    uint64 `json:"zero_pages"`
	// AbsentPages: lazy pages the source found it never had (after the
	// resume): never read or sent, named to the target as absent.
	AbsentPages uint64  `json:"absent_pages"`
	Requests    uint64  `json:"requests"`    // requests answered
	Refused     uint64  `json:"refused"`     // requests refused (outside the lazy runs)
	AckedPages  uint64  `json:"acked_pages"` // lazy pages the target acknowledged
	Reconnects  int     `json:"reconnects"`
	ServingMS   float64 `json:"serving_ms"` // the page server's whole run
	Done        bool    `json:"done"`       // the target reported DONE
}

// Restore is the build of the process (restore.Stats; `lazycr restore
// --stats`), phase by phase.
type Restore struct {
	Threads        int     `json:"threads"` // threads of the restored process
	LoadMS         float64 `json:"load_ms"`
	StubStartMS    float64 `json:"stub_start_ms"`
	AddressSpaceMS float64 `json:"address_space_ms"`
	PagesMS        float64 `json:"pages_ms"`
	StateMS        float64 `json:"state_ms"` // mm, signals, limits, timers
	CredsMS        float64 `json:"creds_ms"`
	UffdMS         float64 `json:"uffd_ms"`
	FdsMS          float64 `json:"fds_ms"`
	ThreadsMS      float64 `json:"threads_ms"`
	ResumeMS       float64 `json:"resume_ms"`
	TotalMS        float64 `json:"total_ms"`
	EagerBytes     uint64  `json:"eager_bytes"`
}

// Lazy is the target of a lazy migration (restore --lazy-from): the
// lazy-pages handler's counters, on the target's clock.
type Lazy struct {
	// FreezeToResumeMS: the source's freeze (its clock, from the image) →
	// the resume here (this clock): exact only if both clocks agree.
	FreezeToResumeMS float64 `json:"freeze_to_resume_ms"`
	FetchMS          float64 `json:"fetch_ms"` // dial and fetch the image set
	// PushPhaseMS: the source may send pages (RESUMED_OK) → the last lazy
	// page installed; dial, fetch and build are not in it. PushPhaseBytes
	// is every byte installed with UFFDIO_COPY meanwhile (faults and
	// push), PushPhaseGBPerS their ratio (GB = 1e9 bytes).
	PushPhaseMS     float64 `json:"push_phase_ms"`
	PushPhaseBytes  uint64  `json:"push_phase_bytes"`
	PushPhaseGBPerS float64 `json:"push_phase_gb_per_s"`
	// Pages installed, by how they came.
	PagesFault       uint64 `json:"pages_fault"`        // requested by a fault, which waited for them
	PagesFaultAround uint64 `json:"pages_fault_around"` // neighbours of a fault, or in flight when it came
	PagesPush        uint64 `json:"pages_push"`         // the background push
	// PagesSourceZero: of the three above, the pages the source read as
	// all zero bytes, installed with UFFDIO_ZEROPAGE (no bytes moved).
	PagesSourceZero uint64 `json:"pages_source_zero"`
	// PagesAbsent: lazy pages the source said it never had: not
	// installed, a fault there gets a zero page (per process).
	PagesAbsent uint64 `json:"pages_absent"`
	PagesZero   uint64 `json:"pages_zero"` // faults on pages that were never lazy or were dropped: zero, no request
	// Faults read from the uffds, and by how each was served: keys
	// "request", "fault-around", "push", "present", "zero", "aborted"
	// (only those that occurred).
	Faults   uint64            `json:"faults"`
	FaultsBy map[string]uint64 `json:"faults_by,omitempty"`
	// Fault latency measured by the handler: uffd read → page installed.
	// The four come from one set of samples: every fault of Faults except
	// the "aborted" ones. The percentiles are nearest-rank (the smallest
	// sample with at least p% of the samples at or below it), so with
	// fewer than 100 samples p99 is the max; all 0 when there were none.
	FaultP50MS float64 `json:"fault_p50_ms"`
	FaultP90MS float64 `json:"fault_p90_ms"`
	FaultP99MS float64 `json:"fault_p99_ms"`
	FaultMaxMS float64 `json:"fault_max_ms"`
	Requests   uint64  `json:"requests"`   // requests the handler sent to the source
	Reconnects int     `json:"reconnects"` // to the page server
	// Trouble: all 0 in a clean run.
	Poisoned uint64 `json:"poisoned"` // pages poisoned when the source failed
	Lost     uint64 `json:"lost"`     // pages that could not be installed
	// Duplicates: pages that arrived when nothing needed them any more.
	// Not trouble: a fault's request and the background push cross on
	// the wire (the push installs the page, the fault counts in faults_by
	// "push", then the request's answer arrives for nothing), so a clean
	// run has up to about as many as faults_by "push" (328 with 329 such
	// faults in a 64 MiB run that writes while it migrates); each page is
	// installed once either way.
	Duplicates uint64 `json:"duplicates"`
	// Retries (copies retried after EAGAIN: the address space changed
	// under the copy) and ExistWakes (UFFDIO_COPY found the page already
	// there and woke the waiter instead) are the kernel's normal answers
	// to races with the running process, not errors.
	Retries    uint64 `json:"retries"`
	ExistWakes uint64 `json:"exist_wakes"`
	// RemovedLazy: lazy pages the process dropped (MADV_DONTNEED, munmap,
	// mremap) before they arrived.
	RemovedLazy uint64 `json:"removed_lazy"`
}

// Demo is what `lazycr demo` saw besides the two lazycr runs: the UDP
// client's own counters and the server's log.
type Demo struct {
	// FreezeToFirstPongMS: the source's freeze → the first pong the
	// migrated client printed on the target (one clock: the hosts are
	// network namespaces of this machine).
	FreezeToFirstPongMS float64 `json:"freeze_to_first_pong_ms"`
	Sent                uint64  `json:"sent"` // the client's counters at the end
	Received            uint64  `json:"received"`
	Lost                uint64  `json:"lost"`
	Duplicated          uint64  `json:"duplicated"`
	Reordered           uint64  `json:"reordered"`
	ServerPings         int     `json:"server_pings"` // pings the server received
}

// MS converts d to the milliseconds of a *_ms field (nanosecond
// resolution kept as the fraction).
func MS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// GBPerS is bytes over d in GB/s (1e9 bytes), 0 if d is not positive.
func GBPerS(bytes uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / d.Seconds() / 1e9
}
