package migrate

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/pageserver"
	"github.com/lazycr/lazycr/proc"
	"github.com/lazycr/lazycr/uffd"
)

// StateFile is the name of the file, in the source's state directory, that
// lets a later `lazycr dump --lazy --adopt PID` serve a session again. It
// holds the session's secret token: it is written 0600 in a 0700 directory.
const StateFile = "lazy-session.json"

// maxStateSize bounds what ReadState reads.
const maxStateSize = 16 << 20

// SessionState is what serving a session again needs, besides the stopped
// process itself: which process (pid and start time, so a reused pid is
// never taken for it), the session id the target reconnects with, its token,
// the address it listened on and the lazy runs announced in WELCOME.
type SessionState struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"` // /proc/PID/stat field 22
	Session   string `json:"session"`    // hex
	Token     string `json:"token,omitempty"`
	Listen    string `json:"listen"`
	Runs      []Run  `json:"runs"` // keyed by process (uffd.SpaceAddr)
	// Pids are the processes served (pids in the image, ascending): the
	// root alone, or a whole tree. Empty in states written before trees
	// were served lazily: the root alone.
	Pids []uint32 `json:"pids,omitempty"`
}

// Run is one lazy run in a SessionState.
type Run struct {
	Addr   uint64 `json:"addr"`
	Npages uint64 `json:"npages"`
}

// DefaultStateDir is where the session state of process pid, started at
// tick start (/proc/PID/stat field 22), goes when dump --lazy has no -D
// directory: /run/lazycr/pid-PID-START. With the start time in the name, a
// process of the same pid in another PID namespace, or a later one reusing
// the pid, never shares it.
func DefaultStateDir(pid int, start uint64) string {
	return filepath.Join(StateRoot, fmt.Sprintf("pid-%d-%d", pid, start))
}

// StateRoot holds the default session state directories (DefaultStateDir).
const StateRoot = "/run/lazycr"

// SweepStates removes the session state directories in root (StateRoot)
// whose process is gone, or whose pid now belongs to another process (its
// start time differs): a session ended by `kill -CONT` or `kill` of the kept
// original leaves its state, and the token in it, behind. The state of a
// live original (same pid, same start time), stopped or not, is never
// touched; nor is anything in root that is not a pid-PID[-START] directory
// of lazycr's, nor a directory holding files other than the state file. It
// returns the directories removed; a missing root is no error.
func SweepStates(root string, log zerolog.Logger) ([]string, error) {
	ents, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sweep session states: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		pid, start, ok := parseStateDirName(e.Name())
		if !ok || !e.IsDir() {
			continue
		}
		dir := filepath.Join(root, e.Name())
		if start == 0 { // pid-PID: the start time is in the state file
			st, err := ReadState(dir)
			if err != nil {
				continue // not a state lazycr can read: left alone
			}
			start = st.StartTime
		}
		stat, err := proc.ReadStat(pid)
		switch {
		case errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH):
		case err != nil:
			continue // cannot tell: keep it
		case stat.StartTime == start:
			continue // the original lives: its state may be adopted
		}
		if err := removeStateDir(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		log.Info().Str("dir", dir).Int("pid", pid).Msg("removed the session state of a process that is gone")
		removed = append(removed, dir)
	}
	return removed, errors.Join(errs...)
}

// sweepStates is SweepStates(StateRoot) for every dump --lazy and --adopt:
// what it cannot remove is only worth a warning.
func sweepStates(log zerolog.Logger) {
	if _, err := SweepStates(StateRoot, log); err != nil {
		log.Warn().Err(err).Msg("sweep stale session states")
	}
}

// parseStateDirName parses "pid-PID-START" (start > 0) or the older
// "pid-PID" (start 0).
func parseStateDirName(name string) (pid int, start uint64, ok bool) {
	rest, found := strings.CutPrefix(name, "pid-")
	if !found {
		return 0, 0, false
	}
	p, st, hasStart := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(p)
	if err != nil || pid <= 0 || strconv.Itoa(pid) != p {
		return 0, 0, false
	}
	if !hasStart {
		return pid, 0, true
	}
	start, err = strconv.ParseUint(st, 10, 64)
	if err != nil || start == 0 || strconv.FormatUint(start, 10) != st {
		return 0, 0, false
	}
	return pid, start, true
}

