package uffd

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"strings"
	"time"
)

// Path says how a fault (or a page) was served.
type Path uint8

// The ways a fault is served.
const (
	// PathRequest: the fault sent a request for its page and waited for
	// the reply.
	PathRequest Path = iota
	// PathFaultAround: the page was already in flight, asked for by a
	// neighbouring fault's fault-around window or another thread's fault.
	PathFaultAround
	// PathPush: the page arrived from the background push (before or
	// after the fault was read).
	PathPush
	// PathPresent: the page was already installed when the fault was read
	// (a push won the race); only a UFFDIO_WAKE was needed.
	PathPresent
	// PathZero: the page is not lazy (never populated at dump time) or was
	// dropped by the process; answered locally with UFFDIO_ZEROPAGE.
	PathZero
	// PathAborted: the thread was woken without data because its range
	// was unmapped or moved while it waited, or the handler stopped
	// (the page was poisoned).
	PathAborted

	numPaths
)

var pathNames = [numPaths]string{"request", "fault-around", "push", "present", "zero", "aborted"}

func (p Path) String() string {
	if p < numPaths {
		return pathNames[p]
	}
	return fmt.Sprintf("path(%d)", uint8(p))
}

// FaultRecord is the life of one page fault. Times are offsets from the
// trace start (Trace.Start); Requested and Replied are zero when no request
// was made or no reply was involved.
type FaultRecord struct {
	Addr      uint64        // faulting page, address in the process
	DumpAddr  uint64        // the same page at dump time (0 if not lazy)
	PID       int           // process (member) the fault came from, if known
	TID       int           // faulting thread (UFFD_FEATURE_THREAD_ID), else 0
	Read      time.Duration // fault message read from the uffd
	Requested time.Duration // request sent to the source
	Replied   time.Duration // page data received from the source
	Done      time.Duration // page installed (copy, zero page or wake done)
	Bytes     int           // bytes installed with the faulting page's copy
	Path      Path
}

// Latency is the time the faulting thread waited in the handler: from the
// fault being read to the page being installed.
func (r FaultRecord) Latency() time.Duration { return r.Done - r.Read }

// CounterSample is one point of the pages-installed counter.
type CounterSample struct {
	At    time.Duration
	Pages uint64
}

// Trace is what a Handler recorded with HandlerConfig.Trace set.
type Trace struct {
	Start     time.Time
	PID       int
	Faults    []FaultRecord
	Installed []CounterSample // pages installed (all paths) over time
}

// traceEvent is one Chrome trace-event ("Trace Event Format", the JSON
// that ui.perfetto.dev and chrome://tracing open).
type traceEvent struct {
	Name string         `json:"name"`
	Cat  string         `json:"cat,omitempty"`
	Ph   string         `json:"ph"`
	Ts   float64        `json:"ts"`            // µs
	Dur  *float64       `json:"dur,omitempty"` // µs, complete events
	PID  int            `json:"pid"`
	TID  int            `json:"tid"`
	Args map[string]any `json:"args,omitempty"`
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// WriteJSON writes t as Chrome/Perfetto trace-event JSON: one complete
// event ("ph":"X") per fault on its thread's track, named after its path,
// with the addresses and phase times in args, and a counter track ("ph":"C")
// of the pages installed.
func (t *Trace) WriteJSON(w io.Writer) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	if _, err := bw.WriteString("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n"); err != nil {
		return fmt.Errorf("write trace: %w", err)
	}
	first := true
	emit := func(ev traceEvent) error {
		if !first {
			if _, err := bw.WriteString(","); err != nil {
				return err
			}
		}
		first = false
		return enc.Encode(ev) // Encode ends each event with a newline
	}
	pid := t.PID
	meta := traceEvent{Name: "process_name", Ph: "M", PID: pid, Args: map[string]any{"name": fmt.Sprintf("lazy pages pid %d", pid)}}
	if err := emit(meta); err != nil {
		return fmt.Errorf("write trace: %w", err)
	}
	for _, r := range t.Faults {
		dur := max(micros(r.Latency()), 0)
		p := r.PID
		if p == 0 {
			p = pid
		}
		args := map[string]any{
			"addr":  fmt.Sprintf("%#x", r.Addr),
			"bytes": r.Bytes,
			"path":  r.Path.String(),
		}
		if r.DumpAddr != 0 {
			args["dump_addr"] = fmt.Sprintf("%#x", r.DumpAddr)
		}
		if r.Requested != 0 {
			args["request_us"] = micros(r.Requested - r.Read)
		}
		if r.Replied != 0 {
			args["reply_us"] = micros(r.Replied - r.Read)
		}
		ev := traceEvent{Name: "fault " + r.Path.String(), Cat: "fault", Ph: "X", Ts: micros(r.Read), Dur: &dur, PID: p, TID: r.TID, Args: args}
		if err := emit(ev); err != nil {
			return fmt.Errorf("write trace: %w", err)
		}
	}
	for _, s := range t.Installed {
		ev := traceEvent{Name: "pages installed", Ph: "C", Ts: micros(s.At), PID: pid, Args: map[string]any{"pages": s.Pages}}
		if err := emit(ev); err != nil {
			return fmt.Errorf("write trace: %w", err)
		}
	}
	if _, err := bw.WriteString("]}\n"); err != nil {
		return fmt.Errorf("write trace: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write trace: %w", err)
	}
	return nil
}

