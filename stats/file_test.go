package stats

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sample() *File {
	return &File{
		Version: Version, Command: "restore --lazy-from", PID: 42,
		Start:   time.Date(2026, 12, 7, 6, 40, 0, 123456789, time.UTC),
		TotalMS: MS(812500 * time.Microsecond),
		Restore: &Restore{Threads: 2, TotalMS: 9.8, EagerBytes: 69632},
		Lazy: &Lazy{
			FreezeToResumeMS: 31.2, PushPhaseMS: 702.4, PushPhaseBytes: 1 << 30,
			PushPhaseGBPerS: GBPerS(1<<30, 702400*time.Microsecond), PagesPush: 261952,
			Faults: 14, FaultsBy: map[string]uint64{"request": 12, "push": 2}, FaultP50MS: MS(81 * time.Microsecond),
		},
	}
}

func TestCommitAtomic0600(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "stats.json")
	// An older file, readable by all, is replaced whole, and the new one
	// is private.
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Fatalf("before Commit the file reads %q, want the old content", b)
	}
	want := sample()
	if err := w.Commit(want); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	got, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read back\n%+v\nwant\n%+v", got, want)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries after Commit, want only the stats file", len(ents))
	}
	if err := w.Commit(want); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Commit: %v, want os.ErrClosed", err)
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(filepath.Join(dir, "stats.json"))
	if err != nil {
		t.Fatal(err)
	}
	w.Abort()
	w.Abort()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("Abort left %v", ents)
	}
}

func TestCreateRefuses(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{dir, filepath.Join(dir, "missing", "stats.json")} {
		if w, err := Create(p); err == nil {
			w.Abort()
			t.Errorf("Create(%q) succeeded", p)
		} else if !strings.Contains(err.Error(), p) {
			t.Errorf("Create(%q): %v does not name the path", p, err)
		}
	}
}

// TestKeysHaveUnits: every duration field's key ends in _ms, every float
// is either a duration or a throughput: the documented convention.
func TestKeysHaveUnits(t *testing.T) {
	for _, v := range []any{File{}, Dump{}, Serve{}, Restore{}, Lazy{}} {
		ty := reflect.TypeOf(v)
		for i := range ty.NumField() {
			f := ty.Field(i)
			key, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if key == "" {
				t.Errorf("%s.%s has no json key", ty.Name(), f.Name)
			}
			switch {
			case f.Type == reflect.TypeFor[time.Duration]():
				t.Errorf("%s.%s is a time.Duration: use float64 milliseconds (*_ms)", ty.Name(), f.Name)
			case f.Type.Kind() == reflect.Float64 && !strings.HasSuffix(key, "_ms") && !strings.HasSuffix(key, "_gb_per_s"):
				t.Errorf("%s.%s (%q) is a number without its unit in the key", ty.Name(), f.Name, key)
			}
		}
	}
}

func TestDecodeRefuses(t *testing.T) {
	good, _ := json.Marshal(sample())
	for name, in := range map[string]string{
		"unknown field": `{"version":1,"bogus":1}`,
		"version":       `{"version":2}`,
		"trailing":      string(good) + `{}`,
		"not json":      `stats`,
		"too large":     `{"version":1,"command":"` + strings.Repeat("x", MaxSize) + `"}`,
	} {
		if f, err := Decode(strings.NewReader(in)); err == nil || f != nil || !errors.Is(err, ErrSchema) {
			t.Errorf("%s: Decode = %v, %v; want nil and ErrSchema", name, f, err)
		}
	}
	if _, err := Decode(bytes.NewReader(good)); err != nil {
		t.Errorf("Decode of a good file: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	good, _ := json.Marshal(sample())
	f.Add(good)
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"lazy":{"faults_by":{"x":1}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Decode(bytes.NewReader(b))
		if (err == nil) != (got != nil) {
			t.Fatalf("Decode = %v, %v: want exactly one of a file and an error", got, err)
		}
		if err != nil {
			return
		}
		again, err := json.Marshal(got)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := Decode(bytes.NewReader(again))
		if err != nil {
			t.Fatalf("decode the re-encoded %s: %v", again, err)
		}
		twice, err := json.Marshal(back)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(twice, again) {
			t.Fatalf("round trip changed %s into %s", again, twice)
		}
	})
}
