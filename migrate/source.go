package migrate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/lazycr/lazycr/dump"
	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/pageserver"
	"github.com/lazycr/lazycr/uffd"
	"github.com/rs/zerolog"
)

// SourceOptions configure the source half.
type SourceOptions struct {
	PID              int
	Dir              string // optional: keep the skeleton here; unacked pages go here if the target is lost
	Listen           string // host:port to serve on
	Listener         net.Listener
	Token            []byte
	TLS              *tls.Config
	ReconnectTimeout time.Duration
	Version          string
	Log              zerolog.Logger
	// Listening is called once the server listens, with its address.
	Listening func(addr net.Addr)
	// ReleaseAddresses removes the sockets' local addresses from this host
	// after DONE (the target took them over).
	ReleaseAddresses bool
}

// SourceResult describes a finished source half.
type SourceResult struct {
	Dump       dump.Stats
	Served     pageserver.Result
	Total      time.Duration
	NetChanges []string // addresses released
}

// processMemory reads the frozen process's memory for the page server.
type processMemory struct{ cp *dump.Checkpoint }

func (m processMemory) ReadAt(b []byte, addr uint64) error { return m.cp.ReadMemory(addr, b) }

// Source freezes opts.PID, serves its image set and lazy pages until the
// target reports DONE, then kills the frozen original. If anything fails
// before the target resumed the process, the original is released and keeps
// running. If the target is lost after it resumed and does not come back in
// time, every page it did not acknowledge is written to opts.Dir first.
func Source(ctx context.Context, opts SourceOptions) (*SourceResult, error) {
	start := time.Now()
	ln := opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", opts.Listen); err != nil {
			return nil, fmt.Errorf("listen on %s: %w", opts.Listen, err)
		}
	}
	defer ln.Close()
	image.Warm() // before the freeze: the encoding would otherwise pay for it
	cp, err := dump.Freeze(ctx, dump.Options{PID: opts.PID, Mode: dump.ModeLazy, Version: opts.Version, Log: opts.Log})
	if err != nil {
		return nil, err
	}
	released := false
	release := func() {
		if released {
			return
		}
		released = true
		if err := cp.Release(); err != nil {
			opts.Log.Error().Err(err).Int("pid", opts.PID).Msg("release process")
		}
	}
	t := time.Now()
	files, err := cp.ImageFiles(opts.Dir)
	if err != nil {
		release()
		return nil, err
	}
	opts.Log.Debug().Dur("took", time.Since(t)).Int("files", len(files)).Msg("skeleton encoded")
	var lazy []uffd.Run
	for _, r := range cp.LazyRuns() {
		lazy = append(lazy, uffd.Run{Addr: r.Addr, Npages: r.Npages})
	}
	st := cp.Stats
	opts.Log.Info().Int("pid", opts.PID).Int("threads", st.Threads).Uint64("lazy_pages", st.PagesLazy).
		Uint64("eager_pages", st.PagesEager).Str("listen", ln.Addr().String()).
		Str("frozen_at", cp.FrozenAt().UTC().Format(time.RFC3339Nano)).Msg("frozen; serving")
	if opts.Listening != nil {
		opts.Listening(ln.Addr())
	}
	srv := pageserver.NewServer(pageserver.ServerConfig{
		Files: files, Lazy: lazy, Memory: processMemory{cp}, Token: opts.Token, TLS: opts.TLS,
		ReconnectTimeout: opts.ReconnectTimeout, Log: opts.Log,
	})
	res, err := srv.Serve(ctx, ln)
	out := &SourceResult{Dump: st, Served: res}
	switch {
	case err == nil:
		if kerr := cp.Kill(); kerr != nil {
			return out, fmt.Errorf("kill the migrated original pid %d: %w", opts.PID, kerr)
		}
		if opts.ReleaseAddresses {
			changes, rerr := releaseAddresses(cp.Set, opts.Log)
			out.NetChanges = changes
			if rerr != nil {
				out.Total = time.Since(start)
				return out, fmt.Errorf("release addresses after the migration: %w", rerr)
			}
		}
	case errors.Is(err, pageserver.ErrGaveUp) || srv.Resumed():
		// The target runs the process now (or may): the original must not
		// run too. Interrupted (Ctrl-C) or given up, keep what the target
		// may still need on disk, then kill the original.
		if opts.Dir != "" {
			// Not in Dir itself: the unacked pages file has an image set's
			// file names and Dir may hold the skeleton.
			dir := filepath.Join(opts.Dir, "unacked")
			werr := os.MkdirAll(dir, 0o700)
			if werr == nil {
				werr = srv.WriteUnacked(dir, uint32(opts.PID))
			}
			if werr != nil {
				err = errors.Join(err, fmt.Errorf("write unacknowledged pages to %s: %w", dir, werr))
			} else {
				err = fmt.Errorf("%w; the pages the target did not acknowledge are in %s", err, dir)
			}
		} else {
			err = fmt.Errorf("%w; no -D directory was given, the pages the target did not acknowledge are lost", err)
		}
		cp.Kill()
	default:
		release()
		err = fmt.Errorf("%w; pid %d released, it keeps running", err, opts.PID)
	}
	out.Total = time.Since(start)
	return out, err
}
