package uffd

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestHandlerTrace records real faults and checks the trace-event JSON:
// one complete event per fault with its address, and the counter track.
func TestHandlerTrace(t *testing.T) {
	const pages = 6
	x := start(t, pages+2, []Run{{Addr: 0, Npages: pages}}, HandlerConfig{Trace: true}, false)
	for k := range 3 {
		x.check(t, k, nil)
	}
	x.check(t, pages, make([]byte, PageSize)) // zero page
	x.src.push(x.addr+3*PageSize, 3)
	if err := x.result(t); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := x.h.WriteTrace(&buf); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		TraceEvents []struct {
			Name string          `json:"name"`
			Ph   string          `json:"ph"`
			Ts   float64         `json:"ts"`
			Dur  float64         `json:"dur"`
			PID  int             `json:"pid"`
			TID  int             `json:"tid"`
			Args json.RawMessage `json:"args"`
		} `json:"traceEvents"`
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("trace is not JSON: %v\n%s", err, buf.String())
	}
	var faults, counters int
	paths := map[string]int{}
	for _, ev := range doc.TraceEvents {
		switch ev.Ph {
		case "X":
			faults++
			var args struct{ Addr, Path string }
			if err := json.Unmarshal(ev.Args, &args); err != nil || !strings.HasPrefix(args.Addr, "0x") {
				t.Errorf("fault event args %s: %v", ev.Args, err)
			}
			paths[args.Path]++
			if ev.TID == 0 || ev.Dur < 0 || ev.Ts <= 0 {
				t.Errorf("fault event %+v", ev)
			}
		case "C":
			counters++
		}
	}
	if faults != 4 || paths["request"] != 3 || paths["zero"] != 1 || counters == 0 {
		t.Errorf("%d fault events %v, %d counter events:\n%s", faults, paths, counters, buf.String())
	}
	tr := x.h.Trace()
	s := Summarize(tr.Faults)
	if s.Faults != 4 || s.NextPage != 0 && s.NextPage > 3 || s.Max < s.P50 {
		t.Errorf("summary %+v", s)
	}
	t.Logf("\n%s", x.h.Stats())
}

func TestSummarize(t *testing.T) {
	var recs []FaultRecord
	for k := range 100 {
		recs = append(recs, FaultRecord{Addr: uint64(0x1000 + k*int(PageSize)), TID: 7, Read: time.Second,
			Done: time.Second + time.Duration(k+1)*time.Microsecond, Path: PathRequest})
	}
	recs = append(recs, FaultRecord{Addr: 0x9000000, TID: 8, Read: 0, Done: 0, Path: PathZero})
	s := Summarize(recs)
	if s.Faults != 101 || s.FaultsBy[PathRequest] != 100 || s.FaultsBy[PathZero] != 1 {
		t.Errorf("counts %+v", s)
	}
	if s.NextPage != 99 {
		t.Errorf("NextPage = %d, want 99", s.NextPage)
	}
	if s.P50 != 50*time.Microsecond || s.Max != 100*time.Microsecond || s.P99 != 99*time.Microsecond {
		t.Errorf("p50 %v p99 %v max %v", s.P50, s.P99, s.Max)
	}
	// [0,1): the zero fault; [1,2): 1; [2,4): 2,3; ... [64,128): 64..100.
	want := []uint64{1, 1, 2, 4, 8, 16, 32, 37}
	if len(s.Histogram) != len(want) {
		t.Fatalf("histogram %+v", s.Histogram)
	}
	for i, b := range s.Histogram {
		if b.Count != want[i] || (i > 0 && b.LowUS != 1<<(i-1)) {
			t.Errorf("bucket %d = %+v, want count %d", i, b, want[i])
		}
	}
	if str := s.String(); !strings.Contains(str, "p50 50µs") || !strings.Contains(str, "request 100") {
		t.Errorf("String:\n%s", str)
	}
	var buf bytes.Buffer
	tr := Trace{PID: 1, Faults: recs, Installed: []CounterSample{{time.Millisecond, 3}}}
	if err := tr.WriteJSON(&buf); err != nil || !json.Valid(buf.Bytes()) {
		t.Errorf("WriteJSON: %v, valid %v", err, json.Valid(buf.Bytes()))
	}
}

// TestSummarizeFewSamples: the percentiles and the max come from one set of
// samples, so with two faults p99 is the larger one (QA2 Q9: p99 was the
// smaller, below the max); with none the summary says so instead of
// printing zero latencies.
func TestSummarizeFewSamples(t *testing.T) {
	recs := []FaultRecord{
		{Addr: 0x1000, TID: 1, Read: 0, Done: 840 * time.Microsecond, Path: PathPush},
		{Addr: 0x5000, TID: 1, Read: 0, Done: 5400 * time.Microsecond, Path: PathRequest},
	}
	s := Summarize(recs)
	if s.P50 != 840*time.Microsecond || s.P90 != s.Max || s.P99 != s.Max || s.Max != 5400*time.Microsecond {
		t.Errorf("two samples: p50 %v p90 %v p99 %v max %v, want p50 840µs and p90 = p99 = max = 5.4ms", s.P50, s.P90, s.P99, s.Max)
	}
	one := Summarize(recs[:1])
	if one.P50 != one.Max || one.P99 != one.Max {
		t.Errorf("one sample: p50 %v p99 %v max %v, want all equal", one.P50, one.P99, one.Max)
	}
	none := Summarize(nil).String()
	if !strings.Contains(none, "latency: no faults\n") || strings.Contains(none, "p50") {
		t.Errorf("no faults:\n%s", none)
	}
}
