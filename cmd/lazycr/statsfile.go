package main

import (
	"errors"
	"time"

	"github.com/lazycr/lazycr/demo"
	"github.com/lazycr/lazycr/dump"
	"github.com/lazycr/lazycr/migrate"
	"github.com/lazycr/lazycr/pageserver"
	"github.com/lazycr/lazycr/restore"
	"github.com/lazycr/lazycr/stats"
	"github.com/lazycr/lazycr/uffd"

	"github.com/spf13/pflag"
)

// registerStatsFile adds --stats-file; key is one of the command's own
// keys, for the help's example of a unit in a key.
func registerStatsFile(f *pflag.FlagSet, path *string, key string) {
	f.StringVar(path, "stats-file", "", "write the run's statistics to this file as one JSON object when the command ends, also on failure (with \"error\"); "+
		"durations in milliseconds with the unit in the key (\""+key+"\"), sizes in bytes or pages, throughput in GB/s; mode 0600, replaced atomically")
}

// statsRecorder collects a command's stats.File and writes it at the end.
// A nil *statsRecorder (no --stats-file) does nothing.
type statsRecorder struct {
	w     *stats.Writer
	f     stats.File
	start time.Time
}

// openStats starts the stats file at path for command (nothing if path is
// empty): the temporary file is made now, so an unwritable path fails
// before anything is frozen or built.
func openStats(path, command string) (*statsRecorder, error) {
	if path == "" {
		return nil, nil
	}
	w, err := stats.Create(path)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return &statsRecorder{w: w, start: now, f: stats.File{Version: stats.Version, Command: command, Start: now}}, nil
}

// finish writes the file with err (the command's result) and returns err,
// joined with the write error if the file could not be written.
func (r *statsRecorder) finish(err error) error {
	if r == nil {
		return err
	}
	var code exitCodeError
	switch {
	case errors.As(err, &code):
		r.f.JobExitStatus = int(code)
	case err != nil:
		r.f.Error = err.Error()
	}
	r.f.TotalMS = stats.MS(time.Since(r.start))
	if werr := r.w.Commit(&r.f); werr != nil {
		if err == nil {
			return werr
		}
		return errors.Join(err, werr)
	}
	return err
}

func (r *statsRecorder) setPID(pid int) {
	if r != nil {
		r.f.PID = pid
	}
}

func (r *statsRecorder) dump(st *dump.Stats) {
	if r == nil || st == nil {
		return
	}
	r.f.Dump = &stats.Dump{
		Threads: st.Threads, VMAs: st.VMAs, PagesPopulated: st.PagesPopulated, PagesEager: st.PagesEager,
		PagesLazy: st.PagesLazy, PagesZero: st.PagesZero, PagesFile: st.PagesFile, BytesWritten: st.BytesWritten,
		FreezeMS: stats.MS(st.Freeze), FrozenMS: stats.MS(st.Frozen), TotalMS: stats.MS(st.Total),
		FreezeAttempts: st.FreezeAttempts, VMARead: st.VMARead, VMAReadMS: stats.MS(st.VMAReadTime),
		VMAPrepareMS: stats.MS(st.VMAPrepareTime),
	}
}

// serve records the page server's side of a lazy migration (adopted: no
// freeze and no RESUMED in this run).
func (r *statsRecorder) serve(s pageserver.Result, frozenAt time.Time, freezeToResume, pushPhase time.Duration) {
	if r == nil {
		return
	}
	phaseBytes := s.RequestBytes + s.PushBytes
	r.f.Serve = &stats.Serve{
		FrozenAt: frozenAt, FreezeToResumeMS: stats.MS(freezeToResume),
		PushPhaseMS: stats.MS(pushPhase), PushPhaseBytes: phaseBytes, PushPhaseGBPerS: stats.GBPerS(phaseBytes, pushPhase),
		RequestPages: s.RequestPages, RequestBytes: s.RequestBytes, PushPages: s.PushPages, PushBytes: s.PushBytes, ZeroPages: s.ZeroPages, AbsentPages: s.AbsentPages,
		Requests: s.Requests, Refused: s.Refused, AckedPages: s.AckedPages, Reconnects: s.Reconnects,
		ServingMS: stats.MS(s.Duration), Done: s.Done,
	}
}

