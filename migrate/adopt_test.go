package migrate

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/lazycr/lazycr/proc"
	"github.com/lazycr/lazycr/uffd"
)

// TestAdoptRefuses: Adopt serves only the stopped process its session
// state names: another pid, or a running process, is refused before
// anything is seized or listened on.
func TestAdoptRefuses(t *testing.T) {
	self := os.Getpid()
	st, err := proc.ReadStat(self)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	runs := []uffd.Run{{Addr: 0x7f0000000000, Npages: 1}}
	if err := WriteState(dir, newState(self, st.StartTime, 0x42, nil, "127.0.0.1:0", nil, runs)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	opts := AdoptOptions{PID: self + 1, StateDir: dir, Log: zerolog.Nop()}
	if _, err := Adopt(ctx, opts); err == nil || !strings.Contains(err.Error(), "is for pid") {
		t.Errorf("adopt another pid: %v, want a refusal naming the session's pid", err)
	}
	opts.PID = self
	if _, err := Adopt(ctx, opts); !errors.Is(err, ErrNotStopped) {
		t.Errorf("adopt a running process: %v, want ErrNotStopped", err)
	}
	if _, err := Adopt(ctx, AdoptOptions{PID: self, StateDir: t.TempDir(), Log: zerolog.Nop()}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("adopt without a state file: %v, want ErrNotExist", err)
	}
}
