package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/lazycr/lazycr/stats"
)

// TestStatsRecorderFinish: the command's error goes into "error" and comes
// back unchanged; a --shell-job's exit status is not an error of lazycr's;
// without --stats-file nothing happens.
func TestStatsRecorderFinish(t *testing.T) {
	dir := t.TempDir()
	failed := fmt.Errorf("restore pid 7: %w", errors.New("boom"))
	for _, tc := range []struct {
		name      string
		err       error
		wantError string
		wantJob   int
	}{
		{"ok", nil, "", 0},
		{"failed", failed, "restore pid 7: boom", 0},
		{"job exit", exitCodeError(5), "", 5},
	} {
		path := filepath.Join(dir, tc.name+".json")
		rec, err := openStats(path, "restore")
		if err != nil {
			t.Fatal(err)
		}
		rec.setPID(42)
		if got := rec.finish(tc.err); got != tc.err {
			t.Errorf("%s: finish returned %v, want %v", tc.name, got, tc.err)
		}
		f, err := stats.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if f.Error != tc.wantError || f.JobExitStatus != tc.wantJob || f.PID != 42 || f.Command != "restore" || f.TotalMS <= 0 {
			t.Errorf("%s: wrote %+v, want error %q, job exit status %d", tc.name, f, tc.wantError, tc.wantJob)
		}
	}
	var none *statsRecorder
	if rec, err := openStats("", "dump"); rec != none || err != nil {
		t.Errorf("openStats without a path = %v, %v", rec, err)
	}
	if got := none.finish(failed); got != failed {
		t.Errorf("nil recorder: finish returned %v", got)
	}
}