func (r *statsRecorder) source(res *migrate.SourceResult) {
	if r == nil || res == nil {
		return
	}
	r.dump(&res.Dump)
	r.serve(res.Served, res.FrozenAt, res.FreezeToResume, res.PushPhase)
}

func (r *statsRecorder) restore(st *restore.Stats, threads int) {
	if r == nil || st == nil {
		return
	}
	r.f.Restore = &stats.Restore{
		Threads: threads, LoadMS: stats.MS(st.Load), StubStartMS: stats.MS(st.StubStart),
		AddressSpaceMS: stats.MS(st.AddressSpace), PagesMS: stats.MS(st.Pages), StateMS: stats.MS(st.State),
		CredsMS: stats.MS(st.Creds), UffdMS: stats.MS(st.Uffd), FdsMS: stats.MS(st.Fds), ThreadsMS: stats.MS(st.Threads),
		ResumeMS: stats.MS(st.Resume), TotalMS: stats.MS(st.Total), EagerBytes: st.EagerBytes,
	}
}

// target records a lazy restore; only what it reached: a process that
// never resumed (FreezeToResume is set at the resume) has no restore or
// lazy section.
func (r *statsRecorder) target(res *migrate.TargetResult) {
	if r == nil || res == nil || res.FreezeToResume == 0 {
		return
	}
	r.setPID(res.PID)
	r.restore(&res.Restore, res.Threads)
	h := res.Handler
	var by map[string]uint64
	for p, n := range h.FaultsBy {
		if n != 0 {
			if by == nil {
				by = map[string]uint64{}
			}
			by[uffd.Path(p).String()] = n
		}
	}
	r.f.Lazy = &stats.Lazy{
		FreezeToResumeMS: stats.MS(res.FreezeToResume), FetchMS: stats.MS(res.Fetch),
		PushPhaseMS: stats.MS(res.PushPhase), PushPhaseBytes: h.Bytes, PushPhaseGBPerS: stats.GBPerS(h.Bytes, res.PushPhase),
		PagesFault: h.Pages.Fault, PagesFaultAround: h.Pages.FaultAround, PagesPush: h.Pages.Push,
		PagesSourceZero: h.Pages.SourceZero, PagesAbsent: h.Pages.Absent, PagesZero: h.Pages.Zero,
		Faults: h.Faults, FaultsBy: by,
		FaultP50MS: stats.MS(h.P50), FaultP90MS: stats.MS(h.P90), FaultP99MS: stats.MS(h.P99), FaultMaxMS: stats.MS(h.Max),
		Requests: h.Requests, Reconnects: res.Client.Reconnects,
		Poisoned: h.Poisoned, Lost: h.Lost, Duplicates: h.Duplicates, Retries: h.Retries, ExistWakes: h.ExistWakes,
		RemovedLazy: h.RemovedLazy,
	}
}

// demo records a demo run: the source's dump and serve sections, the
// target's restore and lazy sections (from their own stats files) and
// what the client and server reported, as far as the run got.
func (r *statsRecorder) demo(res *demo.Result) {
	if r == nil || res == nil {
		return
	}
	if s := res.SourceStats; s != nil {
		r.f.Dump, r.f.Serve = s.Dump, s.Serve
	}
	if t := res.TargetStats; t != nil {
		r.f.Restore, r.f.Lazy = t.Restore, t.Lazy
	}
	r.setPID(res.TargetPID)
	if res.Client.Sent == 0 && len(res.Server) == 0 {
		return
	}
	c := res.Client
	r.f.Demo = &stats.Demo{
		FreezeToFirstPongMS: stats.MS(res.FreezeToPong), Sent: c.Sent, Received: c.Received, Lost: c.Lost,
		Duplicated: c.Duplicated, Reordered: c.Reordered, ServerPings: len(res.Server),
	}
}