// Summary summarises the faults and pages a Handler served.
type Summary struct {
	Faults      uint64            // faults read from the uffds
	FaultsBy    [numPaths]uint64  // faults by how they were served
	Pages       PageCounts        // pages installed by path
	Bytes       uint64            // bytes installed with UFFDIO_COPY
	P50, P90    time.Duration     // fault latency (read → installed)
	P99, Max    time.Duration     //
	Histogram   []HistogramBucket // log2 buckets of fault latency in µs
	NextPage    uint64            // faults on the page after the same thread's previous fault
	Requests    uint64            // requests sent to the source
	Poisoned    uint64            // pages poisoned when the source failed
	Lost        uint64            // pages that could not be installed
	Duplicates  uint64            // pages that arrived when no member needed them
	Retries     uint64            // copies retried after EAGAIN
	ExistWakes  uint64            // EEXIST answered with a wake
	RemovedLazy uint64            // lazy pages dropped by REMOVE/UNMAP/REMAP before they arrived
}

// PageCounts counts installed pages by how they got there.
type PageCounts struct {
	Fault       uint64 // requested by a fault, which waited on them
	FaultAround uint64 // requested as a neighbour of a fault, or waited on while in flight
	Push        uint64 // sent by the background push
	Zero        uint64 // zero pages (faults on non-lazy or dropped pages)
	// SourceZero: of Fault, FaultAround and Push, the pages the source
	// read as all zero bytes and sent without their bytes, installed
	// with UFFDIO_ZEROPAGE.
	SourceZero uint64
	// Absent: lazy pages the source never had (PageData.Absent), not
	// installed and needed no more, counted once per process.
	Absent uint64
}

// HistogramBucket counts faults with latency in [LowUS, 2*LowUS) µs (the
// first bucket is [0, 1) µs).
type HistogramBucket struct {
	LowUS uint64
	Count uint64
}

// Summarize computes the latency part of a Summary (P50..Max, Histogram,
// Faults, FaultsBy, NextPage) from fault records.
func Summarize(records []FaultRecord) Summary {
	var s Summary
	lat := make([]time.Duration, 0, len(records))
	for _, r := range records {
		lat = append(lat, r.Latency())
		s.FaultsBy[r.Path]++
	}
	s.Faults = uint64(len(records))
	s.NextPage = countNextPage(records)
	s.setLatency(lat)
	return s
}

func countNextPage(records []FaultRecord) uint64 {
	last := map[int]uint64{}
	var n uint64
	for _, r := range records {
		if prev, ok := last[r.TID]; ok && r.Addr == prev+PageSize {
			n++
		}
		last[r.TID] = r.Addr
	}
	return n
}

// setLatency fills the percentiles and histogram from lat (sorted in place).
func (s *Summary) setLatency(lat []time.Duration) {
	s.P50, s.P90, s.P99, s.Max, s.Histogram = 0, 0, 0, 0, nil
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	// Nearest rank: the smallest sample with at least p% of the samples
	// at or below it, so p99 of two samples is the larger (the max).
	pct := func(p int) time.Duration { return lat[(len(lat)*p+99)/100-1] }
	s.P50, s.P90, s.P99, s.Max = pct(50), pct(90), pct(99), lat[len(lat)-1]
	var counts [64]uint64
	top := 0
	for _, d := range lat {
		b := bucket(d)
		counts[b]++
		top = max(top, b)
	}
	for b := 0; b <= top; b++ {
		low := uint64(0)
		if b > 0 {
			low = 1 << (b - 1)
		}
		s.Histogram = append(s.Histogram, HistogramBucket{LowUS: low, Count: counts[b]})
	}
}

// bucket is 0 for [0,1) µs, b for [2^(b-1), 2^b) µs.
func bucket(d time.Duration) int {
	us := uint64(max(d, 0) / time.Microsecond)
	return bits.Len64(us)
}

// String renders s for humans, e.g. for `lazycr restore --trace`.
func (s Summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "faults %d (", s.Faults)
	sep := ""
	for p := Path(0); p < numPaths; p++ {
		if s.FaultsBy[p] != 0 {
			fmt.Fprintf(&b, "%s%s %d", sep, p, s.FaultsBy[p])
			sep = ", "
		}
	}
	fmt.Fprintf(&b, "), next-page faults %d\n", s.NextPage)
	if len(s.Histogram) == 0 {
		// No latency sample: no fault, or only aborted ones.
		b.WriteString("latency: no faults\n")
	} else {
		fmt.Fprintf(&b, "latency p50 %v p90 %v p99 %v max %v\n", s.P50, s.P90, s.P99, s.Max)
	}
	fmt.Fprintf(&b, "pages: fault %d, fault-around %d, push %d, zero %d; zero-filled at the source %d; never populated at the source %d; %d bytes copied; %d requests\n",
		s.Pages.Fault, s.Pages.FaultAround, s.Pages.Push, s.Pages.Zero, s.Pages.SourceZero, s.Pages.Absent, s.Bytes, s.Requests)
	if s.Lost != 0 || s.Poisoned != 0 {
		fmt.Fprintf(&b, "LOST %d pages (%d poisoned)\n", s.Lost, s.Poisoned)
	}
	var peak uint64
	for _, h := range s.Histogram {
		peak = max(peak, h.Count)
	}
	for i, h := range s.Histogram {
		hi := "1"
		if i > 0 {
			hi = fmt.Sprint(h.LowUS * 2)
		}
		bar := 0
		if peak > 0 {
			bar = int(h.Count * 40 / peak)
		}
		fmt.Fprintf(&b, "%7d-%-7s µs %8d %s\n", h.LowUS, hi, h.Count, strings.Repeat("#", bar))
	}
	return b.String()
}