// removeStateDir removes a stale state directory: its state file and
// leftover temporary files of WriteState, then the directory if that left
// it empty.
func removeStateDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("remove stale session state %s: %w", dir, err)
	}
	for _, e := range ents {
		if e.Name() != StateFile && !strings.HasPrefix(e.Name(), StateFile+".") {
			return fmt.Errorf("remove stale session state %s: it holds %s, which is not lazycr's: left alone", dir, e.Name())
		}
	}
	for _, e := range ents {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale session state: %w", err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale session state: %w", err)
	}
	return nil
}

func newState(pid int, start uint64, session uint64, token []byte, listen string, pids []uint32, runs []uffd.Run) *SessionState {
	st := &SessionState{PID: pid, StartTime: start, Session: strconv.FormatUint(session, 16), Listen: listen, Pids: pids}
	if len(token) > 0 {
		st.Token = hex.EncodeToString(token)
	}
	for _, r := range runs {
		st.Runs = append(st.Runs, Run{Addr: r.Addr, Npages: r.Npages})
	}
	return st
}

// SessionID is the session id as a number.
func (st *SessionState) SessionID() (uint64, error) {
	v, err := strconv.ParseUint(st.Session, 16, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("session %q: want a non-zero hex number", st.Session)
	}
	return v, nil
}

// TokenBytes is the token, hex-decoded.
func (st *SessionState) TokenBytes() ([]byte, error) {
	b, err := hex.DecodeString(st.Token)
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	return b, nil
}

// LazyRuns returns the runs, checked as the page server checks them.
func (st *SessionState) LazyRuns() ([]uffd.Run, error) {
	runs := make([]uffd.Run, 0, len(st.Runs))
	for _, r := range st.Runs {
		runs = append(runs, uffd.Run{Addr: r.Addr, Npages: r.Npages})
	}
	if _, err := pageserver.NewTreeRanges(st.ProcessPids(), runs); err != nil {
		return nil, err
	}
	return runs, nil
}

// ProcessPids are the processes the session serves: Pids, or the root
// alone in an older state.
func (st *SessionState) ProcessPids() []uint32 {
	if len(st.Pids) == 0 {
		return []uint32{uint32(st.PID)}
	}
	return st.Pids
}

// DecodeState parses and checks a state file.
func DecodeState(b []byte) (*SessionState, error) {
	var st SessionState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("decode session state: %w", err)
	}
	if st.PID <= 0 {
		return nil, fmt.Errorf("decode session state: pid %d", st.PID)
	}
	if _, err := st.SessionID(); err != nil {
		return nil, fmt.Errorf("decode session state: %w", err)
	}
	if _, err := st.TokenBytes(); err != nil {
		return nil, fmt.Errorf("decode session state: %w", err)
	}
	if _, err := st.LazyRuns(); err != nil {
		return nil, fmt.Errorf("decode session state: %w", err)
	}
	return &st, nil
}

// WriteState writes st to dir/StateFile (0600; dir is created 0700),
// atomically (a temporary file renamed into place).
func WriteState(dir string, st *SessionState) error {
	b, err := json.MarshalIndent(st, "", " ")
	if err != nil {
		return fmt.Errorf("write session state of pid %d: %w", st.PID, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write session state of pid %d: %w", st.PID, err)
	}
	f, err := os.CreateTemp(dir, StateFile+".*")
	if err != nil { // CreateTemp makes it 0600
		return fmt.Errorf("write session state of pid %d: %w", st.PID, err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, StateFile))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write session state of pid %d in %s: %w", st.PID, dir, err)
	}
	return nil
}

// ReadState reads dir/StateFile.
func ReadState(dir string) (*SessionState, error) {
	name := filepath.Join(dir, StateFile)
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("read session state: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil {
		return nil, fmt.Errorf("read session state %s: %w", name, err)
	}
	if len(b) > maxStateSize {
		return nil, fmt.Errorf("read session state %s: larger than %d bytes", name, maxStateSize)
	}
	st, err := DecodeState(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return st, nil
}
